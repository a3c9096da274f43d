"""Triangulation of matched pixels with first-order covariance and validity flags.

All 3D points are in camera 0's frame (OpenCV axes, unit of the calibration's T).
"""
from __future__ import annotations

import weakref
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


@dataclass(frozen=True)
class _RigConstants:
    """Per-calibration arrays of the triangulation, computed once per StereoCalibration."""

    P2: np.ndarray  # (4, 4) third rows [P0[2], P0[2], P1[2], P1[2]] of the normalised projections
    P01: np.ndarray  # (4, 4) first rows [P0[0], P0[1], P1[0], P1[1]]
    K2: np.ndarray  # (2, 1, 2, 2) K[:2, :2] of each camera, broadcast over (camera, point)
    Mt: np.ndarray  # (2, 3, 3) and
    t: np.ndarray  # (2, 1, 3): camera frames of camera-0-frame points X, X @ Mt + t
    M: np.ndarray  # (2, 1, 3, 3) d(camera frame)/d(camera 0 frame): identity, R
    eye: np.ndarray  # (3, 3) Levenberg-style damping of the Gauss-Newton normal matrix
    center1: np.ndarray  # (3,) camera 1's centre in camera 0's frame


_RIG_CONSTANTS: weakref.WeakKeyDictionary[StereoCalibration, _RigConstants] = weakref.WeakKeyDictionary()


def _constants(calib: StereoCalibration) -> _RigConstants:
    """The calibration's triangulation constants (cached: a StereoCalibration is immutable)."""
    c = _RIG_CONSTANTS.get(calib)
    if c is None:
        P0 = np.hstack([np.eye(3), np.zeros((3, 1))])
        P1 = np.hstack([calib.R, calib.T[:, None]])
        M = np.stack([np.eye(3), calib.R])
        c = _RigConstants(np.stack([P0[2], P0[2], P1[2], P1[2]]), np.stack([P0[0], P0[1], P1[0], P1[1]]),
                          np.stack([calib.cam0.K[:2, :2], calib.cam1.K[:2, :2]])[:, None],
                          M.transpose(0, 2, 1).copy(), np.stack([np.zeros(3), calib.T])[:, None],
                          M[:, None], 1e-12 * np.eye(3), calib.center1)
        _RIG_CONSTANTS[calib] = c
    return c


def _dlt(nn: np.ndarray, c: _RigConstants) -> np.ndarray:
    """Batched linear triangulation of normalised coordinates nn (2,N,2) (camera 0's, camera 1's);
    returns (N,4) homogeneous points."""
    # Rows n0x P0[2] - P0[0], n0y P0[2] - P0[1], n1x P1[2] - P1[0], n1y P1[2] - P1[1], unit length.
    A = nn.transpose(1, 0, 2).reshape(-1, 4)[:, :, None] * c.P2 - c.P01  # (N,4,4)
    A /= np.sqrt((A * A).sum(axis=2, keepdims=True))
    # The right singular vector of A's smallest singular value is the eigenvector of A^T A's
    # smallest eigenvalue: eigh of the 4 x 4 product is ~1.7x faster than a batched SVD, and the
    # same point to ~1e-11 (relative) where the two smallest singular values are apart, which a
    # two-view DLT's are unless the point is degenerate (flagged below either way).
    return np.linalg.eigh(A.transpose(0, 2, 1) @ A)[1][:, :, 0]


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


def _normal_equations(X: np.ndarray, n: np.ndarray, WK: np.ndarray,
                      c: _RigConstants) -> tuple[np.ndarray, np.ndarray]:
    """J^T J (N,3,3) and J^T r (N,3) of the whitened reprojection residuals r of both views at X.

    n: (2,N,2) measured normalised coordinates per camera; WK: (2,N,2,2) W @ K[:2,:2], with W
    mapping ideal-pixel error to unit noise. The ideal pixel of a camera-frame point Xc is
    K[:2,:2] Xc[:2]/z + K[:2,2], so the whitened residual is WK (Xc[:2]/z - n) and its
    Jacobian WK [I | -Xc[:2]/z] / z @ (d Xc / d X), the latter identity or R."""
    Xc = X @ c.Mt + c.t  # (2,N,3) in each camera's frame
    iz = 1.0 / Xc[..., 2:]
    xy = Xc[..., :2] * iz  # (2,N,2) normalised projection
    E = np.empty(xy.shape + (4,))  # [d(xy)/dX | xy - n] (2,N,2,4)
    E[..., :3] = (c.M[..., :2, :] - xy[..., None] * c.M[..., 2:, :]) * iz[..., None]
    E[..., 3] = xy - n
    WE = WK @ E  # [J | r] of each camera
    H = WE[..., :3].swapaxes(-1, -2) @ WE  # (2,N,3,4)
    H = H[0] + H[1]
    return H[..., :3], H[..., 3]


