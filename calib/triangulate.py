"""Triangulation of matched pixels with first-order covariance and validity flags.

All 3D points are in camera 0's frame (OpenCV axes, unit of the calibration's T).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .stereo import StereoCalibration

OK = 0
BEHIND_CAM0 = 1
BEHIND_CAM1 = 2
PARALLEL_RAYS = 4
NON_FINITE = 8

FLAG_NAMES = {BEHIND_CAM0: "behind camera 0", BEHIND_CAM1: "behind camera 1",
              PARALLEL_RAYS: "near-parallel rays", NON_FINITE: "non-finite input"}


@dataclass
class Triangulation:
    """Triangulated points. Invalid points hold NaN in xyz/cov and a non-zero flag bitmask."""

    xyz: np.ndarray  # (N,3) camera 0 frame
    cov: np.ndarray  # (N,3,3) first-order covariance from pixel noise
    reproj_error: np.ndarray  # (N,) RMS over both views of the reprojection error, pixels
    parallax_deg: np.ndarray  # (N,) angle between the two viewing rays at the point, degrees
    flags: np.ndarray  # (N,) int bitmask of OK/BEHIND_CAM0/BEHIND_CAM1/PARALLEL_RAYS/NON_FINITE

    @property
    def valid(self) -> np.ndarray:
        return self.flags == OK

    def describe(self, i: int) -> str:
        """Human-readable reasons a point was flagged ('ok' if valid)."""
        f = int(self.flags[i])
        return "ok" if f == 0 else ", ".join(n for b, n in FLAG_NAMES.items() if f & b)


def _dlt(n0: np.ndarray, n1: np.ndarray, R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Batched linear triangulation in normalised coordinates; returns (N,4) homogeneous points."""
    P0 = np.hstack([np.eye(3), np.zeros((3, 1))])
    P1 = np.hstack([R, T[:, None]])
    A = np.stack([
        n0[:, :1] * P0[2] - P0[0], n0[:, 1:] * P0[2] - P0[1],
        n1[:, :1] * P1[2] - P1[0], n1[:, 1:] * P1[2] - P1[1],
    ], axis=1)  # (N,4,4)
    A /= np.linalg.norm(A, axis=2, keepdims=True)
    _, _, vt = np.linalg.svd(A)
    return vt[:, -1, :]


