"""Errors raised by the calib package."""


class CalibrationError(ValueError):
    """A calibration file or calibration input is unusable.

    The message is one line that names the file and the field and says what was expected.
    """
