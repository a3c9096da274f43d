"""Stereo calibration from board image pairs, with a report of what was used and rejected."""
from __future__ import annotations

import glob
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import cv2
import numpy as np

from .boards import Board, BoardDetection, BoardDetector
from .camera import CameraModel
from .epipolar import epipolar_line_error
from .errors import CalibrationError
from .stereo import StereoCalibration

log = logging.getLogger(__name__)

_STEREO_CRITERIA = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 100, 1e-6)


@dataclass
class PairResult:
    left: str
    right: str
    used: bool
    reason: str = ""
    n_points: int = 0
    rms_left: float = float("nan")
    rms_right: float = float("nan")


@dataclass
class CalibrationReport:
    """What a stereo calibration achieved. Errors are in pixels."""

    image_size: tuple[int, int]
    pairs_total: int
    pairs_used: int
    rms_left: float
    rms_right: float
    rms_stereo: float
    epipolar_error: float
    baseline: float
    pairs: list[PairResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        lines = [
            f"pairs used           {self.pairs_used}/{self.pairs_total}",
            f"image size           {self.image_size[0]}x{self.image_size[1]} px",
            f"RMS left / right     {self.rms_left:.3f} / {self.rms_right:.3f} px",
            f"RMS stereo           {self.rms_stereo:.3f} px",
            f"avg epipolar error   {self.epipolar_error:.3f} px (OpenCV stereo_calib formula)",
            f"baseline |T|         {self.baseline:.4f} (unit of --square)",
        ]
        for p in self.pairs:
            tag = (f"{p.rms_left:.3f} / {p.rms_right:.3f} px" if p.used else f"REJECTED: {p.reason}")
            lines.append(f"  {Path(p.left).name:>16s} {Path(p.right).name:>16s}  {tag}")
        return "\n".join(lines)


def expand_glob(pattern: str, what: str) -> list[str]:
    """Sorted file list for a glob; CalibrationError if it matches nothing."""
    files = sorted(glob.glob(os.path.expanduser(pattern)))
    if not files:
        raise CalibrationError(f"{what} '{pattern}': no files match")
    return files


def _read_gray(path: str, size: Optional[tuple[int, int]]) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise CalibrationError(f"{path}: not a readable image")
    if size is not None and (img.shape[1], img.shape[0]) != size:
        raise CalibrationError(
            f"{path}: image is {img.shape[1]}x{img.shape[0]}, expected {size[0]}x{size[1]} like the first image")
    return img


def _epipolar_error(calib: StereoCalibration, uv0: Sequence[np.ndarray], uv1: Sequence[np.ndarray]) -> float:
    a = np.concatenate([calib.cam0.undistort_points(u) for u in uv0])
    b = np.concatenate([calib.cam1.undistort_points(u) for u in uv1])
    return float(np.mean(epipolar_line_error(calib.F, a, b)))


def calibrate_stereo(
    left: Sequence[str],
    right: Sequence[str],
    board: Board,
    fix_intrinsics: bool = False,
    outlier_factor: float = 4.0,
    outlier_min_px: float = 2.0,
    progress: Optional[Callable[[Iterable], Iterable]] = None,
) -> tuple[StereoCalibration, CalibrationReport]:
    """Calibrate a stereo rig from image pairs left[i] <-> right[i] of a Board.

    Each camera is calibrated alone first (its RMS is reported), then cv2.stereoCalibrate refines
    both with R, T (fix_intrinsics=True keeps the per-camera intrinsics). Pairs whose stereo error
    exceeds outlier_factor x the median (and outlier_min_px) are rejected and the calibration rerun.
    """
    if len(left) != len(right):
        raise CalibrationError(f"--left matches {len(left)} images but --right matches {len(right)}")
    if len(left) == 0:
        raise CalibrationError("no image pairs given")
    detector = BoardDetector(board)
    objp_all = board.object_points()
    pairs: list[PairResult] = []
    dets: list[tuple[Optional[BoardDetection], Optional[BoardDetection]]] = []
    size = None
    it = range(len(left))
    for i in (progress(it) if progress else it):
        g0 = _read_gray(left[i], size)
        size = size or (g0.shape[1], g0.shape[0])
        g1 = _read_gray(right[i], size)
        d0, r0 = detector.detect(g0)
        d1, r1 = detector.detect(g1)
        dets.append((d0, d1))
        reason = "; ".join(f"{side}: {r}" for side, r in (("left", r0), ("right", r1)) if r)
        pairs.append(PairResult(left[i], right[i], used=not reason, reason=reason))

    # Per-camera intrinsics from every view where that camera saw the board.
    cams, rms_cam = [], []
    for side in (0, 1):
        views = [d[side] for d in dets if d[side] is not None]
        if len(views) < 3:
            raise CalibrationError(
                f"{'left' if side == 0 else 'right'} camera: board found in {len(views)} images, need at least 3")
        obj = [objp_all[v.ids] for v in views]
        img = [v.uv.astype(np.float32).reshape(-1, 1, 2) for v in views]
        rms, K, D, _, _ = cv2.calibrateCamera(obj, img, size, None, None)
        cams.append(CameraModel(K, D.ravel(), size))
        rms_cam.append(float(rms))
        log.info("camera %d: %d views, RMS %.3f px", side, len(views), rms)

    def common(i: int):
        d0, d1 = dets[i]
        ids = np.intersect1d(d0.ids, d1.ids)
        s0 = {k: j for j, k in enumerate(d0.ids)}
        s1 = {k: j for j, k in enumerate(d1.ids)}
        return (objp_all[ids], d0.uv[[s0[k] for k in ids]], d1.uv[[s1[k] for k in ids]])

    for i, p in enumerate(pairs):
        if p.used:
            o, _, _ = common(i)
            if len(o) < board.min_corners():
                p.used, p.reason = False, f"only {len(o)} corners seen by both cameras"
            p.n_points = len(o)

    flags = cv2.CALIB_FIX_INTRINSIC if fix_intrinsics else cv2.CALIB_USE_INTRINSIC_GUESS
    while True:
        used = [i for i, p in enumerate(pairs) if p.used]
        if len(used) < 3:
            raise CalibrationError(f"only {len(used)} usable image pairs, need at least 3")
        data = [common(i) for i in used]
        obj = [d[0] for d in data]
        uv0 = [d[1].astype(np.float32).reshape(-1, 1, 2) for d in data]
        uv1 = [d[2].astype(np.float32).reshape(-1, 1, 2) for d in data]
        rms, K0, D0, K1, D1, R, T, _, _, _, _, per_view = cv2.stereoCalibrateExtended(
            obj, uv0, uv1, cams[0].K.copy(), cams[0].dist.copy(), cams[1].K.copy(), cams[1].dist.copy(),
            size, np.eye(3), np.zeros((3, 1)), flags=flags, criteria=_STEREO_CRITERIA)
        per_view = np.asarray(per_view).reshape(-1, 2)
        worst = per_view.max(axis=1)
        limit = max(outlier_factor * float(np.median(worst)), outlier_min_px)
        bad = [used[j] for j in np.flatnonzero(worst > limit)]
        for j, i in enumerate(used):
            pairs[i].rms_left, pairs[i].rms_right = map(float, per_view[j])
        if not bad:
            break
        for i in bad:
            pairs[i].used = False
            pairs[i].reason = f"stereo error {worst[used.index(i)]:.2f} px > {limit:.2f} px (outlier)"
            log.warning("rejecting pair %s: %s", Path(pairs[i].left).name, pairs[i].reason)

    calib = StereoCalibration(CameraModel(K0, D0.ravel(), size), CameraModel(K1, D1.ravel(), size), R, T)
    epi = _epipolar_error(calib, [d[1] for d in data], [d[2] for d in data])
    calib.meta.update(rms=float(rms), epipolar_error=epi)
    report = CalibrationReport(size, len(pairs), len(used), rms_cam[0], rms_cam[1], float(rms), epi,
                               calib.baseline, pairs)
    return calib, report