def _project_ideal(K: np.ndarray, Xc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ideal pixels (N,2) of camera-frame points and their Jacobian d(uv)/d(Xc) (N,2,3)."""
    x, y, z = Xc[:, 0], Xc[:, 1], Xc[:, 2]
    fx, fy, s, cx, cy = K[0, 0], K[1, 1], K[0, 1], K[0, 2], K[1, 2]
    iz = 1.0 / z
    u = fx * x * iz + s * y * iz + cx
    v = fy * y * iz + cy
    J = np.zeros((len(Xc), 2, 3))
    J[:, 0, 0] = fx * iz
    J[:, 0, 1] = s * iz
    J[:, 0, 2] = -(fx * x + s * y) * iz * iz
    J[:, 1, 1] = fy * iz
    J[:, 1, 2] = -fy * y * iz * iz
    return np.column_stack([u, v]), J


def _residual_and_jacobian(X, u0, u1, K0, K1, R, T, W0, W1):
    """Whitened residuals (N,4) and Jacobian (N,4,3); W maps ideal-pixel error to unit noise."""
    p0, J0 = _project_ideal(K0, X)
    p1, J1 = _project_ideal(K1, X @ R.T + T)
    r = np.concatenate([np.einsum("nij,nj->ni", W0, p0 - u0), np.einsum("nij,nj->ni", W1, p1 - u1)], axis=1)
    J = np.concatenate([W0 @ J0, W1 @ J1 @ R], axis=1)
    return r, J


def _undistort_jacobian(cam, uv: np.ndarray, h: float = 0.5) -> np.ndarray:
    """d(ideal pixel)/d(distorted pixel), (N,2,2), by central differences (h pixels)."""
    n = len(uv)
    pts = np.concatenate([uv + [h, 0], uv - [h, 0], uv + [0, h], uv - [0, h]])
    ideal = cam.undistort_points(pts).reshape(4, n, 2)
    A = np.empty((n, 2, 2))
    A[:, :, 0] = (ideal[0] - ideal[1]) / (2 * h)
    A[:, :, 1] = (ideal[2] - ideal[3]) / (2 * h)
    return A


def triangulate(
    calib: StereoCalibration,
    uv0: np.ndarray,
    uv1: np.ndarray,
    pixel_sigma: float | np.ndarray = 0.5,
    refine: bool = True,
    min_parallax_deg: float = 0.05,
    iterations: int = 5,
    covariance: bool = True,
) -> Triangulation:
    """Triangulate matches uv0[i] <-> uv1[i] (distorted pixels, Nx2 each).

    Linear DLT on undistorted coordinates, then (refine=True) Gauss-Newton on the reprojection
    error, weighted by the lens distortion's local Jacobian so that it is the maximum-likelihood
    point for isotropic noise in the distorted image. The covariance is (J^T W J)^-1 with J the
    Jacobian of both projections at the solution and W that noise's inverse (first order);
    pixel_sigma is the pixel noise standard deviation (scalar or per point), or per point, view
    and image axis as an (N, 4) array [x0, y0, x1, y1] (e.g. large along an axis where a box is
    cut by the image border, so that coordinate barely counts). Points behind either
    camera or seen along near-parallel rays are flagged and returned as NaN. covariance=False
    (with refine=False) skips the noise model: a quicker check of where matches land.
    """
    uv0 = np.asarray(uv0, dtype=np.float64).reshape(-1, 2)
    uv1 = np.asarray(uv1, dtype=np.float64).reshape(-1, 2)
    if uv0.shape != uv1.shape:
        raise ValueError(f"triangulate: uv0 has {len(uv0)} points, uv1 has {len(uv1)}")
    n = len(uv0)
    sig = np.asarray(pixel_sigma, dtype=np.float64)
    if sig.ndim == 2:
        if sig.shape != (n, 4):
            raise ValueError(f"triangulate: pixel_sigma per axis must be (N, 4) for {n} points, got {sig.shape}")
    else:
        sig = np.repeat(np.broadcast_to(sig, (n,))[:, None], 4, axis=1)
    if np.any(sig <= 0):
        raise ValueError("triangulate: pixel_sigma must be > 0 pixels")
    flags = np.zeros(n, dtype=np.int32)
    finite = np.all(np.isfinite(uv0), axis=1) & np.all(np.isfinite(uv1), axis=1) & np.all(np.isfinite(sig), axis=1)
    flags[~finite] |= NON_FINITE
    xyz = np.full((n, 3), np.nan)
    cov = np.full((n, 3, 3), np.nan)
    err = np.full(n, np.nan)
    par = np.full(n, np.nan)
    idx = np.flatnonzero(finite)
    if len(idx) == 0:
        return Triangulation(xyz, cov, err, par, flags)

    R, T, K0, K1 = calib.R, calib.T, calib.cam0.K, calib.cam1.K
    n0 = calib.cam0.normalize(uv0[idx])
    n1 = calib.cam1.normalize(uv1[idx])
    Xh = _dlt(n0, n1, R, T)
    w = Xh[:, 3]
    at_inf = np.abs(w) < 1e-12
    X = Xh[:, :3] / np.where(at_inf, 1.0, w)[:, None]
    # Ideal pixels of the measurements.
    u0 = n0 @ K0[:2, :2].T + K0[:2, 2]
    u1 = n1 @ K1[:2, :2].T + K1[:2, 2]

    # Whitening: pixel noise sigma in the distorted image becomes sigma * A A^T in ideal pixels.
    need_w = refine or covariance
    W0 = _inv_or_nan(_undistort_jacobian(calib.cam0, uv0[idx])) / sig[idx, 0:2, None] if need_w else None
    W1 = _inv_or_nan(_undistort_jacobian(calib.cam1, uv1[idx])) / sig[idx, 2:4, None] if need_w else None

    z0 = X[:, 2]
    z1 = (X @ R.T + T)[:, 2]
    degenerate = np.zeros(len(idx), bool)  # geometry without a unique solution (e.g. |T| ~ 0)
    if need_w:  # a lens model that cannot be inverted there (a point far outside the image)
        degenerate |= ~(np.all(np.isfinite(W0), axis=(1, 2)) & np.all(np.isfinite(W1), axis=(1, 2)))
    ok = ~at_inf & (z0 > 0) & (z1 > 0) & ~degenerate
    if refine and np.any(ok):
        Xr = X[ok]
        failed = np.zeros(len(Xr), bool)
        for _ in range(iterations):
            r, J = _residual_and_jacobian(Xr, u0[ok], u1[ok], K0, K1, R, T, W0[ok], W1[ok])
            JtJ = np.einsum("nki,nkj->nij", J, J)
            Jtr = np.einsum("nki,nk->ni", J, r)
            step = _solve_or_nan(JtJ + 1e-12 * np.eye(3), -Jtr)
            failed |= ~np.all(np.isfinite(step), axis=1)
            step[failed] = 0.0
            Xr = Xr + step
            if np.max(np.abs(step)) < 1e-9 * max(1.0, float(np.max(np.abs(Xr)))):
                break
        X[ok] = Xr
        degenerate[np.flatnonzero(ok)[failed]] = True
        z0 = X[:, 2]
        z1 = (X @ R.T + T)[:, 2]

    # Parallax: angle between the rays from the two centres.
    d0 = X
    d1 = X - calib.center1
    cosang = np.einsum("ij,ij->i", d0, d1) / np.maximum(
        np.linalg.norm(d0, axis=1) * np.linalg.norm(d1, axis=1), 1e-300)
    ang = np.degrees(np.arccos(np.clip(cosang, -1.0, 1.0)))
    f = np.zeros(len(idx), dtype=np.int32)
    f[(z0 <= 0) | at_inf] |= BEHIND_CAM0
    f[(z1 <= 0) | at_inf] |= BEHIND_CAM1
    f[at_inf | degenerate | ~(ang >= min_parallax_deg)] |= PARALLEL_RAYS
    if covariance and np.any(f == 0):
        g = f == 0
        _, J = _residual_and_jacobian(X[g], u0[g], u1[g], K0, K1, R, T, W0[g], W1[g])
        cg = _inv_or_nan(np.einsum("nki,nkj->nij", J, J))
        f[np.flatnonzero(g)[~np.all(np.isfinite(cg), axis=(1, 2))]] |= PARALLEL_RAYS
        cov_all = np.full((len(idx), 3, 3), np.nan)
        cov_all[g] = cg
    flags[idx] = f
    good = f == 0
    if np.any(good):
        gi = idx[good]
        Xg = X[good]
        if covariance:
            cov[gi] = cov_all[good]
        xyz[gi] = Xg
        p0, p1 = calib.project(Xg)
        e = np.concatenate([p0 - uv0[gi], p1 - uv1[gi]], axis=1)
        err[gi] = np.sqrt(np.mean(e ** 2, axis=1) * 2.0)  # RMS of the two 2D error lengths
        par[gi] = ang[good]
    return Triangulation(xyz, cov, err, par, flags)


def _well_conditioned(A: np.ndarray) -> np.ndarray:
    """(N,) True where the (N, 3, 3) matrices are finite and safely invertible."""
    ok = np.all(np.isfinite(A), axis=(1, 2))
    if np.any(ok):
        c = np.full(len(A), np.inf)
        c[ok] = np.linalg.cond(A[ok])
        ok &= c < 1e12
    return ok


def _solve_or_nan(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched solve A x = b (N, 3, 3), (N, 3); NaN rows where A is singular or not finite
    (np.linalg.solve would raise LinAlgError for the whole batch)."""
    out = np.full(b.shape, np.nan)
    ok = _well_conditioned(A) & np.all(np.isfinite(b), axis=1)
    if np.any(ok):
        out[ok] = np.linalg.solve(A[ok], b[ok][..., None])[..., 0]
    return out


def _inv_or_nan(A: np.ndarray) -> np.ndarray:
    """Batched inverse of (N, 3, 3) matrices; NaN where singular or not finite."""
    out = np.full(A.shape, np.nan)
    ok = _well_conditioned(A)
    if np.any(ok):
        out[ok] = np.linalg.inv(A[ok])
    return out


def triangulation_error_bound(calib: StereoCalibration, points: np.ndarray, pixel_sigma: float) -> float:
    """Predicted RMS 3D error (same unit as T) of triangulating these points with pixel noise sigma.

    sqrt(mean trace(cov)) of the first-order covariance: the geometric limit a tracker is read against.
    """
    uv0, uv1 = calib.project(points)
    tri = triangulate(calib, uv0, uv1, pixel_sigma=pixel_sigma)
    tr = np.trace(tri.cov[tri.valid], axis1=1, axis2=2)
    return float(np.sqrt(np.mean(tr))) if len(tr) else float("nan")
