"""Live 3D tracks claim this frame's detections in each view (3D-first association).

A 3D track that exists already knows where its object must appear: its predicted position and
covariance, projected into each camera, and its size in metres, scaled by each camera's depth.
Each view's detections are assigned to the projected predictions by a Hungarian assignment on the
Mahalanobis distance (prediction covariance plus the detection's own pixel noise), gated by a
chi-square bound and by size. A track's object is found again after its 2D tracks switch
identities or break (a low frame rate, missed or noisy boxes), and one view's detection alone
updates it. Only detections no 3D track claims go on to cross-camera pairing of 2D tracks (births).

Pure functions; pixels are undistorted ("ideal") pixels of each camera, points camera frame metres.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from calib.triangulate import _project_ideal


@dataclass
class ClaimConfig:
    enabled: bool = False  # True: on (the pipeline's ground mode turns it on); False: 3D tracks follow only their 2D pairs
    gate_chi2: float = 5.99  # chi2(2) at 95 %: a detection farther (Mahalanobis^2) is not this track's (it
    # goes on to the 2D pairs instead: claims are for the confident cases; 99.9 % cost WildTrack C1-C2
    # 0.16 MOTA on noisy boxes)
    max_size_ratio: float = 1.6  # a detection this much larger or smaller than the track's size is not its object
    min_depth: float = 0.05  # metres in front of the camera for a projection to count
    min_updates: int = 1  # stereo updates a 3D track needs before it claims detections
    first: bool = True  # tracks claim before any 2D pairing (3D-first), then fill the gaps their pairs leave;
    # False: they only fill gaps


@dataclass
class ViewClaims:
    """One view's outcome: for each 3D track the detection it claimed (-1: none) and the
    Mahalanobis^2 of that detection."""

    det: np.ndarray  # (n,) int
    d2: np.ndarray  # (n,) float, inf where no claim


def project_predictions(K: np.ndarray, R: np.ndarray, T: np.ndarray, X: np.ndarray,
                        P: np.ndarray, min_depth: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predicted points X (n,3, camera 0 frame, metres) with covariances P (n,3,3) seen by a camera
    at x_c = R x_0 + T: ideal pixels (n,2), their covariance (n,2,2) to first order, and the
    depth z_c (n,) (NaN pixels where z_c <= min_depth)."""
    Xc = X @ R.T + T
    z = Xc[:, 2]
    front = z > min_depth
    uv = np.full((len(X), 2), np.nan)
    S = np.full((len(X), 2, 2), np.nan)
    if front.any():
        p, J = _project_ideal(K, Xc[front])
        JR = J @ R
        uv[front] = p
        S[front] = JR @ P[front] @ np.transpose(JR, (0, 2, 1))
    return uv, S, z


def claim_view(uv_pred: np.ndarray, S_pred: np.ndarray, size_pred: np.ndarray, uv_det: np.ndarray,
               sigma_det: np.ndarray, size_det: np.ndarray, cfg: ClaimConfig) -> ViewClaims:
    """Assign one view's detections to n projected predictions.

    uv_pred (n,2) ideal pixels (NaN: not in front of this camera), S_pred (n,2,2) their covariance,
    size_pred (n,) each track's expected size sqrt(w h) in this view (pixels; 0 = unknown);
    uv_det (m,2) ideal pixels of the detections' anchor points, sigma_det (m,) their noise (pixels),
    size_det (m,) their sizes sqrt(w h) (pixels). Each detection goes to at most one track. (The
    track's own 2D track gets no say: a bonus for it cost 3-7 MOTA points on noisy WildTrack.)"""
    n, m = len(uv_pred), len(uv_det)
    det = np.full(n, -1, np.int64)
    d2 = np.full(n, np.inf)
    if n == 0 or m == 0:
        return ViewClaims(det, d2)
    y = uv_det[None, :, :] - uv_pred[:, None, :]  # (n,m,2)
    var = sigma_det[None, :] ** 2
    a = S_pred[:, None, 0, 0] + var
    b = S_pred[:, None, 0, 1]
    c = S_pred[:, None, 1, 1] + var
    det2 = a * c - b * b
    with np.errstate(invalid="ignore", divide="ignore"):
        maha = (c * y[..., 0] ** 2 - 2 * b * y[..., 0] * y[..., 1] + a * y[..., 1] ** 2) / det2
        ratio = size_det[None, :] / size_pred[:, None]
    ok = np.isfinite(maha) & (maha <= cfg.gate_chi2)
    known = size_pred[:, None] > 0
    ok &= ~known | ((ratio <= cfg.max_size_ratio) & (ratio >= 1.0 / cfg.max_size_ratio))
    rows, cols = np.nonzero(ok.any(axis=1))[0], np.nonzero(ok.any(axis=0))[0]
    if not len(rows) or not len(cols):
        return ViewClaims(det, d2)
    sub = np.where(ok[np.ix_(rows, cols)], maha[np.ix_(rows, cols)], 1e9)
    ri, ci = linear_sum_assignment(sub)
    for r, q in zip(ri, ci):
        if sub[r, q] < 1e9:
            det[rows[r]] = cols[q]
            d2[rows[r]] = sub[r, q]
    return ViewClaims(det, d2)
