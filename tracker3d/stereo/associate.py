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
from calib.triangulate import triangulate

from ..track2d.tracker import ByteTracker, median0


def _sampson(x0, x1, Fx0, Ftx1, both) -> tuple[np.ndarray, np.ndarray]:
    """Sampson distances (undistorted pixels) of homogeneous points x0 (camera 0) and x1 (camera 1)
    with their epipolar lines Fx0 = x0 F^T and Ftx1 = x1 F, broadcast over leading axes (last axis
    3); 0 where not `both` observed. Returns (distances, both)."""
    num = np.abs(x1[..., 0] * Fx0[..., 0] + x1[..., 1] * Fx0[..., 1] + x1[..., 2] * Fx0[..., 2])
    den = (Fx0[..., 0] ** 2 + Fx0[..., 1] ** 2) + (Ftx1[..., 0] ** 2 + Ftx1[..., 1] ** 2)
    return np.where(both, num / np.sqrt(np.maximum(den, 1e-300)), 0.0), both


@dataclass
class AssociationConfig:
    window_s: float = 0.4  # seconds of history used as evidence (at least min_common rows)
    gate_px: float = 1.5  # mean Sampson distance accepted (undistorted pixels) ...
    gate_rel: float = 0.05  # ... or this fraction of the two boxes' sizes (hypot of sqrt(w h)), if larger:
    # a box centre's error grows with the box (a person's box is not a point)
    min_common: int = 3  # a new pair needs this many rows where both tracks observed the object
    keep_factor: float = 0.5  # last frame's pairs cost this much less
    keep_cost: float = 0.9  # cost of an existing pair with no fresh evidence (both tracks alive)
    max_depth: float = 200.0  # candidate pairs triangulating beyond this (metres) are rejected
    max_size_ratio: float = 2.0  # the two views' metric sizes (sqrt of box area x depth / f) differ at most this much
    size_weight: Optional[float] = None  # cost added at the size-ratio limit (squared log ratio, scaled): consistent
    # sizes win. None: chosen by the pipeline by where boxes come from (an outside detector's box covers the
    # object: OUTSIDE_SIZE_WEIGHT; our blobs' sizes vary with contrast and merges: 0)
    height_weight: float = 0.0  # cost added at the height limit (see StereoAssociator.height_layer)
    # Skip pairs whose windowed cost provably fails the gate (a lower bound for all pairs as one
    # matrix product) before computing it: the same pairs, at a cost that grows with the plausible pairs.
    prune: bool = True


def _col_median(a: np.ndarray) -> np.ndarray:
    """Median of each column ignoring NaN (np.nanmedian's result; a sort's speed when there is
    no NaN, which is the rule: nanmedian cost 0.5 ms a pair at 10 objects)."""
    return np.nanmedian(a, axis=0) if np.isnan(a).any() else median0(a)


