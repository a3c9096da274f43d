"""The pipelined loop (the next pair read and detected while this one is tracked): the same tracks
as the plain loop on files, newest-wins with counted drops on live sources, a prompt stop, and the
source's errors raised to the caller."""
from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest
from conftest import DATA, stop_with

from persistence import HitCountGate
from streams.detections import DetectionFolder
from streams.errors import StreamError
from streams.frames import FramePair
from streams.recording import RecordingReader
from tracker3d.cli import main
from tracker3d.cores import TrackCore, free_children
from tracker3d.handoff import EMPTY, END, HandOff
from tracker3d.pipeline import IN_FLIGHT, PipelineConfig, StereoPipeline, run
from tracker3d.sim import get_scene, write_sim_recording

SCENE = get_scene("default").with_(seconds=3.5, width=320, height=240, n_objects=6)


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    return write_sim_recording(SCENE, tmp_path_factory.mktemp("pipelined") / "rec", seed=3)


def _tracks(source, calib, pipelined, on_frame=None, **cfg):
    pipe = StereoPipeline(calib, PipelineConfig(**cfg), gate=HitCountGate(3, 1.0))
    got = []

    def keep(f3):
        got.append((f3.index, f3.t, json.dumps(f3.tracks, sort_keys=True)))
        if on_frame is not None:
            on_frame(f3)

    try:
        st = run(source, pipe, on_frame=keep, pipelined=pipelined)
    finally:
        pipe.close()
        source.close()
    return got, st


def test_pipelined_loop_gives_the_same_tracks_as_the_plain_loop_on_a_sim_recording(rec):
    plain, st0 = _tracks(RecordingReader(rec), RecordingReader(rec).calib, pipelined=False)
    piped, st1 = _tracks(RecordingReader(rec), RecordingReader(rec).calib, pipelined=True)
    assert not st0.pipelined and st1.pipelined
    assert st1.pairs_in == st1.processed == SCENE.n_frames and st1.dropped_stale == 0
    assert [p[0] for p in piped] == list(range(SCENE.n_frames))
    assert sum(p[2] != "[]" for p in plain) > SCENE.n_frames // 4  # tracks to compare (after the 2 s warm-up)
    assert piped == plain


def test_pipelined_loop_is_lossless_and_in_order_behind_a_slow_consumer(rec):
    calib = RecordingReader(rec).calib
    piped, st = _tracks(RecordingReader(rec), calib, pipelined=True, on_frame=lambda f3: time.sleep(0.01))
    assert [p[0] for p in piped] == list(range(SCENE.n_frames)) and st.dropped_stale == 0


def test_detection_pairs_take_the_same_pipelined_path():
    folder = DATA / "wildtrack_c1c2_slice" / "clean"
    calib = DetectionFolder.open_folder(folder).calib

    def tracks(pipelined):
        pipe = StereoPipeline(calib, PipelineConfig(), gate=HitCountGate(2, 3.0))
        got = []
        src = DetectionFolder.open_folder(folder)
        run(src, pipe, on_frame=lambda f3: got.append(json.dumps(f3.tracks, sort_keys=True)), pipelined=pipelined)
        pipe.close()
        return got

    plain = tracks(False)
    assert sum(t != "[]" for t in plain) > 0
    assert tracks(True) == plain


