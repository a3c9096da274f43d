"""Live detections from other programs: the detections2d message, its pairing by capture time over
a real loopback ZMQ socket, `tracker3d live --det-source` end to end with the example publisher,
the box anchor and class labels passing through to the 3D tracks."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from conftest import DATA

from persistence import HitCountGate
from streams.detections import Boxes2D, DetectionFolder, DetectionPair, read_det_file
from streams.detstream import DetectionPublisher, DetectionStream
from streams.errors import SchemaError, StreamError
from streams.messages import (
    DET_TOPIC,
    decode,
    encode,
    make_detections_message,
    make_message,
    validate_detections,
    validate_message,
)
from tracker3d.cli import main
from tracker3d.pipeline import PipelineConfig, StereoPipeline

ROOT = Path(__file__).resolve().parents[1]
SLICE = DATA / "wildtrack_c1c2_slice"


def _good(**kw):
    msg = make_detections_message(0, 1.5, [[10, 20, 30, 60]], [0.9], classes=[3], frame=7)
    msg.update(kw)
    return msg


def test_a_valid_detections2d_message_round_trips():
    msg = _good()
    assert decode(encode(msg), validate=validate_detections) == msg
    validate_detections(_good(classes=None))
    validate_detections(_good(classes=["person"]))
    validate_detections(make_detections_message(1, 0.0, [], []))  # looked, saw nothing


@pytest.mark.parametrize("change,field", [
    ({"schema": "tracker3d/detections2d@9"}, "schema"), ({"camera": 2}, "camera"), ({"camera": True}, "camera"),
    ({"t": "now"}, "t"), ({"t": float("nan")}, "t"), ({"frame": -1}, "frame"),
    ({"boxes": [[1, 2, 3]]}, r"boxes\[0\]"), ({"boxes": [[1, 2, 0, 5]]}, r"boxes\[0\]"),
    ({"scores": []}, "scores"), ({"scores": [1.5]}, r"scores\[0\]"), ({"classes": [1, 2]}, "classes"),
    ({"classes": [-4]}, r"classes\[0\]"), ({"boxes": "none"}, "boxes"),
])
def test_a_bad_detections2d_message_names_its_field(change, field):
    with pytest.raises(SchemaError, match=f"^{field}"):
        validate_detections(_good(**change))


def test_a_track_class_is_an_optional_field_of_tracks3d():
    tr = {"id": 1, "xyz": [0, 0, 1], "vel": [0, 0, 0], "cov": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
          "persistence": 1.0, "age_s": 0.5, "state": "tracked"}
    validate_message(make_message(0, 0, 0.0, [tr]))
    validate_message(make_message(0, 0, 0.0, [{**tr, "class": "person"}]))
    with pytest.raises(SchemaError, match=r"tracks\[0\].class"):
        validate_message(make_message(0, 0, 0.0, [{**tr, "class": 2.5}]))


class _Publisher:
    """A loopback XPUB socket standing in for a user's detector."""

    def __init__(self):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{self.port}"

    def wait_subscriber(self):
        assert self.sock.poll(5000), "the stream never subscribed"
        self.sock.recv()
        time.sleep(0.1)

    def send(self, payload: bytes | dict, topic: bytes = DET_TOPIC):
        self.sock.send_multipart([topic, payload if isinstance(payload, bytes) else encode(payload)])

    def close(self):
        self.sock.close(0)
        self.ctx.term()


