"""Where a replay's tracking thread runs on a machine with few cores (Linux affinity).

With detection in child processes, a pipelined replay runs three kinds of work at once: the
tracking thread (2D and 3D tracking, the gate, publishing), the reader (video decoding) and the
detector processes. Left free, the scheduler runs the children and the decoder on the tracking
thread's core too; when tracking is the bottleneck (a crowd), every slice it loses is a slice of
throughput (2 cores, 200 objects: 2D tracking's median 4.6-5.9 ms a pair shared, 3.3-3.5 on a
core of its own; 48-54 pairs/s shared, 55-65 alone). When detection is (few objects), the
other way round: its work needs both cores. `TrackCore` measures both sides' CPU time per pair
and gives the tracking thread a core of its own only while its share is the larger.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable, Optional, Sequence

log = logging.getLogger(__name__)


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used, from /proc (0 where unreadable)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def busy_cpu_s() -> Optional[float]:
    """CPU seconds the whole machine has been busy (all cores: user, nice, system, irq, softirq;
    from /proc/stat), or None where there is no such file."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        if fields[0] != "cpu":
            return None
        user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
    except (OSError, ValueError, IndexError):
        return None
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def replay_cores(pipeline, live: bool, pipelined: bool) -> Optional[set[int]]:
    """The cores this process may use, where run() may place its threads and detector
    processes: a pipelined replay (not a live source) with detector processes, on a system with
    thread affinity; else None."""
    if live or not pipelined or not getattr(pipeline, "children", None) or not hasattr(os, "sched_setaffinity"):
        return None
    try:
        return os.sched_getaffinity(0)
    except OSError:
        return None


def free_children(pipeline, live: bool, pipelined: bool) -> list:
    """In a pipelined replay, the detector children free to run on every core this process may
    use (each keeps a core of its own for live sources, where a pair waits for both: left free,
    the scheduler often ran them on one core); returns those that moved (run() puts them back
    on their own core at the end)."""
    cpus = replay_cores(pipeline, live, pipelined)
    if cpus is None:
        return []
    return [d for d in pipeline.children if d.cpu is not None and d.pin(cpus)]


class TrackCore:
    """The tracking thread, with the reader and detect threads, on core `track` and the detector
    processes on `rest`, while that process's threads need more CPU per pair than the children
    can give them elsewhere; decided every DECIDE_EVERY pairs on the pairs since the last
    decision, with a MARGIN either way (no flapping). The stage threads stay with the tracking
    thread: they share its GIL, and on the children's busy core a stage thread handed the GIL
    waited for a time slice while the tracking thread waited for the GIL (crowd, 2 cores: the
    tracking thread's wall time 1.21-1.27x its CPU time there, 1.09-1.13x beside it; six
    interleaved pairs of replays, five faster, 54.4-60.7 -> 60.3-68.2 pairs/s in a fast phase).

    The run reports CPU seconds: `read_s` (the reader thread's) and `detect_s` (the detect
    thread's), each written by its own thread, and note_track() per pair from the tracking
    thread, which also moves the threads (an affinity call of its own thread); the children's
    comes from /proc. While other programs keep more than FOREIGN_MAX cores busy (the machine's
    busy time from /proc/stat less this process's and its children's), nothing moves and a core
    taken is given back."""

    DECIDE_EVERY = 15
    MARGIN = 1.15
    # Other programs busy on the machine, in cores: then no core is ours to take (two replays at
    # once would both put their tracking on the same core), and one taken is given back.
    FOREIGN_MAX = 0.25

    def __init__(self, children: Sequence, track: int, rest: list[int], before: set[int],
                 machine_busy: Callable[[], Optional[float]] = busy_cpu_s):
        self.children = list(children)
        self.track, self.rest, self.before = track, list(rest), set(before)
        self.stage_threads: list[Optional[int]] = []  # native ids of the reader and detect threads
        self.dedicated = False
        self.read_s = 0.0
        self.detect_s = 0.0
        self.track_s = 0.0
        self.pairs = 0
        self.dedicated_pairs = 0  # pairs tracked with a core of its own
        self._machine_busy = machine_busy
        self._mark = (0.0, 0.0, 0.0, 0)
        self._usage = self._usage_now()
        self.foreign = 0.0  # cores' worth of other programs' work over the last window

    def _usage_now(self) -> tuple[float, float, float, Optional[float]]:
        """(wall clock, this process's CPU seconds, its children's, the machine's busy CPU seconds)."""
        t = os.times()
        kids = sum(process_cpu_s(d.pid) for d in self.children if getattr(d, "pid", None) is not None)
        return time.monotonic(), t.user + t.system, kids, self._machine_busy()

    @classmethod
    def for_run(cls, pipeline, live: bool, pipelined: bool) -> Optional["TrackCore"]:
        """A TrackCore for run(): pipelined replays (not live sources) with detector processes
        on a system that has thread affinity and 2 or more cores; else None."""
        before = replay_cores(pipeline, live, pipelined)
        if before is None or len(before) < 2 or not getattr(getattr(pipeline, "cfg", None), "track_core", False):
            return None
        cpus = sorted(before)
        return cls(pipeline.children, cpus[0], cpus[1:], before)

    def note_track(self, seconds: float) -> None:
        """The tracking thread's CPU seconds for one pair (called on that thread)."""
        self.track_s += seconds
        self.pairs += 1
        self.dedicated_pairs += self.dedicated
        if self.pairs - self._mark[3] >= self.DECIDE_EVERY:
            self._decide()

    def _decide(self) -> None:
        r, d, t, n = self._mark
        k = self.pairs - n
        self._mark = (self.read_s, self.detect_s, self.track_s, self.pairs)
        (wall0, own0, kids0, busy0), (wall, own, kids, busy) = self._usage, self._usage_now()
        self._usage = (wall, own, kids, busy)
        track = (self.track_s - t + self.read_s - r + self.detect_s - d) / k  # the threads that share the core
        other = (kids - kids0) / k / len(self.rest)  # the children's, per core left to them
        want = track > other * (self.MARGIN if not self.dedicated else 1.0 / self.MARGIN)
        if busy0 is not None and busy is not None and wall > wall0:
            self.foreign = max(0.0, (busy - busy0 - (own - own0) - (kids - kids0)) / (wall - wall0))
            want = want and self.foreign <= self.FOREIGN_MAX
        if want != self.dedicated:
            log.debug("tracking %.2f ms a pair (read %.2f, detect %.2f), the children %.2f ms per other core, "
                      "other programs %.2f cores: %s", track * 1e3, (self.read_s - r) / k * 1e3,
                      (self.detect_s - d) / k * 1e3, other * 1e3, self.foreign,
                      "a core of its own" if want else "shared cores")
            self._place(want)

    def _place(self, dedicated: bool) -> None:
        try:
            os.sched_setaffinity(0, {self.track} if dedicated else self.before)
        except OSError as e:  # a container's cpuset changed under us: leave things as they are
            log.debug("tracking core: %s", e)
            return
        for tid in self.stage_threads:
            if tid is not None:
                try:
                    os.sched_setaffinity(tid, {self.track} if dedicated else self.before)
                except OSError:  # the thread has ended
                    pass
        for c, d in enumerate(self.children):  # shared: free to run anywhere (see run())
            d.pin({self.rest[c % len(self.rest)]} if dedicated else self.before)
        self.dedicated = dedicated

    def close(self) -> None:
        """Everything back where it was (call on the tracking thread)."""
        if self.dedicated:
            self._place(False)
        if self.pairs:
            log.debug("tracking had a core of its own for %d of %d pairs", self.dedicated_pairs, self.pairs)
