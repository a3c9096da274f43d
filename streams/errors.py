"""Errors raised by the streams package."""


class StreamError(RuntimeError):
    """A source, recording or socket cannot be used; the message is one line naming what and why."""


class SchemaError(ValueError):
    """A published message does not follow the tracks3d schema; the message names the field."""


class OutputError(StreamError):
    """Writing an output failed during a run (disk full, I/O error); the message says how much of it
    is readable. The CLI reports it in one line with exit status 1."""
