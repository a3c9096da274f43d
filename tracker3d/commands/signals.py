"""Ctrl-C (SIGINT) and SIGTERM (what systemd, docker and kill send) as one orderly stop.

`cli.main` installs the handlers for every command. Inside `STOP.soft()` (the run loops of
live, replay, demo and record) the first signal only asks the loop to stop after the pair in
hand, so writers are closed (an MCAP file gets its summary), the summary is printed and the
command returns; elsewhere, on a second signal, or when the loop has not reached its next
check within GRACE_S (a paced replay sleeping over a gap in time), it raises KeyboardInterrupt
at once. Either way the exit status is 128 + the signal number (130 for SIGINT, 143 for SIGTERM), so a script
can tell a run that was cut short from a complete one.
"""
from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from typing import Iterator, Optional

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_S = 3.0  # how long a loop may take to reach its next stop check after a signal


class Stop:
    """The stop request of this process: which signal came first (None: none)."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._soft = 0
        self._alarm: Optional[tuple] = None  # (the SIGALRM handler to restore,) while the grace runs

    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    @property
    def rc(self) -> Optional[int]:
        """128 + the signal number, the shell's convention for a process ended by a signal."""
        return 128 + int(self.signum) if self.signum else None

    def _handle(self, signum: int, frame) -> None:
        again = self.signum is not None
        if not again:
            self.signum = signum
        if self._soft and not again:
            log.warning("%s: stopping after this pair and closing the outputs (send it again to stop at once)",
                        signal.Signals(signum).name)
            self._arm_grace()
            return
        raise KeyboardInterrupt

    def _arm_grace(self) -> None:
        """A loop blocked longer than GRACE_S (a paced replay over a gap in time) is interrupted."""
        if hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread():
            self._alarm = (signal.signal(signal.SIGALRM, self._grace_over),)
            signal.setitimer(signal.ITIMER_REAL, GRACE_S)

    def _grace_over(self, signum: int, frame) -> None:
        if self._soft:
            log.warning("the loop did not stop within %.0f s: stopping at once", GRACE_S)
            raise KeyboardInterrupt

    def _disarm_grace(self) -> None:
        if self._alarm is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._alarm[0] if self._alarm[0] is not None else signal.SIG_DFL)
            self._alarm = None

    @contextmanager
    def soft(self) -> Iterator["Stop"]:
        """Within this block a first signal only sets the request; the loop polls `requested()`."""
        self._soft += 1
        try:
            yield self
        finally:
            self._soft -= 1
            self._disarm_grace()

    @contextmanager
    def installed(self) -> Iterator["Stop"]:
        """Handle SIGINT and SIGTERM for the duration (main thread only; a SIGINT ignored by the
        parent, as for a background job, stays ignored). Restores the previous handlers."""
        self.signum = None
        self._soft = 0
        self._alarm = None
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                if signal.getsignal(s) is signal.SIG_IGN:
                    continue
                previous[s] = signal.signal(s, self._handle)
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


STOP = Stop()
