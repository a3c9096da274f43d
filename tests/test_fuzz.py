"""Bad input, generated: the calibration loaders, the recording reader, the message decoder and
the persistence history checks get many malformed inputs (hypothesis, derandomized so the suite
is deterministic); each must give its clear error or a valid result, never a crash or a hang."""
import json
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calib import load_calibration, save_calibration
from calib.errors import CalibrationError
from calib.rigs import make_rig
from persistence.errors import HistoryError
from persistence.features import check_history
from streams import RecordingReader, StreamError
from streams.errors import SchemaError
from streams.messages import decode, encode, make_message
from tracker3d.detect.detections import Detections
from tracker3d.sim import get_scene, write_sim_recording
from tracker3d.track2d.tracker import ByteTracker

FUZZ = settings(max_examples=150, derandomize=True, deadline=2000,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

VALID = make_message(3, 7, 0.25, [{
    "id": 1, "xyz": [0.1, 0.2, 3.0], "vel": [0.0, 0.1, 0.0], "cov": [[1e-4, 0, 0], [0, 1e-4, 0], [0, 0, 1e-3]],
    "persistence": 0.9, "age_s": 1.0, "state": "tracked", "cam0": {"track": 4, "uv": [100.0, 50.0]}, "cam1": None}])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


PATHS = [p for p in _paths(VALID) if p]


@FUZZ
@given(st.binary(max_size=300))
def test_decoder_on_random_bytes(data):
    try:
        decode(data)
    except SchemaError:
        pass


@FUZZ
@given(st.sampled_from(PATHS), json_values)
def test_decoder_on_mutated_messages(path, value):
    msg = json.loads(json.dumps(VALID))
    node = msg
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    try:
        payload = json.dumps(msg).encode()
    except ValueError:
        return
    try:
        out = decode(payload)
    except SchemaError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert decode(encode(out)) == out  # whatever is accepted is valid and round-trips


@pytest.fixture(scope="module")
def calib_text(tmp_path_factory):
    p = tmp_path_factory.mktemp("c") / "stereo.yaml"
    save_calibration(make_rig(), p)
    return p.read_text()


def _mutate_text(text: str, data) -> str:
    lines = text.splitlines(keepends=True)
    kind = data.draw(st.sampled_from(["drop", "replace", "truncate", "junk", "swap"]))
    i = data.draw(st.integers(0, len(lines) - 1))
    if kind == "drop":
        del lines[i]
    elif kind == "replace":
        tokens = lines[i].split(":")
        lines[i] = tokens[0] + ": " + data.draw(st.sampled_from(["nan", "-1", "1e400", "[]", "abc", "", "0", "!!x"])) \
            + "\n"
    elif kind == "truncate":
        return text[:data.draw(st.integers(0, len(text)))]
    elif kind == "junk":
        lines[i] = data.draw(st.text(max_size=40)) + "\n"
    else:
        j = data.draw(st.integers(0, len(lines) - 1))
        lines[i], lines[j] = lines[j], lines[i]
    return "".join(lines)


@FUZZ
@given(st.data())
def test_calibration_loader_on_mutated_files(tmp_path, calib_text, data):
    suffix = data.draw(st.sampled_from([".yaml", ".json", ".toml"]))
    p = tmp_path / f"c{suffix}"
    if suffix == ".yaml":
        p.write_text(_mutate_text(calib_text, data))
    elif suffix == ".json":
        p.write_text(data.draw(st.text(max_size=200)) if data.draw(st.booleans()) else
                     json.dumps(data.draw(json_values)))
    else:
        p.write_text(data.draw(st.text(max_size=200)))
    try:
        c = load_calibration(p)
    except CalibrationError as e:
        assert str(p.name) in str(e) and "\n" not in str(e)
        return
    assert np.all(np.isfinite(c.cam0.K)) and c.baseline > 0  # anything accepted is a usable rig


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    return write_sim_recording(get_scene("default").with_(seconds=0.3, width=160, height=120, n_objects=2),
                               tmp_path_factory.mktemp("r") / "rec", seed=1)


@settings(FUZZ, max_examples=60, deadline=5000)  # each example copies and reads a recording
@given(st.data())
def test_recording_reader_on_mutated_folders(tmp_path, recording, data):
    d = tmp_path / "r"
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(recording, d)
    target = data.draw(st.sampled_from(["frames.csv", "meta.json", "cam0.mjpg", "calib.yaml"]))
    p = d / target
    raw = p.read_bytes()
    kind = data.draw(st.sampled_from(["truncate", "flip", "junk"]))
    if kind == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw)))]
    elif kind == "flip" and raw:
        b = bytearray(raw)
        for _ in range(data.draw(st.integers(1, 20))):
            k = data.draw(st.integers(0, len(b) - 1))
            b[k] = data.draw(st.integers(0, 255))
        raw = bytes(b)
    else:
        raw = data.draw(st.binary(max_size=200))
    p.write_bytes(raw)
    try:
        with RecordingReader(d) as rec:
            n = sum(1 for _ in rec)
    except (StreamError, CalibrationError) as e:
        assert "\n" not in str(e)
        return
    assert n <= 9


@FUZZ
@given(st.lists(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=7, max_size=7),
                max_size=6))
def test_history_checks(rows):
    h = np.array(rows, dtype=float).reshape(-1, 7)
    try:
        out = check_history(h)
    except HistoryError as e:
        assert "\n" not in str(e)
        return
    assert len(out) and np.all(np.isfinite(out)) and np.all(np.diff(out[:, 0]) >= 0)


@FUZZ
@given(st.lists(st.tuples(*[st.floats(allow_nan=True, allow_infinity=True, width=32)] * 5), max_size=8))
def test_tracker_survives_bad_detections(boxes):
    """NaN, inf, negative and inverted boxes are dropped; the tracker never fails on them."""
    arr = np.array([b[:4] for b in boxes], dtype=float).reshape(-1, 4)
    scores = np.array([b[4] for b in boxes], dtype=float)
    tr = ByteTracker(image_size=(640, 480))
    for k in range(3):
        tr.update(Detections.from_boxes(arr, scores), k / 30)
    assert np.all(np.isfinite(tr.kf.x))
