"""Two-camera rig: extrinsics, derived matrices, rectification, epipolar distances."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Optional

import cv2
import numpy as np

from .camera import CameraModel
from .epipolar import essential_matrix, fundamental_matrix, sampson_distance, sampson_distance_matrix


@dataclass(frozen=True)
class Rectification:
    """cv2.stereoRectify output: rotations R0, R1, new projections P0, P1 and disparity-to-depth Q."""

    R0: np.ndarray
    R1: np.ndarray
    P0: np.ndarray
    P1: np.ndarray
    Q: np.ndarray
    roi0: tuple[int, int, int, int]
    roi1: tuple[int, int, int, int]


@dataclass(frozen=True, eq=False)
class StereoCalibration:
    """Two cameras and the pose of camera 1 relative to camera 0.

    A point x0 in camera 0's frame (metres, OpenCV axes) is x1 = R @ x0 + T in camera 1's frame.
    Optional world transform: x0 = R_world @ X + t_world for a world point X (the rvec/tvec
    convention of OpenCV), so that 3D output can be given in world coordinates.
    """

    cam0: CameraModel
    cam1: CameraModel
    R: np.ndarray
    T: np.ndarray
    R_world: Optional[np.ndarray] = None
    t_world: Optional[np.ndarray] = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "R", np.asarray(self.R, dtype=np.float64).reshape(3, 3))
        object.__setattr__(self, "T", np.asarray(self.T, dtype=np.float64).reshape(3))
        if self.R_world is not None:
            object.__setattr__(self, "R_world", np.asarray(self.R_world, dtype=np.float64).reshape(3, 3))
            tw = np.zeros(3) if self.t_world is None else self.t_world
            object.__setattr__(self, "t_world", np.asarray(tw, dtype=np.float64).reshape(3))

    # ---- derived quantities -------------------------------------------------------------
    @property
    def baseline(self) -> float:
        """Distance between the camera centres, in the unit of T (metres by convention)."""
        return float(np.linalg.norm(self.T))

    @cached_property
    def E(self) -> np.ndarray:
        return essential_matrix(self.R, self.T)

    @cached_property
    def F(self) -> np.ndarray:
        """Fundamental matrix for ideal (undistorted) pixels: u1^T F u0 = 0."""
        return fundamental_matrix(self.cam0.K, self.cam1.K, self.R, self.T)

    @cached_property
    def P0(self) -> np.ndarray:
        """3x4 projection of camera 0 (ideal pixels), K0 [I | 0]."""
        return self.cam0.K @ np.hstack([np.eye(3), np.zeros((3, 1))])

    @cached_property
    def P1(self) -> np.ndarray:
        """3x4 projection of camera 1 (ideal pixels), K1 [R | T]."""
        return self.cam1.K @ np.hstack([self.R, self.T[:, None]])

    @property
    def center1(self) -> np.ndarray:
        """Camera 1's optical centre in camera 0's frame."""
        return -self.R.T @ self.T

    @property
    def has_world(self) -> bool:
        return self.R_world is not None

    def rectify(self, alpha: float = 0.0) -> Rectification:
        """Rectifying transforms (cv2.stereoRectify, zero-disparity at the principal points)."""
        R0, R1, P0, P1, Q, roi0, roi1 = cv2.stereoRectify(
            self.cam0.K, self.cam0.dist, self.cam1.K, self.cam1.dist, self.cam0.image_size,
            self.R, self.T, flags=cv2.CALIB_ZERO_DISPARITY, alpha=alpha,
        )
        return Rectification(R0, R1, P0, P1, Q, tuple(roi0), tuple(roi1))

    # ---- points ---------------------------------------------------------------------------
    def project(self, points_cam0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project Nx3 points (camera 0 frame, metres) into both images: (uv0, uv1) distorted pixels."""
        X = np.asarray(points_cam0, dtype=np.float64).reshape(-1, 3)
        return self.cam0.project(X), self.cam1.project(X @ self.R.T + self.T)

    def sampson(self, uv0: np.ndarray, uv1: np.ndarray) -> np.ndarray:
        """Sampson epipolar distance (ideal pixels) of matches given as distorted pixels."""
        return sampson_distance(self.F, self.cam0.undistort_points(uv0), self.cam1.undistort_points(uv1))

    def sampson_matrix(self, uv0: np.ndarray, uv1: np.ndarray) -> np.ndarray:
        """All-pairs Sampson distance (N0, N1) between distorted pixel sets of the two cameras."""
        return sampson_distance_matrix(
            self.F, self.cam0.undistort_points(uv0), self.cam1.undistort_points(uv1)
        )

    def to_world(self, points_cam0: np.ndarray) -> np.ndarray:
        """Camera 0 frame -> world frame (identity when the calibration has no world transform)."""
        X = np.asarray(points_cam0, dtype=np.float64).reshape(-1, 3)
        if not self.has_world:
            return X.copy()
        return (X - self.t_world) @ self.R_world

    def from_world(self, points_world: np.ndarray) -> np.ndarray:
        """World frame -> camera 0 frame."""
        X = np.asarray(points_world, dtype=np.float64).reshape(-1, 3)
        if not self.has_world:
            return X.copy()
        return X @ self.R_world.T + self.t_world

    def with_world(self, R_world: np.ndarray, t_world: np.ndarray) -> "StereoCalibration":
        return StereoCalibration(self.cam0, self.cam1, self.R, self.T, R_world, t_world, dict(self.meta))


def from_world_poses(
    cam0: CameraModel, rvec0: np.ndarray, tvec0: np.ndarray,
    cam1: CameraModel, rvec1: np.ndarray, tvec1: np.ndarray,
) -> StereoCalibration:
    """Stereo rig from each camera's world pose (rvec, tvec as OpenCV writes them: x_i = R_i X + t_i).

    The world transform is kept, so 3D output can be reported in world coordinates.
    """
    R0, _ = cv2.Rodrigues(np.asarray(rvec0, dtype=np.float64).reshape(3, 1))
    R1, _ = cv2.Rodrigues(np.asarray(rvec1, dtype=np.float64).reshape(3, 1))
    t0 = np.asarray(tvec0, dtype=np.float64).reshape(3)
    t1 = np.asarray(tvec1, dtype=np.float64).reshape(3)
    R = R1 @ R0.T
    T = t1 - R @ t0
    return StereoCalibration(cam0, cam1, R, T, R_world=R0, t_world=t0)
