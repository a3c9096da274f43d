"""Errors raised by the streams package."""


class StreamError(RuntimeError):
    """A source, recording or socket cannot be used; the message is one line naming what and why."""


class SchemaError(ValueError):
    """A published message does not follow the tracks3d schema; the message names the field."""
