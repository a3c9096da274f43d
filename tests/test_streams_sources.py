"""Frame sources, live recovery, stereo pairing."""
import time

import cv2
import numpy as np
import pytest

from fakes import FakeCamera, ListSource
from streams import ImageFolderSource, LiveSource, StreamError, TimePairedSource, VideoFileSource, open_source, \
    open_stereo
from streams.pairing import LiveStereoSource


def _write_video(path, n, size=(64, 48), fps=25.0):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for i in range(n):
        img = np.zeros((size[1], size[0], 3), np.uint8)
        cv2.putText(img, str(i), (5, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
        img[:, :, 2] = i * 10
        w.write(img)
    w.release()


def test_video_file_source_times_and_stride(tmp_path):
    p = tmp_path / "v.avi"
    _write_video(p, 20)
    frames = list(VideoFileSource(str(p)))
    assert [f.index for f in frames] == list(range(20))
    assert frames[4].t == pytest.approx(4 / 25.0)
    assert int(frames[7].image[0, 0, 2]) == pytest.approx(70, abs=4)
    src = VideoFileSource(str(p), frame_stride=3)
    got = list(src)
    assert [f.index for f in got] == list(range(0, 20, 3))
    assert int(got[2].image[0, 0, 2]) == pytest.approx(60, abs=4)
    assert src.stats.skipped == 20 - len(got)


def test_video_file_errors(tmp_path):
    with pytest.raises(StreamError, match="not found"):
        VideoFileSource(str(tmp_path / "none.avi"))
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(StreamError, match="cannot open"):
        VideoFileSource(str(bad))
    with pytest.raises(StreamError, match="no such file"):
        open_source(str(tmp_path / "nothing.mp4"))


def test_image_folder_skips_unreadable(tmp_path):
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"f{i:02d}.png"), np.full((10, 12, 3), i, np.uint8))
    (tmp_path / "f02.png").write_bytes(b"garbage")
    src = open_source(str(tmp_path / "*.png"), fps=10)
    frames = list(src)
    assert [f.index for f in frames] == [0, 1, 3, 4]
    assert frames[2].t == pytest.approx(0.3)
    assert src.stats.corrupt == 1
    with pytest.raises(StreamError, match="no image files"):
        ImageFolderSource(str(tmp_path / "*.jpg"))


def test_realtime_paces_frames(tmp_path):
    p = tmp_path / "v.avi"
    _write_video(p, 6, fps=50.0)
    t = time.monotonic()
    assert len(list(VideoFileSource(str(p), realtime=True))) == 6
    assert time.monotonic() - t >= 5 / 50.0 * 0.9


def test_live_source_keeps_newest_and_recovers():
    plan = {"fail_after": 30, "down_for": 0.3}
    src = LiveSource("0", factory=lambda spec: FakeCamera(spec, plan), backoff=(0.05, 0.2))
    try:
        got = []
        t_end = time.monotonic() + 5.0
        while time.monotonic() < t_end and (src.stats.reopens < 1 or len(got) < 40):
            f = src.read(timeout=1.0)
            if f is not None:
                got.append(f.index)
            time.sleep(0.01)  # a slow consumer: the source must not queue
        assert src.stats.failures >= 1 and src.stats.reopens >= 1
        assert plan["opens"] >= 2
        assert got == sorted(set(got)), "frames are returned once each, newest first"
        assert src.stats.dropped > 0, "a slow consumer skips frames instead of queueing them"
    finally:
        src.close()


def test_live_source_that_never_opens_is_clear():
    plan = {"down_until": time.monotonic() + 100}
    with pytest.raises(StreamError, match="camera 3: cannot open"):
        LiveSource("3", factory=lambda spec: FakeCamera(spec, plan))


def test_close_releases_the_cameras_and_a_failed_start_holds_none():
    plan0, plan1 = {}, {}
    src = LiveStereoSource("0", "1", factory=(lambda s: FakeCamera(s, plan0), lambda s: FakeCamera(s, plan1)))
    assert src.read(timeout=2.0) is not None
    src.close()
    assert plan0.get("released") == 1 and plan1.get("released") == 1, "released once, by the grabbing thread"
    # cam1 cannot open: cam0, already open, is released before the error
    plan0, plan1 = {}, {"down_until": time.monotonic() + 100}
    with pytest.raises(StreamError, match="cam1 .*cannot open"):
        LiveStereoSource("0", "1", factory=(lambda s: FakeCamera(s, plan0), lambda s: FakeCamera(s, plan1)))
    assert plan0.get("released", 0) >= 1


