"""Detection in child processes (PipelineConfig.processes, the CLI's default): the same detections
and tracks as in-process detection, one-line errors from the child, and nothing left behind."""
from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest

from persistence import HitCountGate
from streams.recording import RecordingReader
from tracker3d.detect import make_detector
from tracker3d.detect.detections import Detections
from tracker3d.detect.process import DetectorProcess, _shm_dir
from tracker3d.errors import Tracker3DError
from tracker3d.pipeline import PipelineConfig, StereoPipeline, run
from tracker3d.sim import SimWorld, get_scene, write_sim_recording

SCENE = get_scene("default").with_(seconds=3.0, width=320, height=240, n_objects=5)


def _frames(n: int = 75):
    world = SimWorld(SCENE, seed=4)
    out = []
    for _ in range(n):
        pair, _ = world.step()
        out.append((pair.img0, pair.t0))
    return out


def _same(a, b) -> bool:
    return (len(a) == len(b) and np.array_equal(a.boxes, b.boxes) and np.array_equal(a.centroids, b.centroids)
            and np.array_equal(a.scores, b.scores) and np.array_equal(a.areas, b.areas))


def test_a_detector_process_gives_the_detections_of_the_detector_itself():
    frames = _frames()
    local = make_detector("bg", min_area=4.0)
    child = DetectorProcess("bg", options={"min_area": 4.0}, name="cam0 detector")
    try:
        got = [(local.detect(img, t), child.detect(img, t)) for img, t in frames]
    finally:
        child.close()
    assert sum(len(a) for a, _ in got) > 50  # objects were found after the warm-up
    assert all(_same(a, b) for a, b in got)
    assert child._proc.returncode == 0  # ended when its input closed


def test_a_detector_process_error_is_one_line_naming_the_camera():
    child = DetectorProcess("bg", options={"no_such_option": 1}, name="cam1 detector")
    try:
        with pytest.raises(Tracker3DError) as e:
            child.detect(np.zeros((48, 64, 3), np.uint8), 0.0)
    finally:
        child.close()
    assert str(e.value).startswith("cam1 detector: ") and "no_such_option" in str(e.value)
    assert "\n" not in str(e.value)


def test_a_detector_process_that_dies_is_reported_not_waited_for():
    child = DetectorProcess("bg", name="cam0 detector")
    try:
        child.detect(np.zeros((48, 64, 3), np.uint8), 0.0)
        child._proc.kill()
        child._proc.wait()
        with pytest.raises(Tracker3DError, match="cam0 detector: the detector process ended unexpectedly"):
            child.detect(np.zeros((48, 64, 3), np.uint8), 0.1)
    finally:
        child.close()


def test_the_shared_image_file_is_gone_once_mapped():
    before = set(glob.glob(os.path.join(_shm_dir(), "tracker3d-frame-*")))
    child = DetectorProcess("bg", name="cam0 detector")
    try:
        child.detect(np.zeros((48, 64, 3), np.uint8), 0.0)
        with pytest.raises(Tracker3DError, match="set up for 64x48"):  # a larger image: a new shared file,
            child.detect(np.zeros((96, 128, 3), np.uint8), 0.1)  # then the detector's own check
        assert set(glob.glob(os.path.join(_shm_dir(), "tracker3d-frame-*"))) == before
    finally:
        child.close()


def test_the_loop_with_detector_processes_gives_the_tracks_of_detector_threads(tmp_path):
    rec = write_sim_recording(SCENE, tmp_path / "rec", seed=5)

    def tracks(**cfg):
        src = RecordingReader(rec)
        pipe = StereoPipeline(src.calib, PipelineConfig(**cfg), gate=HitCountGate(3, 1.0))
        got = []
        try:
            run(src, pipe, on_frame=lambda f3: got.append(json.dumps(f3.tracks, sort_keys=True)))
        finally:
            pipe.close()
            src.close()
        return got

    threads = tracks(processes=False)
    assert sum(t != "[]" for t in threads) > SCENE.n_frames // 4
    assert tracks(processes=True) == threads


def test_the_two_cameras_children_get_cores_of_their_own():
    from tracker3d.detect.process import pin_cpu

    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        assert pin_cpu(0) is None and pin_cpu(1) is None
    else:
        assert pin_cpu(0) != pin_cpu(1) and {pin_cpu(0), pin_cpu(1)} <= set(allowed)
    child = DetectorProcess("bg", name="cam1 detector", cpu=pin_cpu(1))
    try:
        child.wait_ready()
        if child.cpu is not None:
            assert os.sched_getaffinity(child._proc.pid) == {child.cpu}
    finally:
        child.close()


