"""calib.triangulate's batched fast path against the straightforward implementation it replaced
(kept here as the reference): same flags, same points and covariances to 1e-9 relative, on
random well-posed matches, per-axis noise, and degenerate ones (non-finite, behind a camera,
parallel rays, a zero baseline, a lens that cannot be inverted far outside the image)."""
import warnings

import cv2
import numpy as np
import pytest

from calib import CameraModel, StereoCalibration, triangulate
from calib.rigs import make_rig
from calib.triangulate import (
    BEHIND_CAM0,
    BEHIND_CAM1,
    NON_FINITE,
    PARALLEL_RAYS,
    _inv_or_nan,
    _project_ideal,
    _solve_or_nan,
)

# ---- the reference: per-matrix SVD conditioning, np.linalg.solve, one camera at a time ---------


def _ref_well_conditioned(A):
    ok = np.all(np.isfinite(A), axis=(1, 2))
    if np.any(ok):
        c = np.full(len(A), np.inf)
        c[ok] = np.linalg.cond(A[ok])
        ok &= c < 1e12
    return ok


def _ref_solve_or_nan(A, b):
    out = np.full(b.shape, np.nan)
    ok = _ref_well_conditioned(A) & np.all(np.isfinite(b), axis=1)
    if np.any(ok):
        out[ok] = np.linalg.solve(A[ok], b[ok][..., None])[..., 0]
    return out


def _ref_inv_or_nan(A):
    out = np.full(A.shape, np.nan)
    ok = _ref_well_conditioned(A)
    if np.any(ok):
        out[ok] = np.linalg.inv(A[ok])
    return out


def _ref_dlt(n0, n1, R, T):
    P0 = np.hstack([np.eye(3), np.zeros((3, 1))])
    P1 = np.hstack([R, T[:, None]])
    A = np.stack([n0[:, :1] * P0[2] - P0[0], n0[:, 1:] * P0[2] - P0[1],
                  n1[:, :1] * P1[2] - P1[0], n1[:, 1:] * P1[2] - P1[1]], axis=1)
    A /= np.linalg.norm(A, axis=2, keepdims=True)
    return np.linalg.svd(A)[2][:, -1, :]


def _ref_residual_and_jacobian(X, u0, u1, K0, K1, R, T, W0, W1):
    p0, J0 = _project_ideal(K0, X)
    p1, J1 = _project_ideal(K1, X @ R.T + T)
    r = np.concatenate([np.einsum("nij,nj->ni", W0, p0 - u0), np.einsum("nij,nj->ni", W1, p1 - u1)], axis=1)
    return r, np.concatenate([W0 @ J0, W1 @ J1 @ R], axis=1)


def _ref_undistort_jacobian(cam, uv, h=0.5):
    n = len(uv)
    ideal = cam.undistort_points(np.concatenate([uv + [h, 0], uv - [h, 0], uv + [0, h], uv - [0, h]]))
    ideal = ideal.reshape(4, n, 2)
    A = np.empty((n, 2, 2))
    A[:, :, 0] = (ideal[0] - ideal[1]) / (2 * h)
    A[:, :, 1] = (ideal[2] - ideal[3]) / (2 * h)
    return A


