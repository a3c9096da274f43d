"""Progress for long CLI jobs: a tqdm bar on stderr when it is a terminal; otherwise (a log file,
a pipe, CI) INFO log lines "DESC: i/n UNIT done (s)", every `log_every` seconds (0: every item)."""
from __future__ import annotations

import logging
import time
from typing import Iterable, Iterator, Optional, TypeVar

from tqdm import tqdm

T = TypeVar("T")
log = logging.getLogger(__name__)


def progress(it: Iterable[T], desc: str = "", total: Optional[int] = None, unit: str = "it",
             log_every: Optional[float] = 30.0) -> Iterable[T]:
    """`it` with a progress bar, or with log lines off a terminal (`log_every` None: silent there)."""
    shown = tqdm(it, desc=desc, total=total, unit=unit, disable=None, dynamic_ncols=True, leave=False)
    if not shown.disable or log_every is None:
        return shown
    if total is None and hasattr(it, "__len__"):
        total = len(it)  # type: ignore[arg-type]
    return _logged(it, desc, total, unit, log_every)


def _logged(it: Iterable[T], desc: str, total: Optional[int], unit: str, every: float) -> Iterator[T]:
    t0 = last = time.monotonic()
    n = 0
    for item in it:
        n += 1
        now = time.monotonic()
        if now - last >= every or n == total:
            log.info("%s: %d%s %s done (%.0f s)", desc or "progress", n, f"/{total}" if total else "", unit, now - t0)
            last = now
        yield item


def bar(desc: str = "", total: Optional[int] = None, unit: str = "it") -> tqdm:
    """A progress bar updated by hand (bar.update(1)); silent when stderr is not a terminal."""
    return tqdm(desc=desc, total=total, unit=unit, disable=None, dynamic_ncols=True, leave=False)