def test_messages_carry_detections_exactly_without_pickle():
    import io

    from tracker3d.detect.process import _receive, _send

    rng = np.random.default_rng(1)
    dets = [Detections(rng.normal(size=(3, 4)), rng.normal(size=(3, 2)), rng.random(3), rng.random(3) * 100,
                       np.array([1, "person", 7], dtype=object)), Detections.empty()]
    buf = io.BytesIO()
    _send(buf, ("det", (dets[0], 2.5)))
    _send(buf, ("det", (dets[1], 0.0)))
    buf.seek(0)
    for want in dets:
        kind, (got, ms) = _receive(buf)
        assert kind == "det" and _same(got, want)
        assert (got.classes is None) == (want.classes is None)
        if want.classes is not None:
            assert list(got.classes) == list(want.classes)
    assert _receive(buf) is None  # end of stream


def test_no_room_for_the_shared_image_is_one_line_not_a_crash(monkeypatch):
    import errno

    import tracker3d.detect.process as proc

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(proc.os, "posix_fallocate", full, raising=False)
    before = set(glob.glob(os.path.join(_shm_dir(), "tracker3d-frame-*")))
    child = DetectorProcess("bg", name="cam0 detector")
    try:
        with pytest.raises(Tracker3DError, match=r"cam0 detector: no room for a 9216 byte image in .*No space left"):
            child.detect(np.zeros((48, 64, 3), np.uint8), 0.0)
    finally:
        child.close()
    assert set(glob.glob(os.path.join(_shm_dir(), "tracker3d-frame-*"))) <= before  # the file was removed


def test_a_detector_process_killed_mid_replay_ends_the_run_with_status_1_and_whole_outputs(tmp_path, capsys,
                                                                                          monkeypatch):
    """A child SIGKILLed (the OOM killer, an operator) is a failure of the run, not bad input: one
    line, exit status 1 (it was 2, the status for bad options), the messages before it readable."""
    from tracker3d.cli import main
    from tracker3d.detect import process as proc
    from tracker3d.outputs.files import read_jsonl
    from tracker3d.sim import get_scene, write_sim_recording

    rec = write_sim_recording(get_scene("default").with_(seconds=2.5, width=160, height=120, n_objects=3),
                              tmp_path / "rec", seed=0)
    submit, count = proc.DetectorProcess.submit, {"n": 0}

    def kill_at_the_70th(self, image, t):
        count["n"] += 1
        if count["n"] == 70 and self._proc is not None:
            self._proc.kill()
            self._proc.wait()
        return submit(self, image, t)

    monkeypatch.setattr(proc.DetectorProcess, "submit", kill_at_the_70th)
    out, summary = tmp_path / "t.jsonl", tmp_path / "s.json"
    assert main(["replay", str(rec), "--out", str(out), "--gate", "hits", "--summary-json", str(summary)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the detector process ended unexpectedly" in err[0]
    got = read_jsonl(out)
    assert 0 < len(got) < 75 and got.cut == 0
    assert f"the outputs hold the {len(got)} pairs processed before it" in err[0]  # how many, not just "the pairs"
    s = json.loads(summary.read_text())  # the summary of the run up to it, and why it ended
    assert s["processed"] == len(got) and "ended unexpectedly" in s["failed"]


def test_a_detector_process_lost_to_a_stop_signal_is_a_stop_not_a_failure(monkeypatch, capsys):
    """systemd stops a service by signalling its whole cgroup: a child that dies of it while the
    command itself was asked to stop is reported as the stop (128 + signal), not as a failure."""
    import signal

    from tracker3d.cli import main
    from tracker3d.commands import replay
    from tracker3d.commands.signals import STOP
    from tracker3d.errors import RunFailure

    def stopped_then_child_lost(args):
        with STOP.soft():
            STOP._handle(signal.SIGTERM, None)
        raise RunFailure("cam0 detector: the detector process ended unexpectedly (exit code -15)")

    monkeypatch.setattr(replay, "run", stopped_then_child_lost)
    assert main(["replay", "anything"]) == 143
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("tracker3d replay: stopped by SIGTERM (cam0 detector:") and "exit status 143" in err
    monkeypatch.setattr(replay, "run", lambda args: (_ for _ in ()).throw(RunFailure("cam1 detector: gone")))
    assert main(["replay", "anything"]) == 1  # no stop asked: a failure