def test_detection_stream_pairs_by_capture_time_and_counts_what_it_refuses():
    pub = _Publisher()
    src = DetectionStream(pub.endpoint, tolerance=0.01, single_after_s=0.3, poll_ms=10)
    try:
        pub.wait_subscriber()
        pub.send(b"\xff not json")
        pub.send({"schema": "tracks3d?", "camera": 0})
        pub.send(make_detections_message(0, 0.0, [[10, 10, 20, 40]], [0.9], frame=17))
        pub.send(make_detections_message(1, 0.004, [[30, 10, 20, 40], [60, 10, 20, 40]], [0.8, 0.7]))
        p = src.read(timeout=3.0)
        assert isinstance(p, DetectionPair) and (p.t0, p.t1) == (0.0, 0.004) and p.index == 17
        assert len(p.boxes0) == 1 and len(p.boxes1) == 2
        assert np.allclose(p.boxes1.boxes[0], [30, 10, 50, 50])  # xywh -> xyxy
        pub.send(make_detections_message(0, 0.5, [], []))  # its partner never comes
        pub.send(make_detections_message(1, 1.0, [], []))
        pub.send(make_detections_message(0, 1.0, [], []))
        p = src.read(timeout=3.0)
        assert (p.t0, p.t1) == (1.0, 1.0)
        pub.send(make_detections_message(0, 1.5, [[1, 1, 5, 5]], [1.0]))  # camera 1 went silent
        p = src.read(timeout=3.0)
        assert p.t0 == 1.5 and p.boxes1 is None and np.isnan(p.t1)
        pub.send(make_detections_message(1, 1.2, [], []))  # older than the time camera 1 coasted to
        time.sleep(0.3)
        st = src.stats
        assert (st.invalid, st.dropped0, st.single0, st.late, st.pairs) == (2, 1, 1, 1, 3)
    finally:
        src.close()
        pub.close()


