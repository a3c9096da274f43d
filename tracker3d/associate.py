"""Cross-camera association: which camera-0 track and camera-1 track see the same object.

Evidence is the Sampson (epipolar) distance of undistorted centroids, averaged over the rows of
both histories within `window_s` seconds where both tracks observed the object, after moving
camera 1's rows to camera 0's capture times with its image velocity (unsynchronised shutters).
Objects that share an epipolar line at one instant are told apart by their motion over the
window. A Hungarian assignment with a gate picks the pairs; last frame's pairs get a bonus, and
a pair whose tracks both live on is kept while nothing contradicts it (a camera going dark does
not break pairs), so 3D identities stay put.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy.optimize import linear_sum_assignment

from calib import StereoCalibration
from calib.epipolar import sampson_distance_matrix
from calib.triangulate import triangulate

from .track2d import ByteTracker


@dataclass
class AssociationConfig:
    window_s: float = 0.4  # seconds of history used as evidence
    gate_px: float = 2.5  # mean Sampson distance accepted (undistorted pixels)
    keep_factor: float = 0.5  # last frame's pairs cost this much less
    keep_cost: float = 0.9  # cost of an existing pair with no fresh evidence (both tracks alive)
    max_depth: float = 200.0  # candidate pairs triangulating beyond this (metres) are rejected


class StereoAssociator:
    def __init__(self, calib: StereoCalibration, config: Optional[AssociationConfig] = None):
        self.calib = calib
        self.cfg = config or AssociationConfig()
        self.pairs: dict[int, int] = {}  # cam0 track id -> cam1 track id, from the last frame

    def _window(self, trk: ByteTracker, idx: np.ndarray, W: int):
        """Last W rows of tracks idx: uv (n,W,2), t (n,W), observed (n,W) (False where absent)."""
        n = len(idx)
        rows = trk.hlen[idx, None] - W + np.arange(W)[None, :]  # (n,W), negative = before birth
        ok = rows >= 0
        rows = np.maximum(rows, 0)
        h = trk.hist[idx[:, None], rows]  # (n,W,7)
        return h[..., 1:3], h[..., 0], ok & (h[..., 6] > 0)

    def cost_matrix(self, trk0: ByteTracker, idx0: np.ndarray, trk1: ByteTracker, idx1: np.ndarray,
                    t_now: float, dt_frame: float) -> np.ndarray:
        """(n0, n1) mean Sampson distance over the window (inf without common observations)."""
        c = self.cfg
        n0, n1 = len(idx0), len(idx1)
        if n0 == 0 or n1 == 0:
            return np.full((n0, n1), np.inf)
        W = int(max(1, min(trk0.hist.shape[1], round(c.window_s / max(dt_frame, 1e-3)) + 1)))
        uv0, t0, ob0 = self._window(trk0, idx0, W)
        uv1, t1, ob1 = self._window(trk1, idx1, W)
        # Camera 1's rows moved to camera 0's capture times (rows align: one per pair).
        shift = np.nanmedian(np.where(ob0[:1].any() and True, t0[0:1], np.nan)) if False else None
        dt = (np.nanmedian(t0, axis=0) - np.nanmedian(t1, axis=0))  # (W,) per-row shutter offset
        dt = np.where(np.isfinite(dt), dt, 0.0)
        uv1 = uv1 + trk1.kf.x[idx1, None, 4:6] * dt[None, :, None]
        u0 = self.calib.cam0.undistort_points(uv0.reshape(-1, 2)).reshape(n0, W, 2)
        u1 = self.calib.cam1.undistort_points(uv1.reshape(-1, 2)).reshape(n1, W, 2)
        total = np.zeros((n0, n1))
        count = np.zeros((n0, n1))
        F = self.calib.F
        for k in range(W):
            both = ob0[:, k, None] & ob1[None, :, k]
            if not both.any():
                continue
            d = sampson_distance_matrix(F, u0[:, k], u1[:, k])
            total += np.where(both, d, 0.0)
            count += both
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / count, np.inf)

    def associate(self, trk0: ByteTracker, idx0: np.ndarray, trk1: ByteTracker, idx1: np.ndarray,
                  t_now: float, dt_frame: float) -> list[tuple[int, int, float]]:
        """Pairs (i0, i1, mean Sampson px) among tracks idx0 of camera 0 and idx1 of camera 1."""
        c = self.cfg
        sam = self.cost_matrix(trk0, idx0, trk1, idx1, t_now, dt_frame)
        cost = sam / c.gate_px
        ids0, ids1 = trk0.ids[idx0], trk1.ids[idx1]
        col_of = {int(v): j for j, v in enumerate(ids1)}
        for i, a in enumerate(ids0):
            j = col_of.get(self.pairs.get(int(a), -1))
            if j is not None:
                cost[i, j] = cost[i, j] * c.keep_factor if np.isfinite(cost[i, j]) else c.keep_cost
        feasible = cost < 1.0
        # Reject candidates that triangulate behind a camera or absurdly far (latest positions).
        r, q = np.nonzero(feasible)
        if len(r):
            tri = triangulate(self.calib, trk0.measured()[idx0[r], :2], trk1.measured()[idx1[q], :2], refine=False)
            bad = ~tri.valid | (tri.xyz[:, 2] > c.max_depth)
            cost[r[bad], q[bad]] = np.inf
            feasible[r[bad], q[bad]] = False
        pairs = []
        rows = feasible.any(axis=1).nonzero()[0]
        cols = feasible.any(axis=0).nonzero()[0]
        if len(rows) and len(cols):
            sub = cost[np.ix_(rows, cols)]
            sub = np.where(sub < 1.0, sub, 1e6)
            ri, ci = linear_sum_assignment(sub)
            for a, b in zip(ri, ci):
                if sub[a, b] < 1.0:
                    i, j = rows[a], cols[b]
                    pairs.append((int(idx0[i]), int(idx1[j]), float(sam[i, j])))
        self.pairs = {int(trk0.ids[i]): int(trk1.ids[j]) for i, j, _ in pairs}
        return pairs
