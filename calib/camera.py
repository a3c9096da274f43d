"""Pinhole camera with OpenCV lens distortion (pixels in, pixels out)."""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-10)


@dataclass(frozen=True)
class CameraModel:
    """Intrinsics of one camera.

    K: 3x3 camera matrix (pixels). dist: OpenCV distortion coefficients
    (k1, k2, p1, p2[, k3[, k4, k5, k6[, s1..s4[, tx, ty]]]]). image_size: (width, height) pixels.
    """

    K: np.ndarray
    dist: np.ndarray = field(default_factory=lambda: np.zeros(5))
    image_size: tuple[int, int] = (640, 480)

    def __post_init__(self) -> None:
        object.__setattr__(self, "K", np.asarray(self.K, dtype=np.float64).reshape(3, 3))
        object.__setattr__(self, "dist", np.asarray(self.dist, dtype=np.float64).ravel())
        object.__setattr__(self, "image_size", (int(self.image_size[0]), int(self.image_size[1])))

    @property
    def width(self) -> int:
        return self.image_size[0]

    @property
    def height(self) -> int:
        return self.image_size[1]

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """Project Nx3 points in this camera's frame (metres, OpenCV axes) to Nx2 distorted pixels."""
        pts = np.asarray(points_cam, dtype=np.float64).reshape(-1, 3)
        if len(pts) == 0:
            return np.zeros((0, 2))
        uv, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), self.K, self.dist)
        return uv.reshape(-1, 2)

    def normalize(self, uv: np.ndarray) -> np.ndarray:
        """Distorted pixels (Nx2) -> undistorted normalised image coordinates (Nx2, z=1 plane)."""
        pts = np.asarray(uv, dtype=np.float64).reshape(-1, 1, 2)
        if len(pts) == 0:
            return np.zeros((0, 2))
        if hasattr(cv2, "undistortPointsIter"):  # OpenCV 4.x
            out = cv2.undistortPointsIter(pts, self.K, self.dist, None, None, _UNDISTORT_CRITERIA)
        else:  # OpenCV 5 folded the criteria into undistortPoints
            out = cv2.undistortPoints(pts, self.K, self.dist, None, None, None, _UNDISTORT_CRITERIA)
        return out.reshape(-1, 2)

    def undistort_points(self, uv: np.ndarray) -> np.ndarray:
        """Distorted pixels (Nx2) -> pixels of the ideal distortion-free camera with the same K."""
        xy = self.normalize(uv)
        return xy @ self.K[:2, :2].T + self.K[:2, 2]

    def distort_ideal(self, uv_ideal: np.ndarray) -> np.ndarray:
        """Ideal (undistorted) pixels (Nx2) -> distorted pixels, the inverse of undistort_points."""
        uv = np.asarray(uv_ideal, dtype=np.float64).reshape(-1, 2)
        xy = (uv - self.K[:2, 2]) @ np.linalg.inv(self.K[:2, :2]).T
        return self.project(np.column_stack([xy, np.ones(len(xy))]))

    def scaled(self, width: int, height: int) -> "CameraModel":
        """The same camera at another resolution (same field of view)."""
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[0] *= sx
        K[1] *= sy
        return CameraModel(K, self.dist.copy(), (width, height))