def _reference_triangulate(calib, uv0, uv1, pixel_sigma=0.5, refine=True, min_parallax_deg=0.05,
                           iterations=5, covariance=True):
    uv0 = np.asarray(uv0, dtype=np.float64).reshape(-1, 2)
    uv1 = np.asarray(uv1, dtype=np.float64).reshape(-1, 2)
    n = len(uv0)
    sig = np.asarray(pixel_sigma, dtype=np.float64)
    if sig.ndim != 2:
        sig = np.repeat(np.broadcast_to(sig, (n,))[:, None], 4, axis=1)
    flags = np.zeros(n, dtype=np.int32)
    finite = np.all(np.isfinite(uv0), axis=1) & np.all(np.isfinite(uv1), axis=1) & np.all(np.isfinite(sig), axis=1)
    flags[~finite] |= NON_FINITE
    xyz, cov = np.full((n, 3), np.nan), np.full((n, 3, 3), np.nan)
    err, par = np.full(n, np.nan), np.full(n, np.nan)
    idx = np.flatnonzero(finite)
    if len(idx) == 0:
        return xyz, cov, err, par, flags
    R, T, K0, K1 = calib.R, calib.T, calib.cam0.K, calib.cam1.K
    n0, n1 = calib.cam0.normalize(uv0[idx]), calib.cam1.normalize(uv1[idx])
    Xh = _ref_dlt(n0, n1, R, T)
    w = Xh[:, 3]
    at_inf = np.abs(w) < 1e-12
    X = Xh[:, :3] / np.where(at_inf, 1.0, w)[:, None]
    u0 = n0 @ K0[:2, :2].T + K0[:2, 2]
    u1 = n1 @ K1[:2, :2].T + K1[:2, 2]
    need_w = refine or covariance
    W0 = _ref_inv_or_nan(_ref_undistort_jacobian(calib.cam0, uv0[idx])) / sig[idx, 0:2, None] if need_w else None
    W1 = _ref_inv_or_nan(_ref_undistort_jacobian(calib.cam1, uv1[idx])) / sig[idx, 2:4, None] if need_w else None
    z0, z1 = X[:, 2], (X @ R.T + T)[:, 2]
    degenerate = np.zeros(len(idx), bool)
    if need_w:
        degenerate |= ~(np.all(np.isfinite(W0), axis=(1, 2)) & np.all(np.isfinite(W1), axis=(1, 2)))
    ok = ~at_inf & (z0 > 0) & (z1 > 0) & ~degenerate
    if refine and np.any(ok):
        Xr = X[ok]
        failed = np.zeros(len(Xr), bool)
        for _ in range(iterations):
            r, J = _ref_residual_and_jacobian(Xr, u0[ok], u1[ok], K0, K1, R, T, W0[ok], W1[ok])
            step = _ref_solve_or_nan(np.einsum("nki,nkj->nij", J, J) + 1e-12 * np.eye(3),
                                     -np.einsum("nki,nk->ni", J, r))
            failed |= ~np.all(np.isfinite(step), axis=1)
            step[failed] = 0.0
            Xr = Xr + step
            if np.max(np.abs(step)) < 1e-9 * max(1.0, float(np.max(np.abs(Xr)))):
                break
        X[ok] = Xr
        degenerate[np.flatnonzero(ok)[failed]] = True
        z0, z1 = X[:, 2], (X @ R.T + T)[:, 2]
    d0, d1 = X, X - calib.center1
    cosang = np.einsum("ij,ij->i", d0, d1) / np.maximum(np.linalg.norm(d0, axis=1) * np.linalg.norm(d1, axis=1), 1e-300)
    ang = np.degrees(np.arccos(np.clip(cosang, -1.0, 1.0)))
    f = np.zeros(len(idx), dtype=np.int32)
    f[(z0 <= 0) | at_inf] |= BEHIND_CAM0
    f[(z1 <= 0) | at_inf] |= BEHIND_CAM1
    f[at_inf | degenerate | ~(ang >= min_parallax_deg)] |= PARALLEL_RAYS
    if covariance and np.any(f == 0):
        g = f == 0
        _, J = _ref_residual_and_jacobian(X[g], u0[g], u1[g], K0, K1, R, T, W0[g], W1[g])
        cg = _ref_inv_or_nan(np.einsum("nki,nkj->nij", J, J))
        f[np.flatnonzero(g)[~np.all(np.isfinite(cg), axis=(1, 2))]] |= PARALLEL_RAYS
        cov_all = np.full((len(idx), 3, 3), np.nan)
        cov_all[g] = cg
    flags[idx] = f
    good = f == 0
    if np.any(good):
        gi = idx[good]
        if covariance:
            cov[gi] = cov_all[good]
        xyz[gi] = X[good]
        p0, p1 = calib.project(X[good])
        e = np.concatenate([p0 - uv0[gi], p1 - uv1[gi]], axis=1)
        err[gi] = np.sqrt(np.mean(e ** 2, axis=1) * 2.0)
        par[gi] = ang[good]
    return xyz, cov, err, par, flags


# ---- comparisons ------------------------------------------------------------------------------


def _assert_same(calib, uv0, uv1, **kw):
    """Fast and reference agree: flags exactly, NaN where invalid, values to 1e-9 relative."""
    xyz, cov, err, par, flags = _reference_triangulate(calib, uv0, uv1, **kw)
    tri = triangulate(calib, uv0, uv1, **kw)
    np.testing.assert_array_equal(tri.flags, flags)
    assert tri.flags.dtype == np.int32 and tri.xyz.shape == xyz.shape and tri.cov.shape == cov.shape
    for got, ref in ((tri.xyz, xyz), (tri.cov, cov), (tri.reproj_error, err), (tri.parallax_deg, par)):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    v = flags == 0
    scale = np.linalg.norm(xyz[v], axis=1)[:, None]
    assert np.all(np.abs(tri.xyz[v] - xyz[v]) <= 1e-9 * scale)
    if kw.get("covariance", True):
        cscale = np.abs(cov[v]).max(axis=(1, 2), initial=0.0)[:, None, None]
        assert np.all(np.abs(tri.cov[v] - cov[v]) <= 1e-9 * cscale)
    assert np.all(np.abs(tri.reproj_error[v] - err[v]) <= 1e-9 * np.maximum(1.0, err[v]))
    # The parallax is an arccos near 1 (rays 0.05 deg apart): relative 1e-9 of the angle.
    assert np.all(np.abs(tri.parallax_deg[v] - par[v]) <= 1e-9 * par[v])
    return tri


