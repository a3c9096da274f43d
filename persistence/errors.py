"""Errors of the persistence package (importable without torch)."""


class HistoryError(ValueError):
    """A history array that cannot be scored; the message says what is wrong."""


class WeightsError(ValueError):
    """A weights file or model card that cannot be used; the message names the file."""
