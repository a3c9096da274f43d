"""Shared behaviour of sources and sockets: context management and iteration over read()."""
from __future__ import annotations

import logging
import time
from typing import Generic, Iterator, Optional, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class Closeable:
    """`with obj:` closes it on exit."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Readable(Closeable, Generic[T]):
    """Iterating yields read() results until read() returns None (the end)."""

    def read(self, timeout: Optional[float] = None) -> Optional[T]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self.read()
            if item is None:
                return
            yield item


class Pacer:
    """Sleeps so that items come out at their recorded times (real-time replay). A gap longer
    than `max_sleep` seconds (a time jump in the recording) is not slept: it is logged once per
    jump and the pacing starts again from the next item."""

    def __init__(self, max_sleep: float = 2.0) -> None:
        self._origin: Optional[tuple[float, float]] = None
        self.max_sleep = max_sleep
        self.jumps = 0

    def wait(self, t: float) -> None:
        now = time.monotonic()
        if self._origin is None:
            self._origin = (now, t)
            return
        delay = (t - self._origin[1]) - (now - self._origin[0])
        if delay > self.max_sleep:
            log.warning("real-time replay: the next item is %.1f s ahead (a time jump): not waiting for it", delay)
            self.jumps += 1
            self._origin = (now, t)
            return
        if delay > 0:
            time.sleep(delay)


class LatestSlot(Generic[T]):
    """The newest item from a producer thread. take() waits for an item not taken yet; an item
    replaced before anyone took it is counted in `overwritten` (a slow consumer never queues)."""

    def __init__(self) -> None:
        import threading

        self._cond = threading.Condition()
        self._item: Optional[T] = None
        self._put = 0
        self._taken = 0
        self._closed = False
        self._error: Optional[BaseException] = None
        self.overwritten = 0

    def put(self, item: T) -> None:
        with self._cond:
            if self._put > self._taken:
                self.overwritten += 1
            self._item = item
            self._put += 1
            self._cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        """Make the consumer's next take() raise exc."""
        with self._cond:
            self._error = exc
            self._cond.notify_all()

    def take(self, timeout: Optional[float] = None) -> Optional[T]:
        """The newest item not yet taken; None on close() or when timeout seconds pass."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self._closed or self._error is not None or self._put > self._taken,
                                     timeout)
            if self._error is not None:
                raise self._error
            if not ok or self._closed:
                return None
            self._taken = self._put
            return self._item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
