"""A recording's Motion-JPEG images decoded by the detector processes (run(images_needed=False)):
the same tracks as images decoded by the reader, dropped frames and a start offset included, and
one-line errors naming the file."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from persistence import HitCountGate
from streams import RecordingReader, StreamError, VideoImage
from streams.videoimages import VideoImageReader
from tracker3d.detect.process import DetectorProcess
from tracker3d.pipeline import PipelineConfig, StereoPipeline, run
from tracker3d.sim import get_scene, write_sim_recording

SCENE = get_scene("default").with_(seconds=3.0, width=320, height=240, n_objects=5, drop_prob=0.1)


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    return write_sim_recording(SCENE, tmp_path_factory.mktemp("dec") / "rec", seed=5)


def _tracks(rec, images_needed: bool, start: int = 0):
    src = RecordingReader(rec, start=start)
    pipe = StereoPipeline(src.calib, PipelineConfig(processes=True, pipelined=True), gate=HitCountGate(3, 1.0))
    got = []
    try:
        st = run(src, pipe, on_frame=lambda f3: got.append((f3.index, json.dumps(f3.tracks, sort_keys=True))),
                 images_needed=images_needed)
    finally:
        pipe.close()
        src.close()
    return got, st


def test_children_decoding_their_videos_give_the_tracks_of_images_decoded_by_the_reader(rec):
    rows = (rec / "frames.csv").read_text().splitlines()[1:]
    assert sum(",," in r or r.endswith(",") for r in rows) >= 5  # pairs with a camera's frame missing
    here, st_here = _tracks(rec, images_needed=True)
    there, st_there = _tracks(rec, images_needed=False)
    assert (st_here.decoded_by, st_there.decoded_by) == ("reader", "detector processes")
    assert st_there.summary()["decoded_by"] == "detector processes"
    assert sum(t != "[]" for _, t in here) > len(here) // 4
    assert there == here


def test_a_replay_from_a_later_pair_decodes_from_there(rec):
    cap = cv2.VideoCapture(str(rec / "cam0.mjpg"))
    want = [cap.read()[1] for _ in range(71)][70]
    cap.release()
    src = RecordingReader(rec, start=70)  # its images, not image 0 (a seek on a Motion-JPEG stream lands there)
    try:
        pair = src.read()
        assert pair.index == 70 and np.array_equal(pair.img0, want)
    finally:
        src.close()
    here, _ = _tracks(rec, images_needed=True, start=70)
    there, st = _tracks(rec, images_needed=False, start=70)
    assert st.decoded_by == "detector processes" and here[0][0] >= 70
    assert there == here


def test_the_reader_decodes_itself_for_other_formats_and_once_reading_has_begun(rec, tmp_path):
    src = RecordingReader(rec)
    try:
        assert src.read().img0.shape == (240, 320, 3)
        assert not src.decode_in_detectors()  # too late: pair 0 was decoded here
        assert src.read().img0 is not None and src.decoded_here
    finally:
        src.close()
    src = RecordingReader(rec)
    try:
        assert src.decode_in_detectors()
        pair = src.read()
        assert pair.img0 == VideoImage(str(rec / "cam0.mjpg"), 0, (320, 240)) or pair.img0 is None
    finally:
        src.close()
    avi = write_sim_recording(get_scene("default").with_(seconds=0.5, width=160, height=120, n_objects=2),
                              tmp_path / "avi", seed=1, codec="MJPG")
    src = RecordingReader(avi)
    try:
        assert not src.decode_in_detectors()  # no JPEG walk of its own: the reader decodes
        assert isinstance(src.read().img0, np.ndarray)
    finally:
        src.close()


@pytest.mark.parametrize("prefetch", [True, False])
def test_video_images_are_read_forward_with_skips_and_seeks(rec, prefetch):
    cap = cv2.VideoCapture(str(rec / "cam1.mjpg"))
    want = [cap.read()[1] for _ in range(80)]
    cap.release()
    r = VideoImageReader(prefetch=prefetch)
    try:
        path = str(rec / "cam1.mjpg")
        for n in (0, 1, 2, 4, 5, 75, 3, 79):  # forward, skipping a few or many, back (from the start again)
            assert np.array_equal(r.read(VideoImage(path, n, (320, 240))), want[n]), n
            # with prefetch the next image is being decoded meanwhile (and served from there if asked)
            assert (r._ahead[:2] == (path, n + 1)) if prefetch else r._ahead is None
    finally:
        r.close()


def test_a_child_that_cannot_decode_or_gets_another_size_says_which_file(rec, tmp_path):
    child = DetectorProcess("bg", name="cam0 detector")
    try:
        with pytest.raises(StreamError, match=r"cam0\.mjpg: image 2 is 320x240 but the calibration expects "
                                              r"640x480 for this camera"):
            child.detect(VideoImage(str(rec / "cam0.mjpg"), 2, (640, 480)), 0.0)
        with pytest.raises(StreamError, match=r"nothing\.mjpg: cannot open the video"):
            child.detect(VideoImage(str(tmp_path / "nothing.mjpg"), 0, None), 0.1)
        det = child.detect(VideoImage(str(rec / "cam0.mjpg"), 3, (320, 240)), 0.2)  # still serving
        assert len(det) == 0  # (the warm-up)
    finally:
        child.close()
    assert child._proc.returncode == 0


@pytest.mark.parametrize("images_needed", [True, False])
def test_a_video_whose_images_change_size_midway_is_refused_at_that_image(rec, tmp_path, images_needed):
    """A stranger appended a 320x240 video to the first 74 images of a 640x480 one: FFmpeg scaled
    the small images up without a word and the replay tracked on (MOTA 0.86 -> 0.19, exit 0)."""
    import shutil

    from streams.jpegstream import JpegStreamIndex

    small = write_sim_recording(get_scene("default").with_(seconds=1.0, width=160, height=120, n_objects=2),
                                tmp_path / "small", seed=2)
    mixed = tmp_path / "mixed"
    shutil.copytree(rec, mixed)
    ix = JpegStreamIndex(rec / "cam0.mjpg")
    ends = [ix.next().end for _ in range(20)]
    ix.close()
    cut = (rec / "cam0.mjpg").read_bytes()[:ends[-1]]
    (mixed / "cam0.mjpg").write_bytes(cut + (small / "cam0.mjpg").read_bytes())
    with pytest.raises(StreamError, match=r"cam0\.mjpg: image 20 \(byte \d+\) is 160x120 but the calibration "
                                          r"expects for cam0 320x240; keep the first 20 rows"):
        _tracks(mixed, images_needed=images_needed)
    (mixed / "calib.yaml").unlink()  # no calibration: the video's own first image is the size to keep
    src = RecordingReader(mixed)
    try:
        with pytest.raises(StreamError, match=r"image 20 .* is 160x120 but the video's first image is 320x240"):
            while src.read() is not None:
                pass
    finally:
        src.close()


def test_a_recordings_one_camera_pairs_are_counted_as_a_live_pairing_counts_them(rec):
    """The summary said 'none dropped or unpaired' for a recording with 45 of 147 one-camera rows."""
    rows = [r.split(",") for r in (rec / "frames.csv").read_text().splitlines()[1:]]
    only0 = sum(t0 != "" and t1 == "" for _, t0, t1 in rows)
    only1 = sum(t0 == "" and t1 != "" for _, t0, t1 in rows)
    assert only0 and only1
    src = RecordingReader(rec)
    try:
        while src.read() is not None:
            pass
    finally:
        src.close()
    assert (src.stats.single0, src.stats.single1) == (only0, only1)
