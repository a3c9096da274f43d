"""Calibration files: OpenCV FileStorage and aniposelib TOML, world poses, malformed inputs."""
from pathlib import Path
import re

import cv2
import numpy as np
import pytest

from calib import CalibrationError, from_world_poses, load_calibration, save_calibration
from calib.rigs import make_rig


@pytest.fixture
def good_yaml(tmp_path):
    return save_calibration(make_rig(), tmp_path / "rig.yaml")


def _replace_block(text: str, name: str, new: str) -> str:
    """Replace the YAML matrix block `name: !!opencv-matrix ...` (up to the next key) by `new`."""
    pat = re.compile(rf"^{name}:.*?(?=^\w)", re.S | re.M)
    assert pat.search(text), name
    return pat.sub(new, text, count=1)


def _mat(name, rows, cols, data):
    vals = ", ".join(str(v) for v in data)
    return f"{name}: !!opencv-matrix\n   rows: {rows}\n   cols: {cols}\n   dt: d\n   data: [ {vals} ]\n"


@pytest.mark.parametrize("edit, field, what", [
    (lambda t: _replace_block(t, "M1", ""), "M1", "missing"),
    (lambda t: _replace_block(t, "R", _mat("R", 2, 2, [1, 0, 0, 1])), "R", "expected 3x3"),
    (lambda t: _replace_block(t, "T", _mat("T", 3, 1, [".Nan", 0, 0])), "T", "NaN"),
    (lambda t: _replace_block(t, "R", _mat("R", 3, 3, [1, 0.2, 0, 0, 1, 0, 0, 0, 1])), "R", "not a rotation"),
    (lambda t: _replace_block(t, "R", _mat("R", 3, 3, [-1, 0, 0, 0, -1, 0, 0, 0, -1])), "R", "not a rotation"),
    (lambda t: _replace_block(t, "T", _mat("T", 3, 1, [0, 0, 0])), "T", "zero baseline"),
    (lambda t: _replace_block(t, "D2", _mat("D2", 1, 3, [0, 0, 0])), "D2", "distortion coefficients"),
    (lambda t: _replace_block(t, "M2", _mat("M2", 3, 3, [500, 0, 320, 0, -500, 240, 0, 0, 1])), "M2",
     "not a camera matrix"),
    # OpenCV 5.0's FileNode.mat() corrupts the heap on these (rows x cols != data): read by hand.
    (lambda t: _replace_block(t, "T", "T: !!opencv-matrix\n   rows: 3\n   dt: d\n   data: [ 0.1, 0, 0 ]\n"), "T",
     "integer 'rows' and 'cols'"),
    (lambda t: _replace_block(t, "R", _mat("R", 3, 3, [1, 0, 0, 1])), "R", "(9 values) but 'data' has 4"),
    (lambda t: _replace_block(t, "M1", _mat("M1", 3, 3, [500, 0, 320, 0, "abc", 240, 0, 0, 1])), "M1",
     "not a number"),
    (lambda t: re.sub(r"image_width: \d+\n", "", t), "image_size", "missing"),
    (lambda t: t.replace("image_width: 640", "image_width: -640"), "image_size", "positive integers"),
])
def test_malformed_opencv_file_names_the_field(good_yaml, edit, field, what):
    text = good_yaml.read_text()
    good_yaml.write_text(edit(text))
    with pytest.raises(CalibrationError) as ei:
        load_calibration(good_yaml)
    msg = str(ei.value)
    assert str(good_yaml) in msg and f"'{field}'" in msg and what in msg
    assert "\n" not in msg


@pytest.mark.parametrize("cut", [0.3, 0.5, 0.8])
def test_truncated_file_is_clear(good_yaml, cut):
    text = good_yaml.read_text()
    good_yaml.write_text(text[: int(len(text) * cut)])
    with pytest.raises(CalibrationError) as ei:
        load_calibration(good_yaml)
    assert str(good_yaml) in str(ei.value) and "\n" not in str(ei.value)


def test_missing_empty_unknown(tmp_path):
    with pytest.raises(CalibrationError, match="not found"):
        load_calibration(tmp_path / "none.yaml")
    (tmp_path / "e.yaml").write_text("")
    with pytest.raises(CalibrationError, match="empty"):
        load_calibration(tmp_path / "e.yaml")
    (tmp_path / "c.txt").write_text("x")
    with pytest.raises(CalibrationError, match="unknown calibration format"):
        load_calibration(tmp_path / "c.txt")
    (tmp_path / "g.yaml").write_text("%YAML:1.0\n---\nM1: [1, 2\n")
    with pytest.raises(CalibrationError, match="g.yaml"):
        load_calibration(tmp_path / "g.yaml")


