"""Errors that the CLI reports as one line (no traceback)."""
from typing import Optional

from calib.errors import CalibrationError


class Tracker3DError(RuntimeError):
    """A user-facing failure of the application layer (bad option, bad input)."""


class RunFailure(Tracker3DError):
    """A failure during a run that is not the input's (a detector process killed): one line and
    exit status 1, as a failed write; what was written before it is readable. processed: the
    pairs the loop had finished before it, stats: the run's RunStats up to it (both set by
    pipeline.run; None elsewhere)."""

    processed: Optional[int] = None
    stats: Optional[object] = None


#: Every exception type the CLI turns into a one-line message.
USER_ERRORS: tuple[type[BaseException], ...] = (CalibrationError, Tracker3DError)


def register_user_error(exc_type: type[BaseException]) -> None:
    """Let a package's error type be reported as one line by the CLI."""
    global USER_ERRORS
    if exc_type not in USER_ERRORS:
        USER_ERRORS = USER_ERRORS + (exc_type,)