@pytest.fixture(scope="module")
def rig():
    return make_rig()


@pytest.mark.parametrize("seed", range(6))
def test_fast_triangulation_equals_reference_on_random_matches(rig, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 50))
    X = np.column_stack([rng.uniform(-1, 1, n), rng.uniform(-0.7, 0.7, n), rng.uniform(1, 40, n)])
    uv0, uv1 = rig.project(X)
    uv0, uv1 = uv0 + rng.normal(0, 1.0, uv0.shape), uv1 + rng.normal(0, 1.0, uv1.shape)
    for sigma in (0.5, rng.uniform(0.3, 3, n), rng.uniform(0.3, 3, (n, 4))):
        for kw in ({}, {"refine": False, "covariance": False}, {"refine": False}, {"covariance": False}):
            tri = _assert_same(rig, uv0, uv1, pixel_sigma=sigma, **kw)
            assert tri.valid.mean() > 0.8


def test_fast_triangulation_equals_reference_on_degenerate_matches(rig):
    rng = np.random.default_rng(7)
    X = np.column_stack([rng.uniform(-1, 1, 12), rng.uniform(-0.7, 0.7, 12), rng.uniform(2, 8, 12)])
    uv0, uv1 = rig.project(X)
    Xb = np.array([0.3, 0.1, -2.0])  # behind both cameras, projected by hand
    Xb1 = rig.R @ Xb + rig.T
    uv0[0], uv1[0] = (rig.cam0.K @ (Xb / Xb[2]))[:2], (rig.cam1.K @ (Xb1 / Xb1[2]))[:2]
    uv0[1], uv1[1] = rig.project(np.array([0.0, 0.0, 1e7]))[0][0], rig.project(np.array([0.0, 0.0, 1e7]))[1][0]
    uv0[2, 0] = np.nan
    uv1[3, 1] = np.inf
    uv0[4], uv1[4] = [1e5, 1e5], [1e5, 1e5]  # far outside the image: the lens model cannot be inverted
    uv1[5] = uv0[5] + [-250.0, 0.0]  # crossing rays behind camera 1 or further
    sigma = rng.uniform(0.5, 2, (12, 4))
    sigma[6, 3] = np.inf
    for kw in ({}, {"refine": False, "covariance": False}):
        tri = _assert_same(rig, uv0, uv1, pixel_sigma=sigma, **kw)
        assert tri.flags[0] & BEHIND_CAM0 and tri.flags[1] & PARALLEL_RAYS
        assert tri.flags[2] == tri.flags[3] == tri.flags[6] == NON_FINITE
        assert tri.valid[7:].all()
    _assert_same(rig, np.full((3, 2), np.nan), np.zeros((3, 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # non-finite input is flagged, not warned about (inf - inf)
        tri = _assert_same(rig, np.array([[np.inf, -np.inf], [1e20, 1e20], [300.0, 200.0]]),
                           np.array([[1.0, 2.0], [1e20, 1e20], [280.0, 200.0]]))
        assert tri.flags.tolist() == [NON_FINITE, PARALLEL_RAYS, 0]
    assert triangulate(rig, np.zeros((0, 2)), np.zeros((0, 2))).xyz.shape == (0, 3)


def test_triangulation_without_reprojection_is_the_same_but_the_error(rig):
    """reprojection=False (the tracking loop's calls): the same points, covariances, parallax and
    flags bit for bit, reproj_error NaN, with all points valid and with some flagged."""
    rng = np.random.default_rng(3)
    X = np.column_stack([rng.uniform(-1, 1, 20), rng.uniform(-0.7, 0.7, 20), rng.uniform(1, 30, 20)])
    uv0, uv1 = rig.project(X)
    uv0 = uv0 + rng.normal(0, 1.0, uv0.shape)
    bad0 = uv0.copy()
    bad0[3] = np.nan  # one non-finite match: the partial path
    bad0[5] = [1e5, 1e5]  # one outside the lens model
    for a in (uv0, bad0):
        for kw in ({}, {"refine": False, "covariance": False}, {"pixel_sigma": rng.uniform(0.3, 3, (20, 4))}):
            full = triangulate(rig, a, uv1, **kw)
            fast = triangulate(rig, a, uv1, reprojection=False, **kw)
            for got, ref in ((fast.xyz, full.xyz), (fast.cov, full.cov), (fast.parallax_deg, full.parallax_deg),
                             (fast.flags, full.flags)):
                np.testing.assert_array_equal(got, ref)
            assert fast.reproj_error.shape == (20,) and np.isnan(fast.reproj_error).all()
            assert np.isfinite(full.reproj_error[full.valid]).all() and full.valid.sum() >= 18


def test_fast_triangulation_equals_reference_on_degenerate_rigs(rig):
    X = np.array([[0.1, 0.0, 3.0], [-0.358, 1.818, 10.248], [1.811, 1.694, 5.690]])
    turned = cv2.Rodrigues(np.array([0, np.pi / 2, 0]))[0] @ rig.R
    for R, T in ((rig.R, rig.T * 1e-9 / 0.2), (turned, rig.T), (rig.R, np.zeros(3))):
        bad = StereoCalibration(rig.cam0, rig.cam1, R, T)
        for kw in ({"pixel_sigma": 0.25}, {"refine": False, "covariance": False}):
            tri = _assert_same(bad, *bad.project(X), **kw)
            assert not tri.valid.any() or not kw.get("refine", True)


def test_fast_triangulation_equals_reference_with_skewed_intrinsics():
    rig = make_rig()
    K = rig.cam1.K.copy()
    K[0, 1] = 3.0  # skew
    skewed = StereoCalibration(rig.cam0, CameraModel(K, rig.cam1.dist, rig.cam1.image_size), rig.R, rig.T)
    rng = np.random.default_rng(3)
    X = np.column_stack([rng.uniform(-1, 1, 20), rng.uniform(-0.7, 0.7, 20), rng.uniform(2, 8, 20)])
    uv0, uv1 = skewed.project(X)
    assert _assert_same(skewed, uv0 + rng.normal(0, 1, uv0.shape), uv1, pixel_sigma=rng.uniform(0.5, 2, (20, 4))).valid.all()


def _matrices_around_the_threshold(k, rng):
    """Random k x k matrices with 2-norm condition numbers from 1 to 1e16 (1e12 is the threshold),
    exactly singular, non-finite and overflowing ones."""
    conds = np.concatenate([10.0 ** rng.uniform(0, 16, 60), [1e12 * 0.999, 1e12 * 1.001, 3e11, 3e12, 2.9e12]])
    A = []
    for c in conds:
        U, _ = np.linalg.qr(rng.normal(size=(k, k)))
        V, _ = np.linalg.qr(rng.normal(size=(k, k)))
        s = np.geomspace(1.0, 1.0 / c, k) * 10.0 ** rng.uniform(-3, 3)
        A.append(U @ np.diag(s) @ V.T)
    A = np.array(A)
    extra = np.zeros((5, k, k))
    extra[1] = np.eye(k)
    extra[1, 0, 0] = np.nan
    extra[2] = np.eye(k)
    extra[2, -1, -1] = np.inf
    extra[3] = np.eye(k) * 1e-160  # its inverse's squared norm overflows
    extra[4] = A[0] * 1e-161  # and its squared norm is subnormal
    return np.concatenate([A, extra])


@pytest.mark.parametrize("k", [2, 3])
def test_inverse_and_solve_flag_the_same_matrices_as_the_svd_condition_number(k):
    rng = np.random.default_rng(k)
    A = _matrices_around_the_threshold(k, rng)
    ref = _ref_inv_or_nan(A)
    for batch in (A, A[:-5], A[np.argsort(rng.random(len(A)))][:20]):
        got, want = _inv_or_nan(batch), _ref_inv_or_nan(batch)
        np.testing.assert_array_equal(np.isnan(got).any(axis=(1, 2)), np.isnan(want).any(axis=(1, 2)))
        np.testing.assert_array_equal(got[~np.isnan(got)], want[~np.isnan(want)])
    assert np.isnan(ref).any(axis=(1, 2)).sum() > 12 and (~np.isnan(ref).any(axis=(1, 2))).sum() > 30
    if k == 3:
        b = rng.normal(size=(len(A), 3))
        b[5] = np.nan
        got, want = _solve_or_nan(A, b), _ref_solve_or_nan(A, b)
        np.testing.assert_array_equal(np.isfinite(got).all(axis=1), np.isfinite(want).all(axis=1))
        fin = np.isfinite(A).all(axis=(1, 2))
        cond = np.full(len(A), np.inf)
        cond[fin] = np.linalg.cond(A[fin])
        v = np.isfinite(want).all(axis=1) & (cond < 1e6)
        assert v.sum() > 10
        np.testing.assert_allclose(got[v], want[v], rtol=1e-9, atol=1e-9 * np.abs(want[v]).max())