_H = 0.5  # central-difference step of the lens Jacobian, pixels
_NEIGHBOURS = np.array([[0.0, 0.0], [_H, 0.0], [-_H, 0.0], [0.0, _H], [0.0, -_H]])[:, None]  # (5,1,2)


def _normalize_into(cam, uv: np.ndarray, out: np.ndarray, jac: np.ndarray | None) -> None:
    """Normalised undistorted coordinates (N,2) of distorted pixels into `out` and (jac not None)
    d(normalised)/d(distorted pixel), (N,2,2), into `jac` by central differences (_H pixels):
    one undistortion call for the points and their four neighbours."""
    if jac is None:
        out[...] = cam.normalize(uv)
        return
    n = len(uv)
    xy = cam.normalize((uv + _NEIGHBOURS).reshape(-1, 2))
    out[...] = xy[:n]
    d = xy[n:].reshape(2, 2, n, 2)  # (pixel axis, +/-, point, normalised axis)
    jac[...] = ((d[:, 0] - d[:, 1]) / (2 * _H)).transpose(1, 2, 0)


def triangulate(
    calib: StereoCalibration,
    uv0: np.ndarray,
    uv1: np.ndarray,
    pixel_sigma: float | np.ndarray = 0.5,
    refine: bool = True,
    min_parallax_deg: float = 0.05,
    iterations: int = 5,
    covariance: bool = True,
    reprojection: bool = True,
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
    reprojection=False leaves reproj_error NaN (two projections fewer: the tracking loop's calls).
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
    elif sig.ndim == 0:
        sig = np.full((n, 4), float(sig))  # (two nested broadcast_to calls cost ~10x more)
    else:
        sig = np.broadcast_to(np.broadcast_to(sig, (n,))[:, None], (n, 4))
    if (sig <= 0).any():
        raise ValueError("triangulate: pixel_sigma must be > 0 pixels")
    with np.errstate(over="ignore", invalid="ignore"):  # inf - inf, or an overflow: the slow path
        all_finite = n and np.isfinite(uv0.sum() + uv1.sum() + sig.sum())  # a NaN or inf makes the sum so
    if all_finite:
        idx = None
    else:
        finite = np.isfinite(uv0).all(axis=1) & np.isfinite(uv1).all(axis=1) & np.isfinite(sig).all(axis=1)
        idx = np.flatnonzero(finite)
        if len(idx) == 0:
            return _assemble(n, None, np.full(n, NON_FINITE, dtype=np.int32), None, None, None, None)
        uv0, uv1, sig = uv0[idx], uv1[idx], sig[idx]
    # From here on uv0, uv1, sig hold the finite points only (idx maps them back, None: all).

    c = _constants(calib)
    R, T = calib.R, calib.T
    need_w = refine or covariance
    m = len(uv0)
    nn = np.empty((2, m, 2))  # measured normalised coordinates per camera
    D = np.empty((2, m, 2, 2)) if need_w else None  # d(normalised)/d(distorted pixel)
    _normalize_into(calib.cam0, uv0, nn[0], None if D is None else D[0])
    _normalize_into(calib.cam1, uv1, nn[1], None if D is None else D[1])
    Xh = _dlt(nn, c)
    w = Xh[:, 3]
    at_inf = np.abs(w) < 1e-12
    X = Xh[:, :3] / np.where(at_inf, 1.0, w)[:, None]
    degenerate = np.zeros(m, bool)  # geometry without a unique solution (e.g. |T| ~ 0)
    if need_w:
        # Whitening: pixel noise sigma in the distorted image becomes sigma * A A^T in ideal
        # pixels, A = d(ideal pixel)/d(distorted pixel); W = A^-1 / sigma (per image axis).
        A = c.K2 @ D  # (2,N,2,2)
        WK = _inv_or_nan(A.reshape(2 * m, 2, 2)).reshape(2, m, 2, 2) @ c.K2
        WK /= sig.reshape(m, 2, 2).transpose(1, 0, 2)[..., None]  # W @ K[:2,:2], normalised -> unit noise
        # A lens model that cannot be inverted there (a point far outside the image).
        degenerate |= ~np.isfinite(WK).all(axis=(0, 2, 3))
    z0 = X[:, 2]
    z1 = (X @ R.T + T)[:, 2]
    ok = ~at_inf & (z0 > 0) & (z1 > 0) & ~degenerate
    if refine and ok.any():
        all_ok = ok.all()
        Xr, nr, WKr = (X, nn, WK) if all_ok else (X[ok], nn[:, ok], WK[:, ok])
        failed = np.zeros(len(Xr), bool)
        any_failed = False
        for _ in range(iterations):
            JtJ, Jtr = _normal_equations(Xr, nr, WKr, c)
            step = _solve_or_nan(JtJ + c.eye, Jtr)
            if any_failed or not np.isfinite(step).all():  # a singular system stops that point
                failed |= ~np.isfinite(step).all(axis=1)
                any_failed = True
                step[failed] = 0.0
            Xr = Xr - step
            if np.abs(step).max() < 1e-9 * max(1.0, float(np.abs(Xr).max())):
                break
        if all_ok:
            X = Xr
        else:
            X[ok] = Xr
        degenerate[np.flatnonzero(ok)[failed]] = True
        z0 = X[:, 2]
        z1 = (X @ R.T + T)[:, 2]

    # Parallax: angle between the rays from the two centres.
    d0 = X
    d1 = X - c.center1
    cosang = (d0 * d1).sum(axis=1) / np.maximum(
        np.sqrt((d0 * d0).sum(axis=1)) * np.sqrt((d1 * d1).sum(axis=1)), 1e-300)
    ang = np.degrees(np.arccos(np.minimum(np.maximum(cosang, -1.0), 1.0)))
    f = np.zeros(m, dtype=np.int32)
    f[(z0 <= 0) | at_inf] |= BEHIND_CAM0
    f[(z1 <= 0) | at_inf] |= BEHIND_CAM1
    f[at_inf | degenerate | ~(ang >= min_parallax_deg)] |= PARALLEL_RAYS
    good = f == 0
    cg = None
    if covariance and good.any():
        all_good = good.all()
        JtJ, _ = _normal_equations(*((X, nn, WK) if all_good else (X[good], nn[:, good], WK[:, good])), c)
        cg = _inv_or_nan(JtJ)
        singular = ~np.isfinite(cg).all(axis=(1, 2))
        if singular.any():
            f[np.flatnonzero(good)[singular]] |= PARALLEL_RAYS
            cg = cg[~singular]
            good = f == 0
    if good.all():
        Xg, ag, u0g, u1g = X, ang, uv0, uv1
    else:
        Xg, ag, u0g, u1g = X[good], ang[good], uv0[good], uv1[good]
    err = None
    if len(Xg) and reprojection:
        p0, p1 = calib.project(Xg)
        e = np.concatenate([p0 - u0g, p1 - u1g], axis=1)
        err = np.sqrt((e * e).mean(axis=1) * 2.0)  # RMS of the two 2D error lengths
    if idx is None:
        return _assemble(n, good, f, Xg, cg, err, ag)
    flags = np.full(n, NON_FINITE, dtype=np.int32)
    flags[idx] = f
    gsel = np.zeros(n, bool)
    gsel[idx[good]] = True
    return _assemble(n, gsel, flags, Xg, cg, err, ag)


def _assemble(n: int, good: np.ndarray | None, flags: np.ndarray, xyz: np.ndarray | None,
              cov: np.ndarray | None, err: np.ndarray | None, par: np.ndarray | None) -> Triangulation:
    """The Triangulation of n points from the values of the `good` ones (NaN elsewhere; a
    None `good`: none, None cov or err: not computed)."""
    if good is not None and good.all():
        return Triangulation(xyz, np.full((n, 3, 3), np.nan) if cov is None else cov,
                             np.full(n, np.nan) if err is None else err, par, flags)
    out = Triangulation(np.full((n, 3), np.nan), np.full((n, 3, 3), np.nan), np.full(n, np.nan),
                        np.full(n, np.nan), flags)
    if good is not None and good.any():
        out.xyz[good] = xyz
        if err is not None:
            out.reproj_error[good] = err
        out.parallax_deg[good] = par
        if cov is not None:
            out.cov[good] = cov
    return out


_COND_MAX = 1e12  # a matrix is invertible here when its 2-norm condition number is below this
_KF2_OK = (0.5 * _COND_MAX) ** 2  # squared Frobenius condition number surely below it
_NORMAL_MIN = 1e-290  # squared norms above this are far from subnormal


def _well_conditioned(A: np.ndarray) -> np.ndarray:
    """(N,) True where the (N, k, k) matrices are finite and np.linalg.cond(A) < _COND_MAX
    (one SVD per matrix: the exact test, for the few that _inv_or_nan cannot decide cheaply)."""
    ok = np.isfinite(A).all(axis=(1, 2))
    if ok.any():
        c = np.full(len(A), np.inf)
        c[ok] = np.linalg.cond(A[ok])
        ok &= c < _COND_MAX
    return ok


def _inv_or_nan(A: np.ndarray) -> np.ndarray:
    """Batched inverse of (N, k, k) matrices; NaN where not finite or cond(A) >= _COND_MAX
    (np.linalg.inv would raise LinAlgError for the whole batch, or return garbage)."""
    k = A.shape[-1]
    try:
        inv = np.linalg.inv(A)
    except np.linalg.LinAlgError:  # an exactly singular or a non-finite matrix in the batch
        inv = None
    if inv is not None:
        # The Frobenius condition number kF = |A|_F |A^-1|_F brackets the 2-norm one
        # (np.linalg.cond) of a k x k matrix, k2 <= kF <= k k2, as |M|_2 <= |M|_F <= sqrt(k) |M|_2.
        # So kF < _COND_MAX means well conditioned as np.linalg.cond would say, kF >= k _COND_MAX
        # ill conditioned; a factor 2 either way covers the rounding of inv and of cond's SVD
        # (relative error about k2 1e-16 <= 1e-4). The squared norms must be neither subnormal
        # nor overflowed. The matrices in between, or with such norms, get the SVD.
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            a2 = (A * A).sum(axis=(1, 2))
            i2 = (inv * inv).sum(axis=(1, 2))
            kf2 = a2 * i2
        normal = np.minimum(a2, i2) > _NORMAL_MIN
        if kf2.max() < _KF2_OK and normal.all():
            return inv
        sure = (kf2 < _KF2_OK) & normal
        unsure = ~sure & ~((kf2 >= (2 * k * _COND_MAX) ** 2) & (kf2 < np.inf) & normal)
        if unsure.any():
            sure[unsure] = _well_conditioned(A[unsure])
        inv[~sure] = np.nan
        return inv
    out = np.full(A.shape, np.nan)
    ok = _well_conditioned(A)
    if ok.any():
        out[ok] = np.linalg.inv(A[ok])
    return out


def _solve_or_nan(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched solve A x = b (N, 3, 3), (N, 3) by the inverse; non-finite rows where A is
    singular or not finite, or b not finite (np.linalg.solve would raise for the whole batch)."""
    return (_inv_or_nan(A) @ b[:, :, None])[:, :, 0]


def triangulation_error_bound(calib: StereoCalibration, points: np.ndarray, pixel_sigma: float) -> float:
    """Predicted RMS 3D error (same unit as T) of triangulating these points with pixel noise sigma.

    sqrt(mean trace(cov)) of the first-order covariance: the geometric limit a tracker is read against.
    """
    uv0, uv1 = calib.project(points)
    tri = triangulate(calib, uv0, uv1, pixel_sigma=pixel_sigma)
    tr = np.trace(tri.cov[tri.valid], axis1=1, axis2=2)
    return float(np.sqrt(np.mean(tr))) if len(tr) else float("nan")