def test_detection_publisher_feeds_a_detection_stream_and_refuses_bad_boxes():
    ep = f"tcp://127.0.0.1:{_free_port()}"
    with DetectionPublisher(ep) as pub:
        src = DetectionStream(ep, tolerance=0.01, poll_ms=10)
        try:
            got = None
            for k in range(100):  # until the subscription has reached the publisher
                pub.publish(0, k * 0.1, [[5, 5, 10, 20]], [0.5], classes=["ball"])
                pub.publish(1, k * 0.1, [[7, 5, 10, 20]], [0.6], classes=["ball"])
                got = src.read(timeout=0.05) or got
                if got is not None:
                    break
            assert got is not None and list(got.boxes0.classes) == ["ball"]
            with pytest.raises(SchemaError, match=r"boxes\[0\]"):
                pub.publish(0, 99.0, [[5, 5, -1, 20]], [0.5])
        finally:
            src.close()
    with pytest.raises(StreamError, match="not a loopback address"):
        DetectionPublisher("tcp://8.8.8.8:5557")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_live_det_source_tracks_what_the_example_publisher_sends(tmp_path):
    d = SLICE / "clean"
    ep, out_ep = f"tcp://127.0.0.1:{_free_port()}", f"tcp://127.0.0.1:{_free_port()}"
    out = tmp_path / "live.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    live = subprocess.Popen([sys.executable, "-m", "tracker3d.cli", "live", "--det-source", ep, "--calib",
                             str(d / "calib.yaml"), "--publish", out_ep, "--seconds", "12", "--out", str(out),
                             "--gate", "hits", "--min-hits", "2", "--window", "3"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        pub = subprocess.run([sys.executable, str(ROOT / "examples" / "detections_publisher.py"), str(d),
                              "--endpoint", ep, "--speed", "8", "--wait", "30"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert pub.returncode == 0, pub.stderr
        text, _ = live.communicate(timeout=60)
    finally:
        if live.poll() is None:
            live.kill()
    assert live.returncode == 0, text
    assert "received 80" in text and "refused 0" in text
    msgs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(msgs) >= 30  # 40 pairs sent; a loaded machine may overwrite a few (live keeps the newest)
    assert [m["frame"] for m in msgs] == sorted(m["frame"] for m in msgs) and msgs[-1]["frame"] == 39
    xyz = np.array([t["xyz"] for m in msgs for t in m["tracks"]])
    assert len(xyz) > 10 and all(m["frame_id"] == "world" for m in msgs)
    assert 0.5 < np.median(xyz[:, 2]) < 1.3  # box centres of people, in WildTrack's world frame


def test_live_without_cameras_or_det_source_is_one_line(capsys):
    assert main(["live", "--calib", str(SLICE / "clean" / "calib.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--det-source" in err


def _run(pairs, calib, anchor="center"):
    pipe = StereoPipeline(calib, PipelineConfig(threads=False, anchor=anchor), gate=HitCountGate(2, 3.0))
    frames = [pipe.step(p) for p in pairs]
    pipe.close()
    return frames


def test_bottom_anchor_tracks_the_feet_center_anchor_the_body():
    src = DetectionFolder.open_folder(SLICE / "clean")
    pairs = list(src)
    z = {a: np.array([t["xyz"][2] for f in _run(pairs, src.calib, a) for t in f.tracks]) for a in ("center", "bottom")}
    assert len(z["center"]) > 10 and len(z["bottom"]) > 10
    # WildTrack's world z is up from the ground: box centres at about 0.9 m, bottom edges near 0.
    assert 0.7 < np.median(z["center"]) < 1.1
    assert abs(np.median(z["bottom"])) < 0.25


def test_class_labels_pass_through_to_the_3d_tracks():
    src = DetectionFolder.open_folder(SLICE / "clean")
    pairs = []
    for p in src:
        b0 = Boxes2D(p.boxes0.boxes, p.boxes0.scores, np.full(len(p.boxes0), "person", dtype=object))
        pairs.append(DetectionPair(p.index, p.t0, p.t1, b0, p.boxes1))
    tracks = [t for f in _run(pairs, src.calib) for t in f.tracks]
    assert tracks and all(t.get("class") == "person" for t in tracks)
    validate_message(make_message(0, 0, 0.0, tracks))
    plain = [t for f in _run(list(DetectionFolder.open_folder(SLICE / "clean")), src.calib) for t in f.tracks]
    assert all("class" not in t for t in plain)


def test_det_file_class_column_reaches_the_replayed_tracks(tmp_path):
    d = tmp_path / "dets"
    d.mkdir()
    for name in ("calib.yaml", "frames.csv"):
        (d / name).write_bytes((SLICE / "clean" / name).read_bytes())
    for cam in (0, 1):  # column 8 = class 2 in camera 0, none in camera 1
        rows = (SLICE / "clean" / f"det{cam}.txt").read_text().splitlines()
        (d / f"det{cam}.txt").write_text("".join(",".join(r.split(",")[:7] + ([str(2)] if cam == 0 else ["-1"]))
                                                 + "\n" for r in rows))
    assert set(read_det_file(d / "det0.txt")[1].classes) == {2}
    assert read_det_file(d / "det1.txt")[1].classes is None
    out = tmp_path / "t.jsonl"
    assert main(["replay", str(d), "--out", str(out), "--gate", "hits", "--min-hits", "2", "--window", "3"]) == 0
    tracks = [t for line in out.read_text().splitlines() for t in json.loads(line)["tracks"]]
    assert tracks and {t["class"] for t in tracks} == {2}


def test_csv_output_carries_the_class_column(tmp_path):
    from tracker3d.outputs.files import read_csv

    d = tmp_path / "dets"
    d.mkdir()
    for name in ("calib.yaml", "frames.csv", "det1.txt"):
        (d / name).write_bytes((SLICE / "clean" / name).read_bytes())
    rows = (SLICE / "clean" / "det0.txt").read_text().splitlines()
    (d / "det0.txt").write_text("".join(",".join(r.split(",")[:7] + ["5"]) + "\n" for r in rows))
    out = tmp_path / "t.csv"
    assert main(["replay", str(d), "--out", str(out), "--gate", "hits", "--min-hits", "2", "--window", "3"]) == 0
    got = read_csv(out)
    assert got and {r["class"] for r in got} == {"5"}