@pytest.mark.parametrize("name, text, line", [
    ("g.yaml", "this: is: [not yaml\n", 1),
    ("g.xml", '<?xml version="1.0"?>\n<opencv_storage><M1 type_id="opencv-matrix"><rows>3', 2),
])
def test_a_file_opencv_cannot_parse_is_named_with_its_line(tmp_path, name, text, line):
    """OpenCV's parse error as 'line N: what', not OpenCV's own source file and line cut at 160
    characters mid-word ('... in function '/x/g.yaml(1): Invalid or u)')."""
    (tmp_path / name).write_text(text)
    with pytest.raises(CalibrationError) as ei:
        load_calibration(tmp_path / name)
    msg = str(ei.value)
    assert msg.startswith(f"{tmp_path / name}: not a readable OpenCV FileStorage file (line {line}: ")
    assert msg.endswith(")") and ".cpp" not in msg and "OpenCV(" not in msg and "\n" not in msg


def test_world_transform_round_trip(tmp_path):
    rig = make_rig()
    rvec0, tvec0 = np.array([0.3, -0.2, 0.1]), np.array([0.5, 1.0, 3.0])
    R0, _ = cv2.Rodrigues(rvec0)
    R1 = rig.R @ R0
    t1 = rig.R @ tvec0 + rig.T
    world = from_world_poses(rig.cam0, rvec0, tvec0, rig.cam1, cv2.Rodrigues(R1)[0], t1)
    np.testing.assert_allclose(world.R, rig.R, atol=1e-12)
    np.testing.assert_allclose(world.T, rig.T, atol=1e-12)
    Xw = np.random.default_rng(0).normal(size=(20, 3))
    np.testing.assert_allclose(world.to_world(world.from_world(Xw)), Xw, atol=1e-12)
    np.testing.assert_allclose(world.from_world(Xw), Xw @ R0.T + tvec0, atol=1e-12)
    back = load_calibration(save_calibration(world, tmp_path / "w.yaml"))
    assert back.has_world
    np.testing.assert_allclose(back.R_world, R0, atol=1e-12)
    np.testing.assert_allclose(back.t_world, tvec0, atol=1e-12)


def _anipose_text(rig, rv0, tv0, rv1, tv1, extra=""):
    def cam(i, cm, rv, tv):
        return (f"[cam_{i}]\nname = \"{'AB'[i]}\"\nsize = [ {cm.width}, {cm.height},]\n"
                f"matrix = {np.asarray(cm.K).tolist()}\ndistortions = {cm.dist.tolist()}\n"
                f"rotation = {list(map(float, rv))}\ntranslation = {list(map(float, tv))}\n\n")
    return cam(0, rig.cam0, rv0, tv0) + cam(1, rig.cam1, rv1, tv1) + extra + \
        "[metadata]\nadjusted = false\nerror = 0.5\n"


def test_anipose_toml(tmp_path):
    rig = make_rig()
    rv0, tv0 = np.array([0.1, 0.2, -0.1]), np.array([0.2, -0.3, 2.0])
    R0, _ = cv2.Rodrigues(rv0)
    rv1 = cv2.Rodrigues(rig.R @ R0)[0].ravel()
    tv1 = rig.R @ tv0 + rig.T
    p = tmp_path / "calibration.toml"
    p.write_text(_anipose_text(rig, rv0, tv0, rv1, tv1))
    calib = load_calibration(p)
    np.testing.assert_allclose(calib.R, rig.R, atol=1e-9)
    np.testing.assert_allclose(calib.T, rig.T, atol=1e-9)
    np.testing.assert_allclose(calib.R_world, R0, atol=1e-9)
    assert calib.meta["camera_names"] == ["A", "B"]
    # malformed: NaN translation, missing matrix, a third camera, bad TOML
    bad = p.read_text().replace(f"translation = {list(map(float, tv0))}", "translation = [nan, 0.0, 1.0]")
    p.write_text(bad)
    with pytest.raises(CalibrationError, match=r"'cam_0.translation': contains NaN"):
        load_calibration(p)
    p.write_text(_anipose_text(rig, rv0, tv0, rv1, tv1).replace("matrix", "matrx", 1))
    with pytest.raises(CalibrationError, match=r"'cam_0.matrix': missing"):
        load_calibration(p)
    p.write_text(_anipose_text(rig, rv0, tv0, rv1, tv1, extra="[cam_2]\nname = \"C\"\n\n"))
    with pytest.raises(CalibrationError, match="exactly two cameras"):
        load_calibration(p)
    p.write_text("[cam_0\nname=")
    with pytest.raises(CalibrationError, match="not valid TOML"):
        load_calibration(p)
    p.write_text(_anipose_text(rig, rv0, tv0, rv0, tv0))
    with pytest.raises(CalibrationError, match="zero baseline"):
        load_calibration(p)


