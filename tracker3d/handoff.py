"""The pipelined loop's parts: a bounded hand-off between two threads, and the stage thread that
reads a source and detects (so decode and detection of pair k+1 overlap the tracking of pair k).

Used by `tracker3d.pipeline.run`; nothing here knows about stereo or tracking.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any, Callable, Optional

log = logging.getLogger(__name__)

EMPTY = object()  # take(): nothing arrived within the timeout
END = object()  # take(): the producer finished and everything it handed over was taken


class HandOff:
    """A bounded queue from one producer thread to one consumer thread.

    Lossless (newest_wins False): put() waits while `capacity` items wait. Newest-wins: put() never
    waits; when full, the oldest waiting item is replaced and counted in `dropped` (a live source:
    a stale pair is worth less than a fresh one). finish() ends the stream after the waiting items
    (with an error, take() raises it once they are taken); close() wakes and refuses everyone.
    """

    def __init__(self, capacity: int = 1, newest_wins: bool = False) -> None:
        if capacity < 1:
            raise ValueError(f"capacity {capacity}: expected at least 1")
        self.capacity = capacity
        self.newest_wins = newest_wins
        self.dropped = 0
        self._items: deque = deque()
        self._cond = threading.Condition()
        self._finished = False
        self._error: Optional[BaseException] = None
        self._closed = False

    def put(self, item: Any) -> bool:
        """Hand over `item`; False (item not taken) once the hand-off is closed."""
        with self._cond:
            if not self.newest_wins:
                self._cond.wait_for(lambda: self._closed or len(self._items) < self.capacity)
            if self._closed:
                return False
            if len(self._items) >= self.capacity:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify_all()
            return True

    def finish(self, error: Optional[BaseException] = None) -> None:
        """No more items: take() returns END (or raises `error`) after the waiting ones."""
        with self._cond:
            self._finished = True
            self._error = error
            self._cond.notify_all()

    def take(self, timeout: Optional[float] = None) -> Any:
        """The oldest waiting item; EMPTY after `timeout` seconds without one; END (or the
        producer's error, raised) when the producer finished and nothing waits; END once closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._finished or self._closed, timeout)
            if self._items and not self._closed:
                item = self._items.popleft()
                self._cond.notify_all()
                return item
            if self._closed:
                return END
            if self._finished:
                if self._error is not None:
                    err, self._error = self._error, None
                    raise err
                return END
            return EMPTY

    def close(self) -> None:
        """Wake a waiting put() or take(); waiting items are discarded."""
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()


class ProducerThread:
    """Runs `produce(halted)` on a daemon thread, handing what it yields to a HandOff.

    produce: a generator function taking a `halted()` callable (True once the consumer stopped);
    it ends by returning. Its exception goes to the consumer (raised by take()).
    """

    def __init__(self, produce: Callable[[Callable[[], bool]], Any], handoff: HandOff, name: str = "producer"):
        self.handoff = handoff
        self._produce = produce
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)

    def start(self) -> "ProducerThread":
        self._thread.start()
        return self

    @property
    def native_id(self) -> Optional[int]:
        """The thread's id in the operating system (once started)."""
        return self._thread.native_id

    def _run(self) -> None:
        error = None
        try:
            for item in self._produce(self._halt.is_set):
                if self._halt.is_set() or not self.handoff.put(item):
                    break
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            error = e
        self.handoff.finish(error)

    def stop(self, wait_s: float = 5.0) -> bool:
        """Ask the producer to stop, wake it, and wait up to wait_s seconds (an interrupt stops the
        waiting). True when the thread ended."""
        self._halt.set()
        self.handoff.close()
        try:
            self._thread.join(wait_s)
        except KeyboardInterrupt:
            pass
        if self._thread.is_alive():
            log.warning("%s: still inside a read or detection after %.0f s; left to finish on its own",
                        self._thread.name, wait_s)
            return False
        return True
