"""Pure epipolar geometry: essential/fundamental matrices and point-to-epipolar distances."""
from __future__ import annotations

import numpy as np


def skew(v: np.ndarray) -> np.ndarray:
    """3x3 cross-product matrix [v]x."""
    x, y, z = np.asarray(v, dtype=np.float64).ravel()
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def essential_matrix(R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """E = [T]x R for x1 = R x0 + T (camera 0 -> camera 1)."""
    return skew(T) @ np.asarray(R, dtype=np.float64)


def fundamental_matrix(K0: np.ndarray, K1: np.ndarray, R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """F with u1^T F u0 = 0 for ideal (undistorted) pixels, normalised to ||F|| = 1."""
    F = np.linalg.inv(K1).T @ essential_matrix(R, T) @ np.linalg.inv(K0)
    return F / np.linalg.norm(F)


def _homog(uv: np.ndarray) -> np.ndarray:
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    return np.column_stack([uv, np.ones(len(uv))])


def sampson_distance(F: np.ndarray, uv0: np.ndarray, uv1: np.ndarray) -> np.ndarray:
    """First-order geometric (Sampson) distance, pixels, of matches uv0[i] <-> uv1[i].

    Inputs are ideal (undistorted) pixels, Nx2 each; returns N distances. It is the
    distance to the nearest pair of points that satisfies the epipolar constraint exactly.
    """
    x0, x1 = _homog(uv0), _homog(uv1)
    Fx0 = x0 @ F.T
    Ftx1 = x1 @ F
    num = np.einsum("ij,ij->i", x1, Fx0)
    den = Fx0[:, 0] ** 2 + Fx0[:, 1] ** 2 + Ftx1[:, 0] ** 2 + Ftx1[:, 1] ** 2
    return np.abs(num) / np.sqrt(np.maximum(den, 1e-300))


def sampson_distance_matrix(F: np.ndarray, uv0: np.ndarray, uv1: np.ndarray) -> np.ndarray:
    """Sampson distance (pixels) of every uv0[i] against every uv1[j]: an (N0, N1) matrix."""
    x0, x1 = _homog(uv0), _homog(uv1)
    Fx0 = x0 @ F.T  # (N0,3) epipolar lines in image 1
    Ftx1 = x1 @ F  # (N1,3) epipolar lines in image 0
    num = x1 @ Fx0.T  # (N1,N0)
    den = (Fx0[:, 0] ** 2 + Fx0[:, 1] ** 2)[None, :] + (Ftx1[:, 0] ** 2 + Ftx1[:, 1] ** 2)[:, None]
    return (np.abs(num) / np.sqrt(np.maximum(den, 1e-300))).T


def epipolar_line_error(F: np.ndarray, uv0: np.ndarray, uv1: np.ndarray) -> np.ndarray:
    """Per match |x1.F x0|/|l1| + |x0.F^T x1|/|l0|: OpenCV stereo_calib.cpp's check, pixels.

    (OpenCV's sample sums both point-to-line distances and divides by the number of points.)
    """
    x0, x1 = _homog(uv0), _homog(uv1)
    l1 = x0 @ F.T
    l0 = x1 @ F
    l1 /= np.linalg.norm(l1[:, :2], axis=1, keepdims=True)
    l0 /= np.linalg.norm(l0[:, :2], axis=1, keepdims=True)
    return np.abs(np.einsum("ij,ij->i", x1, l1)) + np.abs(np.einsum("ij,ij->i", x0, l0))


def is_rotation(R: np.ndarray, tol: float = 1e-6) -> bool:
    """True if R is a proper 3x3 rotation (orthonormal, det +1) within tol."""
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3) or not np.all(np.isfinite(R)):
        return False
    return bool(np.allclose(R @ R.T, np.eye(3), atol=tol) and abs(np.linalg.det(R) - 1.0) < tol)
