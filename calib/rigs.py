"""Synthetic stereo rigs with known geometry (for the simulator, tests and benchmarks)."""
from __future__ import annotations

import cv2
import numpy as np

from .camera import CameraModel
from .stereo import StereoCalibration


def make_rig(
    width: int = 640,
    height: int = 480,
    baseline: float = 0.2,
    hfov_deg: float = 62.0,
    toe_in_deg: float = 2.0,
    dist: tuple[float, ...] = (-0.12, 0.05, 0.0005, -0.0003, 0.0),
    dist1: tuple[float, ...] | None = None,
) -> StereoCalibration:
    """A plausible two-camera rig: camera 1 sits `baseline` metres to the right of camera 0
    (x axis), both toed in by `toe_in_deg` in total, with barrel distortion `dist`."""
    fx = 0.5 * width / np.tan(np.radians(hfov_deg) / 2)
    K0 = np.array([[fx, 0, width / 2 - 0.5 + 3.2], [0, fx * 1.001, height / 2 - 0.5 - 2.1], [0, 0, 1]])
    K1 = np.array([[fx * 1.004, 0, width / 2 - 0.5 - 2.7], [0, fx * 1.005, height / 2 - 0.5 + 1.6], [0, 0, 1]])
    R, _ = cv2.Rodrigues(np.array([0.002, np.radians(toe_in_deg), 0.001]))
    C1 = np.array([baseline, 0.0, 0.0])  # camera 1 centre in camera 0 frame
    T = -R @ C1
    d1 = dist if dist1 is None else dist1
    cam0 = CameraModel(K0, np.array(dist, dtype=float), (width, height))
    cam1 = CameraModel(K1, np.array(d1, dtype=float) * 1.05, (width, height))
    return StereoCalibration(cam0, cam1, R, T)
