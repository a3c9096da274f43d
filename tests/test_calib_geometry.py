"""Projection, epipolar distances and triangulation on a known rig with distortion."""
import numpy as np
import pytest
from scipy import stats

from calib import triangulate, triangulation_error_bound
from calib.rigs import make_rig
from calib.triangulate import BEHIND_CAM0, NON_FINITE, PARALLEL_RAYS


@pytest.fixture(scope="module")
def rig():
    return make_rig()


def _points(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(-1, 1, n), rng.uniform(-0.7, 0.7, n), rng.uniform(2, 6, n)])


def test_undistort_inverts_projection(rig):
    X = _points(500)
    uv0, _ = rig.project(X)
    ideal = rig.cam0.undistort_points(uv0)
    np.testing.assert_allclose(rig.cam0.distort_ideal(ideal), uv0, atol=1e-6)
    pin = X[:, :2] / X[:, 2:] @ rig.cam0.K[:2, :2].T + rig.cam0.K[:2, 2]
    np.testing.assert_allclose(ideal, pin, atol=1e-6)


def test_sampson_distance(rig):
    X = _points(200)
    uv0, uv1 = rig.project(X)
    assert np.max(rig.sampson(uv0, uv1)) < 1e-6
    # Moving a point perpendicular to its epipolar line by d gives about d/sqrt(2)... up to d.
    shifted = uv1 + [0.0, 3.0]
    d = rig.sampson(uv0, shifted)
    assert np.all((d > 1.0) & (d < 3.1))
    M = rig.sampson_matrix(uv0[:5], uv1[:7])
    assert M.shape == (5, 7)
    np.testing.assert_allclose(np.diag(M[:5, :5]), rig.sampson(uv0[:5], uv1[:5]), atol=1e-9)


def test_triangulation_exact_without_noise(rig):
    X = _points(2000)
    tri = triangulate(rig, *rig.project(X))
    assert tri.valid.all()
    assert np.max(np.abs(tri.xyz - X)) < 1e-8
    assert np.max(tri.reproj_error) < 1e-6


def test_triangulation_error_matches_covariance(rig):
    rng = np.random.default_rng(1)
    X = _points(4000, seed=2)
    uv0, uv1 = rig.project(X)
    sigma = 0.7
    tri = triangulate(rig, uv0 + rng.normal(0, sigma, uv0.shape), uv1 + rng.normal(0, sigma, uv1.shape),
                      pixel_sigma=sigma)
    e = tri.xyz - X
    d2 = np.einsum("ni,nij,nj->n", e, np.linalg.inv(tri.cov), e)
    # Mahalanobis distances follow chi-square with 3 degrees of freedom.
    assert 2.8 < d2.mean() < 3.2
    assert abs(np.mean(d2 < stats.chi2.ppf(0.95, 3)) - 0.95) < 0.015
    assert stats.kstest(d2, stats.chi2(3).cdf).pvalue > 1e-3
    # Reprojection error of a noisy match: one constraint absorbed -> about sigma/sqrt(2) per view.
    assert 0.3 < np.median(tri.reproj_error) < 0.7
    bound = triangulation_error_bound(rig, X, sigma)
    rmse = np.sqrt(np.mean(np.sum(e ** 2, axis=1)))
    assert abs(rmse / bound - 1) < 0.1


def test_refinement_beats_linear(rig):
    rng = np.random.default_rng(5)
    X = _points(3000, seed=6)
    uv0, uv1 = rig.project(X)
    n0, n1 = uv0 + rng.normal(0, 1, uv0.shape), uv1 + rng.normal(0, 1, uv1.shape)
    e_lin = np.linalg.norm(triangulate(rig, n0, n1, refine=False).xyz - X, axis=1)
    e_ref = np.linalg.norm(triangulate(rig, n0, n1).xyz - X, axis=1)
    assert np.mean(e_ref ** 2) <= np.mean(e_lin ** 2) * 1.001


def test_flags_behind_parallel_nonfinite(rig):
    X = np.array([[0.1, 0.0, 3.0], [0.0, 0.0, 1e7], [0.1, 0.1, 2.0]])
    uv0, uv1 = rig.project(X)
    # A point behind both cameras: project by hand (projectPoints mirrors it in front).
    Xb = np.array([0.3, 0.1, -2.0])
    ub0 = rig.cam0.K @ (Xb / Xb[2])
    Xb1 = rig.R @ Xb + rig.T
    ub1 = rig.cam1.K @ (Xb1 / Xb1[2])
    uv0 = np.vstack([uv0, ub0[:2], [np.nan, 1.0]])
    uv1 = np.vstack([uv1, ub1[:2], [100.0, 1.0]])
    tri = triangulate(rig, rig.cam0.distort_ideal(rig.cam0.undistort_points(uv0)), uv1)
    assert tri.valid.tolist() == [True, False, True, False, False]
    assert tri.flags[1] & PARALLEL_RAYS
    assert tri.flags[3] & BEHIND_CAM0
    assert tri.flags[4] & NON_FINITE
    assert np.all(np.isnan(tri.xyz[~tri.valid])) and np.all(np.isnan(tri.cov[~tri.valid]))
    assert "behind camera 0" in tri.describe(3)
    with pytest.raises(ValueError, match="pixel_sigma"):
        triangulate(rig, uv0, uv1, pixel_sigma=0)