def test_cameras_of_different_sizes_keep_their_sizes_through_save_load_and_replay(tmp_path):
    from calib import StereoCalibration
    from streams import FramePair, RecordingReader, RecordingWriter, StreamError

    rig = make_rig()
    rig = StereoCalibration(rig.cam0, rig.cam1.scaled(320, 240), rig.R, rig.T)
    rv0, tv0 = np.zeros(3), np.zeros(3)
    p = tmp_path / "calibration.toml"
    p.write_text(_anipose_text(rig, rv0, tv0, cv2.Rodrigues(rig.R)[0].ravel(), rig.T))
    calib = load_calibration(p)
    assert calib.cam0.image_size == (640, 480) and calib.cam1.image_size == (320, 240)
    back = load_calibration(save_calibration(calib, tmp_path / "rig.yaml"))
    assert back.cam0.image_size == (640, 480) and back.cam1.image_size == (320, 240)
    np.testing.assert_allclose(back.cam1.K, calib.cam1.K)
    # A recording of the two cameras replays: each camera is checked against its own size.
    img0, img1 = np.zeros((480, 640, 3), np.uint8), np.zeros((240, 320, 3), np.uint8)
    with RecordingWriter(tmp_path / "rec", calib=back) as w:
        for i in range(3):
            w.write(FramePair(i, i / 30, i / 30, img0, img1 if i != 1 else None))
    with RecordingReader(tmp_path / "rec") as rec:
        pairs = list(rec)
    assert [p.img1.shape if p.img1 is not None else None for p in pairs] == [(240, 320, 3), None, (240, 320, 3)]
    with RecordingWriter(tmp_path / "wrong", calib=back) as w:
        w.write(FramePair(0, 0.0, 0.0, img0, img0))
    with pytest.raises(StreamError, match=r"cam1.mjpg: frames are 640x480 but the calibration expects 320x240"):
        list(RecordingReader(tmp_path / "wrong"))


def _with(rig, **kw):
    from calib import CameraModel, StereoCalibration

    cam0 = rig.cam0
    if "fx" in kw:
        K = cam0.K.copy()
        K[0, 0] = K[1, 1] = kw["fx"]
        cam0 = CameraModel(K, cam0.dist, cam0.image_size)
    return StereoCalibration(cam0, rig.cam1, kw.get("R", rig.R), kw.get("T", rig.T))


@pytest.mark.parametrize("change, match", [
    (dict(fx=1.0), r"field 'M1': fx = 1 px gives a 179.\d deg field of view"),
    (dict(T_scale=1e-9 / 0.2), r"field 'T': baseline \|T\| = 1e-09"),
    # cam1 turned to face away: no common view at any depth (90 deg still shares a close region, and
    # converging wide-baseline rigs are real: the loop warns when such a rig pairs nothing)
    (dict(rot_deg=180), r"fields 'R', 'T': the two cameras' views share no point in front of the rig"),
])
def test_a_calibration_that_cannot_work_is_refused_at_load(tmp_path, change, match):
    rig = make_rig()
    if "T_scale" in change:
        change = dict(T=rig.T * change["T_scale"])
    if "rot_deg" in change:
        change = dict(R=cv2.Rodrigues(np.array([0, np.radians(change["rot_deg"]), 0]))[0] @ rig.R)
    p = save_calibration(_with(rig, **change), tmp_path / "bad.yaml")
    with pytest.raises(CalibrationError, match=match):
        load_calibration(p)


@pytest.mark.parametrize("scale, match", [(1000.0, "if in millimetres"), (5000.0, "if in millimetres"),
                                          (0.02, "under 1 cm")])