def test_time_pairing_with_skew_and_drops():
    period = 1 / 30
    t0 = [i * period for i in range(30)]
    t1 = [i * period + 0.004 for i in range(30) if i not in (5, 6, 20)] + [5.0]
    src = TimePairedSource(ListSource(t0), ListSource(t1), tolerance=period / 2)
    pairs = list(src)
    assert len(pairs) == 27
    assert all(abs(p.t1 - p.t0 - 0.004) < 1e-9 for p in pairs)
    st = src.stats.as_dict()
    assert st["dropped0"] == 3 and st["dropped1"] == 1
    assert st["skew_ms_median"] == pytest.approx(4.0)
    assert [p.index for p in pairs] == list(range(27))


def test_size_mismatch_fails_at_start():
    with pytest.raises(StreamError, match="cam1 .*: frames are 40x30 but the calibration expects 32x24"):
        TimePairedSource(ListSource([0.0]), ListSource([0.0], size=(40, 30)), expected_size=(32, 24))


def test_mixed_live_and_file_rejected(tmp_path):
    with pytest.raises(StreamError, match="mix of a live camera and a file"):
        open_stereo("0", str(tmp_path / "x.avi"))


def test_live_stereo_camera_dies_and_returns():
    plans = ({}, {"fail_after": 20, "down_for": 0.4})
    src = LiveStereoSource("0", "1", factory=(lambda s: FakeCamera(s, plans[0]), lambda s: FakeCamera(s, plans[1])),
                           tolerance=0.05, backoff=(0.05, 0.1))
    try:
        both_after = singles = 0
        t_end = time.monotonic() + 5.0
        while time.monotonic() < t_end:
            p = src.read(timeout=1.0)
            assert p is not None, "the loop keeps getting pairs while one camera is down"
            if p.img1 is None:
                singles += 1
                assert p.img0 is not None and np.isnan(p.t1)
            elif singles:
                both_after += 1
                if both_after > 10:
                    break
        assert singles > 0 and both_after > 10
        assert src.cam_stats[1].failures >= 1 and src.cam_stats[1].reopens >= 1
        assert src.stats.as_dict()["skew_ms_max"] < 50
    finally:
        src.close()


def test_one_camera_far_slower_pairs_stay_matched_by_time():
    """Camera 1 delivers at 20 fps, camera 0 at 200: pairs come at the slow camera's rate, each
    pair's two captures stay close in time (no stale fast frame paired with a new slow one), and
    the skew is reported."""
    plans = ({}, {})
    src = LiveStereoSource("0", "1", factory=(lambda s: FakeCamera(s, plans[0], fps=200.0),
                                              lambda s: FakeCamera(s, plans[1], fps=20.0)),
                           tolerance=0.03, backoff=(0.05, 0.1))
    try:
        pairs = []
        t_end = time.monotonic() + 2.0
        while time.monotonic() < t_end:
            p = src.read(timeout=1.0)
            if p is not None and p.img0 is not None and p.img1 is not None:
                pairs.append(p)
        assert 25 <= len(pairs) <= 45, f"{len(pairs)} pairs in 2 s: expected about the slow camera's 20/s"
        assert max(abs(p.t1 - p.t0) for p in pairs) < 0.03
        stats = src.stats.as_dict()
        assert np.isfinite(stats["skew_ms_median"]) and stats["skew_ms_max"] < 30
    finally:
        src.close()


def test_live_tracking_survives_a_wall_clock_step_backwards(monkeypatch):
    """NTP or a person sets the clock back an hour mid-run: pair times come from the monotonic
    clock, so the loop goes on (it used to die with "frame time went backwards")."""
    from calib.rigs import make_rig
    from tracker3d.pipeline import PipelineConfig, StereoPipeline, run

    real_time = time.time
    step = {"at": time.monotonic() + 0.3}
    monkeypatch.setattr(time, "time", lambda: real_time() - (3600.0 if time.monotonic() > step["at"] else 0.0))
    src = LiveStereoSource("0", "1", factory=(lambda s: FakeCamera(s, {}, fps=60.0),
                                              lambda s: FakeCamera(s, {}, fps=60.0)), tolerance=0.05)
    pipe = StereoPipeline(make_rig(64, 48), PipelineConfig(threads=False))
    times = []
    try:
        t_end = time.monotonic() + 1.0
        st = run(src, pipe, on_frame=lambda f3: times.append(f3.t), stop=lambda: time.monotonic() > t_end)
    finally:
        src.close()
        pipe.close()
    assert st.processed >= 10 and times[-1] > step["at"]
    assert all(b > a for a, b in zip(times, times[1:]))
