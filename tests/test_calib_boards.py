"""Stereo calibration from real (OpenCV sample) and rendered (ChArUco) board images."""
import cv2
import numpy as np
import pytest

from calib import Board, CalibrationError, calibrate_stereo, load_calibration, save_calibration
from calib.rigs import make_rig
from tracker3d.cli import main


def test_opencv_pairs_match_opencv_procedure(opencv_calibration):
    calib, rep = opencv_calibration
    assert rep.pairs_total == 13 and rep.pairs_used == 13
    assert rep.rms_stereo < 0.7
    assert rep.epipolar_error < 0.5
    assert 3.2 < calib.baseline < 3.45
    assert calib.T[0] < -3.2 and abs(calib.T[1]) < 0.2 and abs(calib.T[2]) < 0.2
    angle = np.degrees(np.linalg.norm(cv2.Rodrigues(calib.R)[0]))
    assert angle < 1.0
    fx = calib.cam0.K[0, 0]
    assert 510 < fx < 545
    assert all(p.used and p.rms_left < 1.5 and p.rms_right < 1.5 for p in rep.pairs)


def test_save_reload_round_trip(opencv_calibration, tmp_path):
    calib, _ = opencv_calibration
    for ext in ("yaml", "xml", "json"):
        out = save_calibration(calib, tmp_path / f"stereo.{ext}")
        back = load_calibration(out)
        np.testing.assert_allclose(back.cam0.K, calib.cam0.K, rtol=1e-12)
        np.testing.assert_allclose(back.cam1.dist, calib.cam1.dist, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(back.R, calib.R, atol=1e-14)
        np.testing.assert_allclose(back.T, calib.T, atol=1e-14)
        assert back.cam0.image_size == (640, 480)
        np.testing.assert_allclose(back.F, calib.F, atol=1e-12)


def test_cli_calibrate(opencv_pairs, tmp_path, capsys):
    out = tmp_path / "stereo.yaml"
    rc = main(["calibrate", "--left", str(DATA_GLOB("left")), "--right", str(DATA_GLOB("right")),
               "--board", "9x6", "--square", "0.025", "--out", str(out), "--report", str(tmp_path / "r.json")])
    assert rc == 0
    calib = load_calibration(out)
    assert 0.08 < calib.baseline < 0.087  # 3.34 squares of 25 mm
    assert "13/13" in capsys.readouterr().out


def DATA_GLOB(side):
    from conftest import DATA
    return DATA / "opencv_stereo" / f"{side}*.jpg"


def test_cli_bad_board_and_glob(tmp_path, capsys):
    assert main(["calibrate", "--left", "nope*.png", "--right", "x", "--board", "9x6", "--square", "1",
                 "--out", str(tmp_path / "a.yaml")]) == 2
    assert "no files match" in capsys.readouterr().err
    assert main(["calibrate", "--left", "a", "--right", "b", "--board", "9by6", "--square", "1",
                 "--out", str(tmp_path / "a.yaml")]) == 2
    assert "expected COLSxROWS" in capsys.readouterr().err


def test_rejects_pairs_without_board(opencv_pairs, tmp_path):
    left, right = opencv_pairs
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((480, 640), 127, np.uint8))
    calib, rep = calibrate_stereo(list(left) + [str(blank)], list(right) + [right[0]], Board.parse("9x6", 1.0))
    assert rep.pairs_total == 14 and rep.pairs_used == 13
    assert "left: chessboard not found" in rep.pairs[-1].reason
    assert rep.rms_stereo < 0.7


def test_mismatched_image_size_is_clear(opencv_pairs, tmp_path):
    left, right = opencv_pairs
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((100, 100), np.uint8))
    with pytest.raises(CalibrationError, match="small.png: image is 100x100, expected 640x480"):
        calibrate_stereo(list(left[:3]) + [str(small)], list(right[:4]), Board.parse("9x6", 1.0))


def _render_board(board_img, board_px_per_unit, cam, R, t):
    """Warp a board image into a camera (pinhole, no distortion) for pose x = R X + t."""
    S = np.diag([1.0 / board_px_per_unit, 1.0 / board_px_per_unit, 1.0])  # board pixels -> board units
    H = cam.K @ np.column_stack([R[:, 0], R[:, 1], t]) @ S
    w, h = cam.image_size
    img = cv2.warpPerspective(board_img, H, (w, h), flags=cv2.INTER_AREA, borderValue=90)
    return img


def test_charuco_stereo_calibration_recovers_rig(tmp_path):
    board = Board.parse("7x5", 0.04, kind="charuco", marker=0.03)
    ppu = 2000  # board image pixels per metre
    board_img = board.charuco().generateImage((int(7 * 0.04 * ppu), int(5 * 0.04 * ppu)), marginSize=0)
    truth = make_rig(dist=(0, 0, 0, 0, 0))
    rng = np.random.default_rng(3)
    left, right = [], []
    for i in range(10):
        rvec = rng.normal(0, 0.3, 3)  # board roughly facing the cameras
        R0, _ = cv2.Rodrigues(rvec)
        t0 = np.array([-0.14 + rng.normal(0, 0.04), -0.1 + rng.normal(0, 0.03), 0.55 + rng.uniform(0, 0.25)])
        R1, t1 = truth.R @ R0, truth.R @ t0 + truth.T
        for cam, R, t, lst, name in ((truth.cam0, R0, t0, left, "l"), (truth.cam1, R1, t1, right, "r")):
            img = _render_board(board_img, ppu, cam, R, t)
            img = np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)
            p = tmp_path / f"{name}{i:02d}.png"
            cv2.imwrite(str(p), img)
            lst.append(str(p))
    calib, rep = calibrate_stereo(left, right, board)
    assert rep.pairs_used >= 8
    assert rep.rms_stereo < 0.5
    assert abs(calib.baseline - truth.baseline) / truth.baseline < 0.03
    dR = np.degrees(np.linalg.norm(cv2.Rodrigues(calib.R @ truth.R.T)[0]))
    assert dR < 0.5
    np.testing.assert_allclose(calib.cam0.K[0, 0], truth.cam0.K[0, 0], rtol=0.03)


def test_calibrate_out_with_an_unsupported_suffix_is_refused_up_front(tmp_path, capsys):
    """`--out x.txt` used to write YAML (OpenCV's default) that every loader then refused."""
    assert main(["calibrate", "--left", str(DATA_GLOB("left")), "--right", str(DATA_GLOB("right")),
                 "--board", "9x6", "--square", "0.025", "--out", str(tmp_path / "x.txt")]) == 2
    err = capsys.readouterr().err
    assert "x.txt: cannot write a calibration as '.txt' (supported: .yaml, .yml, .xml, .json)" in err
    assert not (tmp_path / "x.txt").exists() and "detecting" not in err
