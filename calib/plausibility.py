"""Plausibility of a stereo calibration: the mistakes that pass the format checks but track
nothing (T in millimetres, a focal length of 1 px, a rotated R, a baseline of nanometres).

`check_plausible` refuses (CalibrationError, one line) what is certainly wrong for a stereo
tracker with pinhole cameras, and returns one-line warnings for what is only unusual:

- refused: a horizontal field of view of 170 deg or more (fx of a few pixels: K normalised?),
  a baseline under 1 micrometre, two views that share no point in front of the rig at any depth
  (R rotated, or R/T of another convention);
- warned: |T| over 10 where the optical axes are within 60 deg of each other, over 100 where
  they are further apart (units of T are metres: millimetres or centimetres?; a 10 m rig of
  near-parallel or toed-in cameras is rare, while cameras that face each other across a room or
  a square are tens of metres apart, as WildTrack's, 31 m with axes 152 deg apart), |T| under
  1 cm, a field of view under 1 deg, views that overlap by under 5 % of camera 0's image.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import CalibrationError
from .stereo import StereoCalibration

MAX_FOV_DEG = 170.0
MIN_FOV_DEG = 1.0
MIN_BASELINE = 1e-6  # refused below (unit of T; a micrometre)
SMALL_BASELINE = 0.01  # warned below (a centimetre)
LARGE_BASELINE = 10.0  # warned above: a 10 m rig is rare, 10 mm or cm common (T in millimetres, centimetres) ...
FACING_AXES_DEG = 60.0  # ... where the optical axes are within this angle (parallel or toed-in cameras); cameras
FACING_BASELINE = 100.0  # further apart face a shared space (a room, a square): warned above this
LOW_OVERLAP = 0.05


def field_of_view_deg(fx: float, width: int) -> float:
    """Horizontal field of view (degrees) of a pinhole camera with focal length fx pixels."""
    return math.degrees(2.0 * math.atan(width / (2.0 * fx)))


def view_overlap(calib: StereoCalibration, grid: int = 15) -> float:
    """The largest fraction of camera 0's image (a grid of ideal pixels) that camera 1 also sees,
    in front of both cameras, over depths from 1/20 to 10^4 baselines (converging wide-baseline
    rigs, such as room or stadium cameras tens of metres apart, see their common area at a
    fraction of a baseline)."""
    w, h = calib.cam0.image_size
    u, v = np.meshgrid(np.linspace(0, w, grid), np.linspace(0, h, grid))
    rays = np.column_stack([u.ravel(), v.ravel(), np.ones(u.size)]) @ np.linalg.inv(calib.cam0.K).T
    K1, (w1, h1) = calib.cam1.K, calib.cam1.image_size
    best = 0.0
    for depth in calib.baseline * np.geomspace(0.05, 1e4, 40):
        X1 = (rays * depth) @ calib.R.T + calib.T
        z = X1[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = (X1 / z[:, None]) @ K1.T
        inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] <= w1) & (uv[:, 1] >= 0) & (uv[:, 1] <= h1)
        best = max(best, float(inside.mean()))
    return best


def axes_angle_deg(calib: StereoCalibration) -> float:
    """Angle between the two cameras' optical axes, degrees (0: parallel)."""
    return math.degrees(math.acos(max(-1.0, min(1.0, float(calib.R[2, 2])))))


def check_plausible(calib: StereoCalibration, path: Any = "<calibration>") -> list[str]:
    """CalibrationError for a calibration that cannot work; the warnings for one that looks wrong."""
    warnings = []
    for i, cam in enumerate((calib.cam0, calib.cam1)):
        name, fx = f"M{i + 1}", float(cam.K[0, 0])
        fov = field_of_view_deg(fx, cam.width)
        if fov >= MAX_FOV_DEG:
            raise CalibrationError(f"{path}: field '{name}': fx = {fx:g} px gives a {fov:.1f} deg field of view over "
                                   f"{cam.width} px (expected a focal length in pixels, about 0.5-2x the image width; "
                                   "is K normalised?)")
        if fov < MIN_FOV_DEG:
            warnings.append(f"{path}: field '{name}': fx = {fx:g} px gives a {fov:.2f} deg field of view over "
                            f"{cam.width} px: is the focal length in pixels?")
    b = calib.baseline
    if b < MIN_BASELINE:
        raise CalibrationError(f"{path}: field 'T': baseline |T| = {b:.3g} (expected metres: the distance "
                               "between the two cameras)")
    axes = axes_angle_deg(calib)
    limit = LARGE_BASELINE if axes < FACING_AXES_DEG else FACING_BASELINE
    if b > limit:
        kind = "near-parallel or toed-in" if axes < FACING_AXES_DEG else "facing"
        warnings.append(f"{path}: field 'T': baseline |T| = {b:g} with optical axes {axes:.0f} deg apart: {kind} "
                        f"cameras more than {limit:g} m apart are rare; T is in metres (if in millimetres: "
                        f"{b / 1000:g} m, centimetres: {b / 100:g} m?)")
    elif b < SMALL_BASELINE:
        warnings.append(f"{path}: field 'T': baseline |T| = {b:g} m is under 1 cm: depth will be very noisy "
                        "(is T in metres?)")
    overlap = view_overlap(calib)
    if overlap == 0.0:
        raise CalibrationError(f"{path}: fields 'R', 'T': the two cameras' views share no point in front of the "
                               "rig at any depth (R rotated, or R/T in another convention than x1 = R x0 + T?)")
    if overlap < LOW_OVERLAP:
        warnings.append(f"{path}: fields 'R', 'T': the two views overlap by {100 * overlap:.1f} % of camera 0's "
                        "image at best: few objects can be tracked in 3D")
    return warnings