def test_a_calibration_that_looks_wrong_is_warned_at_load(tmp_path, caplog, scale, match):
    rig = make_rig()
    p = save_calibration(_with(rig, T=rig.T * scale), tmp_path / "odd.yaml")
    with caplog.at_level("WARNING"):
        load_calibration(p)
    assert sum(match in r.getMessage() for r in caplog.records) == 1
    caplog.clear()
    with caplog.at_level("DEBUG", logger="calib.io"):  # the same file again: said once a process
        load_calibration(p)
    assert [r.levelname for r in caplog.records if match in r.getMessage()] == ["DEBUG"]
    caplog.clear()
    with caplog.at_level("WARNING"):  # another finding in the same file is news
        load_calibration(save_calibration(_with(rig, T=rig.T * scale * 1.5), p))
    assert sum(match in r.getMessage() for r in caplog.records) == 1
    caplog.clear()
    with caplog.at_level("WARNING"):
        load_calibration(save_calibration(rig, tmp_path / "fine.yaml"))
    assert not caplog.records


def test_degenerate_geometry_triangulates_to_flags_not_a_singular_matrix_error():
    from calib import triangulate
    from tracker3d.evaluation.eval3d import match_radius

    rig = make_rig()
    X = np.array([[0.1, 0.0, 3.0], [-0.358, 1.818, 10.248], [1.811, 1.694, 5.690]])
    for bad in (_with(rig, T=rig.T * 1e-9 / 0.2),
                _with(rig, R=cv2.Rodrigues(np.array([0, np.pi / 2, 0]))[0] @ rig.R)):
        tri = triangulate(bad, *bad.project(X), pixel_sigma=0.25)  # used to raise LinAlgError
        assert not tri.valid.any() and np.isnan(tri.xyz).all() and np.isnan(tri.cov).all()
        assert np.all(np.isfinite(match_radius(bad, X)))


def test_real_wide_baseline_rig_is_plausible():
    """WildTrack's cameras C1 and C2 (real, 31 m apart, converging on a square): the overlap check
    must find their common view at a fraction of the baseline, and nothing warns: the millimetres
    hint is for near-parallel cameras (a 31 mm rig never has axes 152 deg apart); the same rig with
    camera 1 turned parallel to camera 0 is warned."""
    from calib.plausibility import axes_angle_deg, check_plausible, view_overlap

    calib = load_calibration(Path(__file__).parent / "data" / "wildtrack_c1c2_slice" / "clean" / "calib.yaml")
    assert view_overlap(calib) > 0.2
    assert axes_angle_deg(calib) > 150
    assert check_plausible(calib) == []
    parallel = _with(calib, R=np.eye(3), T=np.array([31.35, 0.0, 0.0]))
    notes = check_plausible(parallel)
    assert len(notes) == 1 and "near-parallel or toed-in cameras more than 10 m apart" in notes[0]
    assert "millimetres: 0.03135 m" in notes[0]


@pytest.mark.parametrize("T_scale, yaw_deg, warned", [
    (1000.0, 35.0, True),  # a 0.2 m toed-in rig in millimetres
    (1000.0, 45.0, True),
    (100.0, 0.0, True),  # in centimetres
    (1.0, 35.0, False),  # the rig in metres
    (50.0, 0.0, False),  # 10 m exactly: left alone
    (None, 120.0, True),  # WildTrack's cameras (facing each other) moved 120 m apart: rare even so
    (None, 90.0, False),
])
def test_baseline_units_warning_follows_the_rigs_geometry(T_scale, yaw_deg, warned):
    """|T| in millimetres or centimetres: warned for parallel or toed-in cameras over 10 m apart,
    for cameras facing each other (axes 60 deg or more apart) only over 100 m. T_scale None: the
    real WildTrack rig (axes 152 deg apart) with its baseline set to yaw_deg metres."""
    from calib.plausibility import check_plausible

    if T_scale is None:
        wt = load_calibration(Path(__file__).parent / "data" / "wildtrack_c1c2_slice" / "clean" / "calib.yaml")
        odd = _with(wt, T=wt.T / np.linalg.norm(wt.T) * yaw_deg)
    else:
        rig = make_rig()
        R = cv2.Rodrigues(np.array([0.0, np.radians(yaw_deg), 0.0]))[0]
        odd = _with(rig, R=R, T=rig.T / np.linalg.norm(rig.T) * 0.2 * T_scale)
    notes = [n for n in check_plausible(odd) if "field 'T'" in n]
    assert bool(notes) == warned, notes