class StereoAssociator:
    def __init__(self, calib: StereoCalibration, config: Optional[AssociationConfig] = None):
        self.calib = calib
        self.cfg = config or AssociationConfig()
        self.pairs: dict[int, int] = {}  # cam0 track id -> cam1 track id, from the last frame
        self.evidence_s: dict[tuple[int, int], float] = {}  # (row0, row1) of each pair -> seconds of joint evidence
        # Objects on the ground keep to a layer of heights: (up (3,) unit vertical in camera 0's frame,
        # offset (up . x0 - offset = height, metres), the layer's height, its tolerance), or None.
        # A candidate pair triangulating outside the layer is two objects on one epipolar line.
        self.height_layer: Optional[tuple[np.ndarray, float, float, float]] = None
        # Per camera, the last window's (track ids (sorted), pixels (n,W,2), normalised coordinates):
        # the rows a track keeps from frame to frame are not undistorted again (_normalized).
        self._norm: list[Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [None, None]

    def _normalized(self, c: int, ids: np.ndarray, uv: np.ndarray) -> np.ndarray:
        """Camera c's normalised undistorted coordinates (n,W,2) of the window pixels uv (n,W,2) of
        tracks `ids`. A track's window moves one row a frame, so a pixel its window held in the last
        call at the row before is taken from there (the same value: undistortion is per point),
        and only the newest row, and whatever changed, goes through the lens model."""
        cam = self.calib.cam0 if c == 0 else self.calib.cam1
        n, W = uv.shape[:2]
        out = np.empty_like(uv)
        todo = np.ones((n, W), bool)
        prev = self._norm[c]
        if prev is not None and n and len(prev[0]) and W > 1:
            pids, praw, pnorm = prev
            m = min(W - 1, praw.shape[1])  # rows W-1-m .. W-2 now were rows Wp-m .. Wp-1 then
            pos = np.minimum(np.searchsorted(pids, ids), len(pids) - 1)
            found = pids[pos] == ids
            if found.any():
                rows = np.flatnonzero(found)
                old_raw = praw[pos[rows], -m:]
                same = (uv[rows, W - 1 - m:W - 1] == old_raw).all(axis=2)
                r, k = np.nonzero(same)
                out[rows[r], W - 1 - m + k] = pnorm[pos[rows[r]], praw.shape[1] - m + k]
                todo[rows[r], W - 1 - m + k] = False
        if todo.all():
            out = cam.normalize(uv.reshape(-1, 2)).reshape(n, W, 2)
        elif todo.any():
            out[todo] = cam.normalize(uv[todo])
        if n and (n == 1 or (ids[1:] > ids[:-1]).all()):
            self._norm[c] = (ids.copy(), uv.copy(), out)
        else:
            self._norm[c] = None
        return out

    def _window(self, trk: ByteTracker, idx: np.ndarray, W: int):
        """Last W rows of tracks idx: uv (n,W,2), t (n,W), observed (n,W) (False where absent)."""
        rows = trk.hlen[idx, None] - W + np.arange(W)[None, :]  # (n,W), negative = before birth
        ok = rows >= 0
        rows = np.maximum(rows, 0)
        h = trk.hist[idx[:, None], rows]  # (n,W,7)
        return h[..., 1:3], h[..., 0], ok & (h[..., 6] > 0)

    def cost_matrix(self, trk0: ByteTracker, idx0: np.ndarray, trk1: ByteTracker, idx1: np.ndarray,
                    t_now: float, dt_frame: float, prune_gate: Optional[np.ndarray] = None,
                    keep: Optional[np.ndarray] = None) -> np.ndarray:
        """(n0, n1) mean Sampson distance over the window (inf without common observations).

        prune_gate: an (n0, n1) gate (undistorted pixels): a pair whose mean distance provably
        reaches it (`_pruned`: one matrix product for all pairs) is not computed (inf; its count 0)
        unless `keep` (n0, n1 bool) says so. The other entries are computed exactly as without
        pruning (the same arithmetic)."""
        c = self.cfg
        n0, n1 = len(idx0), len(idx1)
        self.last_pruned = 0
        if n0 == 0 or n1 == 0:
            self.last_count = np.zeros((n0, n1), np.int64)
            self.last_span = np.zeros((n0, n1))
            self.last_finite = (np.zeros(0, np.intp), np.zeros(0, np.intp))
            return np.full((n0, n1), np.inf)
        # window_s of rows, but never fewer than min_common (at 2 fps, 0.4 s is one interval)
        W = int(max(1, min(trk0.hist.shape[1], max(round(c.window_s / max(dt_frame, 1e-3)) + 1, c.min_common))))
        uv0, t0, ob0 = self._window(trk0, idx0, W)
        uv1, t1, ob1 = self._window(trk1, idx1, W)
        # Camera 1's rows moved to camera 0's capture times (rows align: one per pair).
        dt = _col_median(t0) - _col_median(t1)  # (W,) per-row shutter offset
        dt = np.where(np.isfinite(dt), dt, 0.0)
        uv1 = uv1 + trk1.kf.x[idx1, None, 4:6] * dt[None, :, None]
        K0, K1 = self.calib.cam0.K, self.calib.cam1.K  # undistorted pixels, as CameraModel.undistort_points
        u0 = (self._normalized(0, trk0.ids[idx0], uv0).reshape(-1, 2) @ K0[:2, :2].T + K0[:2, 2]).reshape(n0, W, 2)
        u1 = (self._normalized(1, trk1.ids[idx1], uv1).reshape(-1, 2) @ K1[:2, :2].T + K1[:2, 2]).reshape(n1, W, 2)
        F = self.calib.F
        x0 = np.concatenate([u0, np.ones((n0, W, 1))], axis=2)
        x1 = np.concatenate([u1, np.ones((n1, W, 1))], axis=2)
        Fx0 = x0 @ F.T  # (n0,W,3) epipolar lines in image 1
        Ftx1 = x1 @ F  # (n1,W,3) epipolar lines in image 0
        # Per pair (camera 0 track r, camera 1 track q): (pairs, W) distances over the window's rows.
        if prune_gate is None:  # every pair, broadcast (same arithmetic per element as gathered)
            r, q = (a.ravel() for a in np.indices((n0, n1)))
            d, both = _sampson(x0[:, None], x1[None], Fx0[:, None], Ftx1[None], ob0[:, None] & ob1[None])
            d, both = d.reshape(n0 * n1, W), both.reshape(n0 * n1, W)
        else:
            r, q = np.nonzero(~self._pruned(x0, x1, Fx0, Ftx1, ob0, ob1, prune_gate, keep))
            self.last_pruned = n0 * n1 - len(r)
            d, both = _sampson(x0[r], x1[q], Fx0[r], Ftx1[q], ob0[r] & ob1[q])
        count = both.sum(axis=1)
        # Seconds from the first joint observation in the window to now (camera 0's row times).
        t_first = np.where(both, t0[r], np.inf).min(axis=1)
        self.last_count = np.zeros((n0, n1), np.int64)
        self.last_count[r, q] = count
        self.last_span = np.zeros((n0, n1))
        self.last_span[r, q] = np.where(count > 0, t_now - t_first, 0.0)
        out = np.full((n0, n1), np.inf)
        seen = count > 0
        out[r[seen], q[seen]] = d[seen].sum(axis=1) / count[seen]
        self.last_finite = (r[seen], q[seen])  # where out is finite
        return out

    @staticmethod
    def _pruned(x0, x1, Fx0, Ftx1, ob0, ob1, gate: np.ndarray, keep: Optional[np.ndarray]) -> np.ndarray:
        """(n0, n1): pairs whose mean Sampson distance over the window is provably >= gate.

        The mean is sum_w d_w / count with count <= the fewer observed rows of the two tracks
        (`most`). With D_w >= every denominator of row w (the largest camera-0 term plus the
        largest camera-1 term), sum_w |num_w| / sqrt(den_w) >= |sum_w num_w / sqrt(D_w)|, and
        num_w = x1_w . (F x0_w) is bilinear, so the right side for all pairs at once is one matrix
        product (n0 x 3W) @ (3W x n1). Non-matching tracks keep their offset from the epipolar
        line over a fraction of a second, so the signed sum hardly cancels (on a crowd this prunes
        all but 0.03 % of what the newest row's own distance would prune as well). A pair is pruned
        when the bound reaches the gate after a margin for rounding."""
        n0, W = ob0.shape
        n1 = ob1.shape[0]
        most = np.minimum(ob0.sum(axis=1)[:, None], ob1.sum(axis=1)[None, :])  # >= the pair's joint rows
        A = np.where(ob0, Fx0[..., 0] ** 2 + Fx0[..., 1] ** 2, 0.0).max(axis=0)  # (W,)
        B = np.where(ob1, Ftx1[..., 0] ** 2 + Ftx1[..., 1] ** 2, 0.0).max(axis=0)
        scale = 1.0 / np.sqrt(np.maximum(A + B, 1e-300))
        y0 = np.where(ob0[..., None], Fx0 * scale[None, :, None], 0.0).reshape(n0, 3 * W)
        y1 = np.where(ob1[..., None], x1, 0.0).reshape(n1, 3 * W)
        S = np.abs(y0 @ y1.T)
        T = np.abs(y0) @ np.abs(y1).T  # the products' magnitudes: bounds the rounding of S
        pruned = S - 1e-9 * T >= most * gate * (1.0 + 1e-9)
        if keep is not None:
            pruned &= ~keep
        return pruned

    def associate(self, trk0: ByteTracker, idx0: np.ndarray, trk1: ByteTracker, idx1: np.ndarray,
                  t_now: float, dt_frame: float, min_common: Optional[int] = None) -> list[tuple[int, int, float]]:
        """Pairs (i0, i1, mean Sampson px) among tracks idx0 of camera 0 and idx1 of camera 1.
        min_common: joint observations a new pair needs (default: the config's)."""
        c = self.cfg
        need = c.min_common if min_common is None else min_common
        self.evidence_s = {}
        m0, m1 = trk0.measured(), trk1.measured()
        s0 = np.sqrt(np.maximum(m0[idx0, 2] * m0[idx0, 3], 1e-6))  # box sizes, pixels
        s1 = np.sqrt(np.maximum(m1[idx1, 2] * m1[idx1, 3], 1e-6))
        # The gate of every pair, for pruning, by sqrt (hypot's cost over n0 x n1 was 6 % of the
        # association at 200 objects) and raised by 1e-15: never below hypot's (sqrt's result is
        # within 4e-16 of it), so a pair pruned with it is pruned with hypot's too; the pairs left
        # get hypot's exact gate below.
        up = 1.0 + 1e-15
        gate = np.sqrt((s0 * s0)[:, None] + (s1 * s1)[None, :])
        gate *= c.gate_rel * up
        np.maximum(gate, c.gate_px * up, out=gate)
        ids0, ids1 = trk0.ids[idx0], trk1.ids[idx1]
        col_of = {int(v): j for j, v in enumerate(ids1)}
        held = [(i, col_of[j]) for i, a in enumerate(ids0) if (j := self.pairs.get(int(a), -1)) in col_of]
        # Last frame's pairs are never pruned: they are feasible up to 1 / keep_factor gates, or
        # with no evidence at all (keep_cost).
        keep = np.zeros((len(idx0), len(idx1)), bool)
        hi, hj = np.array(held, np.int64).reshape(-1, 2).T
        keep[hi, hj] = True
        sam = self.cost_matrix(trk0, idx0, trk1, idx1, t_now, dt_frame, prune_gate=gate if c.prune else None,
                               keep=keep)
        cost = np.full(sam.shape, np.inf)
        fr, fq = self.last_finite
        cost[fr, fq] = sam[fr, fq] / np.maximum(c.gate_px, c.gate_rel * np.hypot(s0[fr], s1[fq]))
        if len(idx0) and len(idx1):
            cost[self.last_count < need] = np.inf  # not enough joint evidence yet
        kept = cost[hi, hj]
        cost[hi, hj] = np.where(np.isfinite(kept), kept * c.keep_factor, c.keep_cost)
        feasible = cost < 1.0
        # Reject candidates that triangulate behind a camera or absurdly far (latest positions), or
        # whose boxes, scaled to metres by each camera's depth, differ in size (a wide baseline
        # sees one person at 10 m from one camera and 30 m from the other: pixel sizes differ 3x).
        r, q = np.nonzero(feasible)
        if len(r):
            tri = triangulate(self.calib, m0[idx0[r], :2], m1[idx1[q], :2], refine=False, covariance=False,
                              reprojection=False)
            z0 = tri.xyz[:, 2]
            z1 = (tri.xyz @ self.calib.R.T + self.calib.T.reshape(1, 3))[:, 2]
            with np.errstate(invalid="ignore"):
                ratio = (s0[r] * z0 / self.calib.cam0.K[0, 0]) / (s1[q] * z1 / self.calib.cam1.K[0, 0])
                bad = ~tri.valid | (z0 > c.max_depth) | ~(ratio <= c.max_size_ratio) | ~(ratio >= 1.0 / c.max_size_ratio)
                # Soft preferences among new candidates (a kept pair passed them when it formed).
                new = ~keep[r, q]
                if c.size_weight:
                    cost[r, q] += new * c.size_weight * (np.log(ratio) / np.log(c.max_size_ratio)) ** 2
                if self.height_layer is not None:
                    up, off, h_ref, tol = self.height_layer
                    dev = np.abs(tri.xyz @ up - off - h_ref) / tol
                    bad |= ~(dev <= 1.0)
                    cost[r, q] += new * c.height_weight * dev ** 2
            cost[r[bad], q[bad]] = np.inf
            feasible = cost < 1.0
        pairs = []
        rows = feasible.any(axis=1).nonzero()[0]
        cols = feasible.any(axis=0).nonzero()[0]
        if len(rows) and len(cols):
            sub = cost[np.ix_(rows, cols)]
            sub = np.where(sub < 1.0, sub, 1e6)
            ri, ci = linear_sum_assignment(sub)
            ok = sub[ri, ci] < 1.0
            i, j = rows[ri[ok]], cols[ci[ok]]  # in assignment order, as one by one
            a0, a1 = idx0[i].tolist(), idx1[j].tolist()
            pairs = list(zip(a0, a1, sam[i, j].tolist()))
            self.evidence_s = dict(zip(zip(a0, a1), self.last_span[i, j].tolist()))
        self.pairs = {int(trk0.ids[i]): int(trk1.ids[j]) for i, j, _ in pairs}
        return pairs