def test_replay_no_pipelining_writes_the_same_file_as_the_default(rec, tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert main(["replay", str(rec), "--gate", "hits", "--out", str(a)]) == 0
    assert main(["replay", str(rec), "--gate", "hits", "--no-pipelining", "--out", str(b)]) == 0
    assert a.read_text().count("\n") == SCENE.n_frames and a.read_bytes() == b.read_bytes()


class _FastLiveSource:
    """A live source that always has a new pair at once (a camera faster than the loop)."""

    live = True
    ended = False

    def __init__(self, n=60, size=(160, 120), fail_at=None):
        self.n, self.size, self.fail_at = n, size, fail_at
        self.k = 0
        self.closed = False

    def read(self, timeout=None):
        if self.fail_at is not None and self.k == self.fail_at:
            raise StreamError("camera 0: the device went away")
        if self.k >= self.n:
            self.ended = True
            return None
        img = np.full((self.size[1], self.size[0]), 100, np.uint8)
        t = self.k / 30.0
        p = FramePair(self.k, t, t, img, img.copy(), wall=time.time())
        self.k += 1
        return p

    def close(self):
        self.closed = True


def test_live_pipelined_loop_keeps_the_newest_pair_and_counts_the_stale_ones():
    from calib.rigs import make_rig

    src = _FastLiveSource(n=80)
    pipe = StereoPipeline(make_rig(160, 120), PipelineConfig(threads=False))
    got = []
    st = run(src, pipe, on_frame=lambda f3: (got.append(f3.index), time.sleep(0.02)), pipelined=True)
    pipe.close()
    assert st.dropped_stale > 0 and st.summary()["dropped_stale"] == st.dropped_stale
    assert all(b > a for a, b in zip(got, got[1:]))  # never an older pair after a newer one
    assert st.pairs_in == 80 and st.processed == len(got)
    assert st.pairs_in - IN_FLIGHT <= st.processed + st.dropped_stale <= st.pairs_in
    assert got[-1] >= 80 - IN_FLIGHT  # the last pairs are tracked, not starved


def test_stop_ends_a_pipelined_run_promptly_and_its_thread_with_it():
    from calib.rigs import make_rig

    src = _FastLiveSource(n=10**9)
    pipe = StereoPipeline(make_rig(160, 120), PipelineConfig(threads=False))
    t_end = time.monotonic() + 0.5
    t0 = time.monotonic()
    st = run(src, pipe, stop=lambda: time.monotonic() > t_end, pipelined=True)
    pipe.close()
    assert st.processed > 0 and time.monotonic() - t0 < 3.0
    assert not any(t.name in ("read", "detect") for t in threading.enumerate())


def test_a_source_error_in_the_detect_thread_reaches_the_caller_after_the_pairs_before_it():
    from calib.rigs import make_rig

    src = _FastLiveSource(n=100, fail_at=7)
    src.live = False  # lossless: every pair before the error is tracked
    pipe = StereoPipeline(make_rig(160, 120), PipelineConfig(threads=False))
    got = []
    with pytest.raises(StreamError, match="device went away"):
        run(src, pipe, on_frame=lambda f3: got.append(f3.index), pipelined=True)
    pipe.close()
    assert got == list(range(7))


def test_handoff_lossless_waits_and_newest_wins_replaces():
    h = HandOff(1)
    assert h.put(1)
    done = threading.Event()
    threading.Thread(target=lambda: (h.put(2), done.set()), daemon=True).start()
    assert not done.wait(0.1)  # full: the producer waits
    assert h.take(1.0) == 1 and done.wait(1.0) and h.take(1.0) == 2
    assert h.take(0.01) is EMPTY
    h.finish(ValueError("bad frame"))
    with pytest.raises(ValueError):
        h.take(0.01)
    assert h.take(0.01) is END
    n = HandOff(1, newest_wins=True)
    for i in range(5):
        assert n.put(i)
    assert n.take(0.01) == 4 and n.dropped == 4
    n.close()
    assert not n.put(9) and n.take(0.01) is END


def test_sigint_stops_a_live_pipelined_demo_at_once_with_its_summary():
    """The live loop (a paced sim: newest-wins hand-off) stops on Ctrl-C after the pair in hand:
    exit status 130, the summary printed, the detect thread joined within the grace period."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.Popen([sys.executable, "-m", "tracker3d.cli", "demo", "--seconds", "60", "--no-publish",
                             "--gate", "hits"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    time.sleep(6.0)  # started: imports, the world, the first seconds of the scene
    if proc.poll() is not None:
        proc.kill()
        pytest.fail(f"the demo ended before the signal: {proc.communicate()}")
    stdout, stderr, waited = stop_with(proc, signal.SIGINT)
    assert proc.returncode == 130, stderr
    assert "pairs in" in stdout and "stopped by SIGINT" in stderr and waited < 5.0
    assert int(stdout.split("processed ")[1].split()[0]) > 30  # it was tracking when stopped
    assert "still inside a read or detection" not in stderr


def test_side_by_side_detection_holds_numpy_blas_to_one_thread_and_copes_without_threadpoolctl(monkeypatch, caplog):
    """Detectors side by side: numpy's BLAS gets one thread (its second one stalled the
    association on a busy core); an environment without threadpoolctl only gets a warning."""
    import sys

    from threadpoolctl import threadpool_info, threadpool_limits

    from calib.rigs import make_rig

    with threadpool_limits(2, user_api="blas"):
        StereoPipeline(make_rig(160, 120), PipelineConfig(threads=True))
        assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")
        monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import fails
        caplog.set_level("WARNING")
        StereoPipeline(make_rig(160, 120), PipelineConfig(threads=True))
        assert "threadpoolctl is not installed" in caplog.text


class _FakeChild:
    def __init__(self, pid=None):
        self.pins = []
        self.pid = pid

    def pin(self, cpu):
        self.pins.append(cpu)
        return True


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs thread affinity and 2 cores")
def test_tracking_gets_a_core_of_its_own_only_while_it_is_the_bottleneck(monkeypatch):
    """Every DECIDE_EVERY pairs: the tracking thread (with the reader and detect threads) on the
    first core, the children on the others, when the three threads' CPU per pair exceeds the
    children's per remaining core by MARGIN, shared again when it falls below by MARGIN or while
    other programs keep the machine busy; close() puts the calling thread's affinity back."""
    import tracker3d.cores as cores_mod

    before = os.sched_getaffinity(0)
    cpus = sorted(before)
    kids = [_FakeChild(pid=-1), _FakeChild(pid=-2)]
    kid_cpu = {-1: 0.0, -2: 0.0}
    monkeypatch.setattr(cores_mod, "process_cpu_s", lambda pid: kid_cpu[pid])
    busy = {"other programs": False, "s": 0.0}

    def machine_busy():  # None: no machine-wide figure (the check is skipped); else huge growth
        if not busy["other programs"]:
            return None
        busy["s"] += 1e6
        return busy["s"]

    core = TrackCore(kids, cpus[0], cpus[1:], before, machine_busy=machine_busy)
    rest = len(cpus) - 1

    def pairs(track_ms, other_ms, n=TrackCore.DECIDE_EVERY, stages_ms=0.0):
        for _ in range(n):  # other_ms: the children's per remaining core; stages_ms: read + detect threads
            kid_cpu[-1] += other_ms * rest / 2e3
            kid_cpu[-2] += other_ms * rest / 2e3
            core.read_s += stages_ms / 2e3
            core.detect_s += stages_ms / 2e3
            core.note_track(track_ms / 1e3)

    try:
        pairs(5.0, 10.0)  # detection-bound (few objects): shared
        assert not core.dedicated and kids[0].pins == []
        pairs(11.0, 10.0)  # within the margin: no move
        assert not core.dedicated
        pairs(8.0, 10.0, stages_ms=4.0)  # the stage threads share the tracking thread's core: counted with it
        assert core.dedicated
        pairs(5.0, 10.0)
        assert not core.dedicated
        pairs(20.0, 10.0)  # tracking-bound (a crowd)
        assert core.dedicated and os.sched_getaffinity(0) == {cpus[0]}
        assert kids[0].pins[-1] == {cpus[1]} and kids[1].pins[-1] == {cpus[1 % rest + 1] if rest > 1 else cpus[1]}
        pairs(9.5, 10.0)  # within the margin the other way: stays
        assert core.dedicated
        pairs(5.0, 10.0)
        assert not core.dedicated and os.sched_getaffinity(0) == before and kids[0].pins[-1] == before
        pairs(20.0, 10.0)
        assert core.dedicated and core.dedicated_pairs == 3 * TrackCore.DECIDE_EVERY  # pairs tracked alone
        busy["other programs"] = True  # another program keeps cores busy: the core is given back ...
        pairs(20.0, 10.0)
        pairs(20.0, 10.0)
        assert not core.dedicated and core.foreign > TrackCore.FOREIGN_MAX and os.sched_getaffinity(0) == before
        pairs(20.0, 10.0)  # ... and not taken while it does
        assert not core.dedicated
    finally:
        core.close()
    assert os.sched_getaffinity(0) == before and not core.dedicated


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs thread affinity and 2 cores")
def test_replay_with_detector_processes_and_the_tracking_core_gives_the_plain_loops_tracks(rec, monkeypatch):
    """Detector processes, free to run on every core in a replay, the tracking thread moved to a
    core of its own from the 5th pair on (forced): the same tracks as the plain loop; meanwhile
    the children run on the other cores, the stage threads with the tracking thread; afterwards every affinity is back
    (each child on its own core). Live sources never get the layout."""
    monkeypatch.setattr(TrackCore, "DECIDE_EVERY", 5)
    monkeypatch.setattr(TrackCore, "_decide", lambda self: None if self.dedicated else self._place(True))
    before = os.sched_getaffinity(0)
    cpus = sorted(before)
    plain, _ = _tracks(RecordingReader(rec), RecordingReader(rec).calib, pipelined=False)
    seen = []
    pipe = StereoPipeline(RecordingReader(rec).calib, PipelineConfig(processes=True), gate=HitCountGate(3, 1.0))
    src = RecordingReader(rec)
    got = []

    def keep(f3):
        got.append((f3.index, f3.t, json.dumps(f3.tracks, sort_keys=True)))
        if f3.index == 2:
            seen.append([os.sched_getaffinity(d._proc.pid) for d in pipe.children])
        if f3.index == 20:
            seen.append((os.sched_getaffinity(0), [os.sched_getaffinity(d._proc.pid) for d in pipe.children],
                         {t.name: os.sched_getaffinity(t.native_id) for t in threading.enumerate()
                          if t.name in ("read", "detect")}))

    try:
        run(src, pipe, on_frame=keep, pipelined=True)
        children_after = [os.sched_getaffinity(d._proc.pid) for d in pipe.children]
    finally:
        pipe.close()
        src.close()
    assert got == plain
    assert seen[0] == [before, before]  # free before the tracking core is given
    main_then, kids_then, threads_then = seen[1]
    assert main_then == {cpus[0]} and all(k == {cpus[1 + c % (len(cpus) - 1)]} for c, k in enumerate(kids_then))
    assert threads_then and all(v == {cpus[0]} for v in threads_then.values())
    assert os.sched_getaffinity(0) == before
    assert children_after == [{cpus[c % len(cpus)]} for c in range(2)]  # each back on its own core (pin_cpu)
    assert TrackCore.for_run(pipe, live=True, pipelined=True) is None
    assert free_children(pipe, live=True, pipelined=True) == []  # live: each child keeps its core
