"""Log notes said once per command, for commands that run the loop many times (bench)."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

PASS_ALWAYS = ("tracker3d.progress",)  # progress lines repeat on purpose


class SaidOnce(logging.Filter):
    """Lets each (logger, level, message) through once: a note every run of the loop makes (the
    learned gate's frame-rate fallback, the device it picked) is said once, not once a run."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[tuple[str, int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(PASS_ALWAYS):
            return True
        key = (record.name, record.levelno, record.getMessage())
        if key in self._seen:
            return False
        self._seen.add(key)
        return True


@contextmanager
def notes_said_once() -> Iterator[None]:
    """Within the block, each of the root logger's handlers says each note once (a filter of its
    own each: one shared would let the first handler take the note from the others)."""
    added = [(h, SaidOnce()) for h in logging.getLogger().handlers]
    for h, f in added:
        h.addFilter(f)
    try:
        yield
    finally:
        for h, f in added:
            h.removeFilter(f)
