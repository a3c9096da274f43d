"""Calibration files: OpenCV FileStorage (YAML/XML/JSON) and aniposelib TOML, with validation.

OpenCV file names follow OpenCV's stereo sample: ``M1 D1 M2 D2 R T`` plus ``image_width`` and
``image_height`` (``imageSize``/``image_size`` as [w, h] also read; camera 1's own size, when
given, as ``image_width2`` and ``image_height2``, else camera 0's), optional ``R_world`` and
``t_world`` (world -> camera 0: x0 = R_world X + t_world).
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
import re
import textwrap
import tomllib
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

from .camera import CameraModel
from .epipolar import is_rotation
from .errors import CalibrationError
from .plausibility import check_plausible
from .stereo import StereoCalibration, from_world_poses

log = logging.getLogger(__name__)

_DIST_LENGTHS = (4, 5, 8, 12, 14)
_ROT_TOL = 1e-5


def _fail(path: Any, field: str, what: str) -> CalibrationError:
    return CalibrationError(f"{path}: field '{field}': {what}")


def _check_matrix(path, name: str, value: Optional[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    if value is None:
        raise _fail(path, name, f"missing (expected a {'x'.join(map(str, shape))} matrix)")
    arr = np.asarray(value, dtype=np.float64)
    if arr.size != int(np.prod(shape)):
        raise _fail(path, name, f"expected {'x'.join(map(str, shape))} values, got shape {arr.shape}")
    arr = arr.reshape(shape)
    if not np.all(np.isfinite(arr)):
        raise _fail(path, name, "contains NaN or infinite values")
    return arr


def _check_dist(path, name: str, value: Optional[np.ndarray]) -> np.ndarray:
    if value is None:
        raise _fail(path, name, "missing (expected 4, 5, 8, 12 or 14 distortion coefficients)")
    arr = np.asarray(value, dtype=np.float64).ravel()
    if arr.size not in _DIST_LENGTHS:
        raise _fail(path, name, f"expected 4, 5, 8, 12 or 14 distortion coefficients, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise _fail(path, name, "contains NaN or infinite values")
    return arr


def _check_K(path, name: str, value) -> np.ndarray:
    K = _check_matrix(path, name, value, (3, 3))
    if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]) or K[1, 0] != 0 or K[2, 0] != 0:
        raise _fail(path, name, "not a camera matrix (expected fx, fy > 0 and last row 0 0 1)")
    return K


def _check_size(path, value, name: str = "image_size") -> tuple[int, int]:
    if value is None:
        raise _fail(path, name, "missing (expected image_width and image_height in pixels)")
    arr = np.asarray(value, dtype=np.float64).ravel()
    if arr.size != 2 or not np.all(np.isfinite(arr)) or np.any(arr < 1) or np.any(arr != np.round(arr)):
        raise _fail(path, name, f"expected two positive integers (width, height), got {arr.tolist()}")
    return int(arr[0]), int(arr[1])


def validate(calib: StereoCalibration, path: Any = "<calibration>") -> StereoCalibration:
    """Check a StereoCalibration built in memory; raises CalibrationError naming the field."""
    for i, cam in enumerate((calib.cam0, calib.cam1)):
        _check_K(path, f"M{i + 1}", cam.K)
        _check_dist(path, f"D{i + 1}", cam.dist)
        _check_size(path, cam.image_size, "image_size" if i == 0 else "image_size2")
    _check_matrix(path, "R", calib.R, (3, 3))
    if not is_rotation(calib.R, _ROT_TOL):
        raise _fail(path, "R", "not a rotation matrix (expected R R^T = I and det(R) = +1)")
    _check_matrix(path, "T", calib.T, (3,))
    if calib.baseline <= 1e-12:
        raise _fail(path, "T", "zero baseline (the two cameras are at the same place)")
    if calib.R_world is not None:
        _check_matrix(path, "R_world", calib.R_world, (3, 3))
        if not is_rotation(calib.R_world, _ROT_TOL):
            raise _fail(path, "R_world", "not a rotation matrix")
        _check_matrix(path, "t_world", calib.t_world, (3,))
    return calib


# ---- OpenCV FileStorage --------------------------------------------------------------------
def _fs_number(node: cv2.FileNode) -> Optional[float]:
    return float(node.real()) if not node.empty() and (node.isInt() or node.isReal()) else None


def _fs_numbers(node: cv2.FileNode) -> list[Optional[float]]:
    """The elements of a sequence node (or a lone number) as floats, None where not a number."""
    return [_fs_number(node.at(i)) for i in range(node.size())] if node.isSeq() else [_fs_number(node)]


def _fs_mat(fs: cv2.FileStorage, name: str, path: Any = "") -> Optional[np.ndarray]:
    """A number, a sequence of numbers or an opencv-matrix node as a float array (None if absent).

    An opencv-matrix is read field by field here, never with FileNode.mat(): OpenCV 5.0's
    mat() writes past its buffer when rows x cols disagrees with the data (heap corruption, then
    an abort), so a malformed file must be caught before OpenCV builds the matrix."""
    node = fs.getNode(name)
    if node.empty() or node.isNone():
        return None
    if node.isSeq():  # a non-number element becomes NaN, which the field checks report
        return np.asarray([np.nan if v is None else v for v in _fs_numbers(node)], dtype=np.float64)
    if node.isReal() or node.isInt():
        return np.asarray([node.real()])
    if not node.isMap():
        raise _fail(path, name, "expected a number, a list of numbers or an opencv-matrix")
    rows, cols, data = _fs_number(node.getNode("rows")), _fs_number(node.getNode("cols")), node.getNode("data")
    if not all(v is not None and np.isfinite(v) and v == int(v) and 0 <= v <= 1e6 for v in (rows, cols)):
        raise _fail(path, name, "opencv-matrix needs integer 'rows' and 'cols'")
    dt = node.getNode("dt")
    dt_text = dt.string() if not dt.empty() and dt.isString() else ""
    channels = int(dt_text[:-1]) if len(dt_text) > 1 and dt_text[:-1].isdigit() else 1
    if data.empty() or not (data.isSeq() or data.isInt() or data.isReal()):
        raise _fail(path, name, "opencv-matrix needs a 'data' list")
    values = _fs_numbers(data)
    expected = int(rows) * int(cols) * channels
    if len(values) != expected:
        raise _fail(path, name, f"opencv-matrix is {int(rows)}x{int(cols)}"
                    + (f"x{channels}" if channels > 1 else "") + f" ({expected} values) but 'data' has {len(values)}")
    if any(v is None for v in values):
        raise _fail(path, name, "opencv-matrix 'data' holds something that is not a number")
    arr = np.asarray(values, dtype=np.float64)
    return arr.reshape((int(rows), int(cols)) + ((channels,) if channels > 1 else ()))


def _fs_size(fs: cv2.FileStorage, path: Any = "", suffix: str = "") -> Optional[np.ndarray]:
    """image_width/image_height (camera 0, or camera 1's with suffix "2"), or image_size [w, h]."""
    w, h = fs.getNode("image_width" + suffix), fs.getNode("image_height" + suffix)
    if suffix:
        if w.empty() and h.empty():
            return None
        wh = (_fs_number(w), _fs_number(h))
        return np.asarray([np.nan, np.nan] if None in wh else wh)
    if not w.empty() and not h.empty():
        wh = (_fs_number(w), _fs_number(h))
        return np.asarray([np.nan, np.nan] if None in wh else wh)
    for key in ("image_size", "imageSize"):
        v = _fs_mat(fs, key, path)
        if v is not None:
            return v
    return None


def _parse_error(exc: BaseException) -> str:
    """OpenCV's parse error as 'line N: what' (its text is 'OpenCV(v) source.cpp:L: error: (-212:Parsing
    error) func in function 'FILE(N): what''), or its last line shortened at a word."""
    text = str(exc.__cause__ or exc).strip()
    m = re.search(r"in function '.*\((\d+)\): (.*)'$", text, re.S)
    if m:
        return f"line {m.group(1)}: {m.group(2).strip()}"
    return textwrap.shorten(text.splitlines()[-1], 160, placeholder=" ...") if text else "parse error"


def _load_opencv(path: Path) -> StereoCalibration:
    try:
        fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    except (cv2.error, SystemError) as exc:  # OpenCV 5 raises SystemError from the parser
        raise CalibrationError(f"{path}: not a readable OpenCV FileStorage file ({_parse_error(exc)})") from None
    if not fs.isOpened():
        raise CalibrationError(f"{path}: not a readable OpenCV FileStorage file")
    try:
        size = _check_size(path, _fs_size(fs, path))
        size2 = _fs_size(fs, path, "2")  # camera 1's own size when it differs (absent: the same)
        size2 = size if size2 is None else _check_size(path, size2, "image_size2")
        cams = []
        for i, wh in ((1, size), (2, size2)):
            K = _check_K(path, f"M{i}", _fs_mat(fs, f"M{i}", path))
            D = _check_dist(path, f"D{i}", _fs_mat(fs, f"D{i}", path))
            cams.append(CameraModel(K, D, wh))
        R = _check_matrix(path, "R", _fs_mat(fs, "R", path), (3, 3))
        T = _check_matrix(path, "T", _fs_mat(fs, "T", path), (3,))
        Rw, tw = _fs_mat(fs, "R_world", path), _fs_mat(fs, "t_world", path)
        if Rw is not None:
            Rw = _check_matrix(path, "R_world", Rw, (3, 3))
            tw = _check_matrix(path, "t_world", tw, (3,)) if tw is not None else np.zeros(3)
        elif tw is not None:
            raise _fail(path, "R_world", "missing while t_world is given")
    except (cv2.error, SystemError) as exc:
        raise CalibrationError(f"{path}: malformed OpenCV FileStorage content ({str(exc).strip()[-120:]})") from None
    finally:
        fs.release()
    return validate(StereoCalibration(cams[0], cams[1], R, T, Rw, tw), path)


WRITABLE_SUFFIXES = (".yaml", ".yml", ".xml", ".json")


def check_writable_suffix(path: str | os.PathLike) -> Path:
    """The path, if save_calibration can write it (an OpenCV FileStorage suffix); else CalibrationError
    (OpenCV would write YAML under any other name, which no loader then reads)."""
    path = Path(path)
    if path.suffix.lower() not in WRITABLE_SUFFIXES:
        raise CalibrationError(f"{path}: cannot write a calibration as '{path.suffix or '(no suffix)'}' "
                               f"(supported: {', '.join(WRITABLE_SUFFIXES)})")
    return path


def save_calibration(calib: StereoCalibration, path: str | os.PathLike) -> Path:
    """Write an OpenCV FileStorage file (.yaml/.yml/.xml/.json by extension)."""
    path = check_writable_suffix(path)
    validate(calib, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    if not fs.isOpened():
        raise CalibrationError(f"{path}: cannot open for writing")
    fs.writeComment(f"tracker3d stereo calibration, written {_dt.datetime.now().isoformat(timespec='seconds')}")
    fs.writeComment("x1 = R x0 + T (camera 0 -> camera 1); T in metres (or board square units)")
    fs.write("image_width", int(calib.cam0.width))
    fs.write("image_height", int(calib.cam0.height))
    fs.write("image_width2", int(calib.cam1.width))  # camera 1's (the cameras may differ)
    fs.write("image_height2", int(calib.cam1.height))
    fs.write("M1", calib.cam0.K)
    fs.write("D1", calib.cam0.dist.reshape(1, -1))
    fs.write("M2", calib.cam1.K)
    fs.write("D2", calib.cam1.dist.reshape(1, -1))
    fs.write("R", calib.R)
    fs.write("T", calib.T.reshape(3, 1))
    fs.write("E", calib.E)
    fs.write("F", calib.F)
    if calib.has_world:
        fs.write("R_world", calib.R_world)
        fs.write("t_world", calib.t_world.reshape(3, 1))
    for key in ("rms", "epipolar_error"):
        if key in calib.meta:
            fs.write(key, float(calib.meta[key]))
    fs.release()
    return path


# ---- aniposelib TOML -----------------------------------------------------------------------
def _load_anipose(path: Path) -> StereoCalibration:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"{path}: not valid TOML ({exc})") from None
    sections = [k for k, v in data.items() if isinstance(v, dict) and k != "metadata"]
    if len(sections) < 2:
        raise _fail(path, "cam_0", f"expected two camera sections, found {len(sections)}")
    if len(sections) > 2:
        raise _fail(path, sections[2], "expected exactly two cameras (tracker3d is a stereo tracker)")
    cams, poses = [], []
    for name in sections:
        d = data[name]
        if d.get("fisheye"):
            raise _fail(path, f"{name}.fisheye", "fisheye cameras are not supported (expected pinhole)")
        size = _check_size(path, d.get("size"))
        K = _check_K(path, f"{name}.matrix", d.get("matrix"))
        D = _check_dist(path, f"{name}.distortions", d.get("distortions"))
        rvec = _check_matrix(path, f"{name}.rotation", d.get("rotation"), (3,))
        tvec = _check_matrix(path, f"{name}.translation", d.get("translation"), (3,))
        cams.append(CameraModel(K, D, size))
        poses.append((rvec, tvec))
    calib = from_world_poses(cams[0], *poses[0], cams[1], *poses[1])
    calib.meta["camera_names"] = [str(data[s].get("name", s)) for s in sections]
    return validate(calib, path)


_WARNED: set[tuple[str, str]] = set()  # (file, warning) pairs load_calibration has logged


def load_calibration(path: str | os.PathLike) -> StereoCalibration:
    """Load and validate a stereo calibration (.yaml/.yml/.xml/.json OpenCV, .toml aniposelib).

    Raises CalibrationError with one line naming the file and the field; what is certainly wrong
    for a stereo tracker is refused and what only looks wrong is logged (calib.plausibility).
    """
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path}: calibration file not found")
    if path.stat().st_size == 0:
        raise CalibrationError(f"{path}: calibration file is empty")
    if path.suffix.lower() == ".toml":
        calib = _load_anipose(path)
    elif path.suffix.lower() not in (".yaml", ".yml", ".xml", ".json"):
        raise CalibrationError(f"{path}: unknown calibration format (expected .yaml, .yml, .xml, .json or .toml)")
    else:
        calib = _load_opencv(path)
    for w in check_plausible(calib, path):
        # Once per file and finding in a process: a bench or an evaluation loads one file dozens
        # of times (the WildTrack bench printed the same line 50 times); later loads log at debug.
        key = (str(path.resolve()), w)
        (log.debug if key in _WARNED else log.warning)("%s", w)
        _WARNED.add(key)
    return calib
