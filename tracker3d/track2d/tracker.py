"""ByteTrack-style multi-object tracking in one camera, with time-based parameters.

Per frame: predict every track (batched constant-velocity Kalman filter, dt from frame times);
associate high-score detections with tracked tracks, then with lost ones, then low-score
detections with the still unmatched tracked ones, then high-score detections with tentative
tracks (Hungarian assignment, scipy); start tentative tracks from what is left. The cost is
min((1 - IoU) / iou_cost, Mahalanobis distance of the centres / gate), so boxes that overlap and
small blobs that do not are both matched; no track jumps further than max_jump x its size.
Every track's history (rows [t, cx, cy, w, h, score, observed]) is offered to a gate (persistence
package) that confirms it. All per-track data lives in arrays, so a frame costs a fixed number
of numpy calls whatever the number of tracks.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy.optimize import linear_sum_assignment

from persistence import Gate, HitCountGate

from ..detect.detections import Detections
from ..errors import Tracker3DError
from .kalman import BatchedKalman

log = logging.getLogger(__name__)

TENTATIVE, TRACKED, LOST, REMOVED = 0, 1, 2, 3
STATE_NAMES = ("tentative", "tracked", "lost", "removed")


@dataclass
class TrackerConfig:
    """Thresholds are detection scores in [0,1]; times are seconds; noise is pixels (per second^2)."""

    high_thresh: float = 0.5  # first-stage detections
    low_thresh: float = 0.1  # below this a detection is ignored
    new_track_thresh: float = 0.5  # an unmatched detection above this starts a track
    iou_cost: float = 0.8  # 1 - IoU accepted in the high stage (ByteTrack's match_thresh) ...
    outside_iou_cost: Optional[float] = 0.6  # ... for an outside detector's whole-object boxes (ByteTracker
    # outside=True: detection files, streams): a person box that overlaps a neighbour's by a fifth is not
    # evidence, the centre gate still matches it. None: iou_cost
    iou_buffer: float = 0.0  # boxes grow by this fraction of their size on each side for IoU (BIoU)
    low_iou_cost: float = 0.5  # ... in the low stage
    gate_chi2: float = 13.8  # centre Mahalanobis gate, chi2(2) at 99.9 %
    low_gate_chi2: float = 9.21  # ... in the low stage (99 %)
    size_gate: bool = True  # the Mahalanobis gate also weighs the box's width and height ...
    size_gate_chi2: float = 18.47  # ... at chi2(4) 99.9 %
    max_jump: float = 2.0  # a detection further than this x the track's size never matches it
    max_jump_per_s: float = 30.0  # ... or this x its size per second since the last frame, if larger (below 15 fps)
    min_size_px: float = 8.0  # size floor for max_jump
    lost_buffer_s: float = 1.0  # a lost track is removed after this long unseen ...
    lost_buffer_frames: float = 4.0  # ... but never before this many frame intervals
    tentative_max_gap_s: float = 0.1  # a tentative track is removed after this long unseen ...
    tentative_max_gap_frames: float = 1.5  # ... but may always miss one frame
    accel_std: float = 500.0  # px/s^2 at noise_ref_dt steps (tuned on sim seeds 100-101 at 30 fps, see bench)
    size_accel_std: float = 100.0
    noise_ref_dt: Optional[float] = 1 / 30  # continuous white acceleration (rate-invariant); None: per step
    noise_adapt_rate: float = 0.3  # a track whose innovations are smaller than predicted lowers its ...
    noise_adapt_floor: float = 0.1  # ... process noise, down to this fraction, ...
    noise_adapt_min_gain: float = 0.7  # ... when its prediction dominates its innovation (see BatchedKalman)
    meas_std: float = 1.0  # px, the floor of the centre's measurement noise ...
    size_meas_std: float = 2.0
    meas_rel: float = 0.05  # ... which is at least this fraction of the box's width (x) and height (y)
    init_vel_std: float = 300.0  # px/s
    max_history: int = 128  # rows kept per track
    merge_std_factor: float = 0.5  # centre std added per pixel a blob exceeds the track's size
    # Re-acquisition: a lost track takes back only a box of its own size (height and width ratios
    # at most these; None: no check). After a miss the nearest box is often part of the person or
    # a neighbour (measured on MOT15 TUD boxes: see `tracker3d bench --real`).
    reacquire_size: Optional[tuple[float, float]] = (1.5, 2.0)


@dataclass
class Track2D:
    """A snapshot of one track (see ByteTracker.tracks). Pixels, seconds."""

    id: int
    state: str
    confirmed: bool
    persistent: bool
    gate_score: float
    matched: bool
    hits: int
    born_t: float
    last_t: float
    x: np.ndarray  # filtered [cx, cy, w, h, vcx, vcy, vw, vh]
    history: np.ndarray  # (n,7) rows [t, cx, cy, w, h, score, observed]

    @property
    def centroid(self) -> np.ndarray:
        return self.x[:2]

    @property
    def velocity(self) -> np.ndarray:
        return self.x[4:6]

    @property
    def measured(self) -> np.ndarray:
        """The last observed detection's [cx, cy, w, h]."""
        obs = np.flatnonzero(self.history[:, 6] > 0)
        return self.history[obs[-1], 1:5] if len(obs) else self.x[:4]

    @property
    def box(self) -> np.ndarray:
        cx, cy, w, h = self.x[:4]
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a (N,4) against b (M,4), xyxy."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    w = np.minimum.outer(a[:, 2], b[:, 2]) - np.maximum.outer(a[:, 0], b[:, 0])
    h = np.minimum.outer(a[:, 3], b[:, 3]) - np.maximum.outer(a[:, 1], b[:, 1])
    np.maximum(w, 0.0, out=w)
    np.maximum(h, 0.0, out=h)
    w *= h  # intersection
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = np.add.outer(area_a, area_b) - w
    return w / np.maximum(union, 1e-12)


def iou_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a[i] and b[i] (both (K,4), xyxy): iou_matrix's entries for K chosen pairs, by
    the same arithmetic."""
    w = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0])
    h = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1])
    inter = np.maximum(w, 0.0) * np.maximum(h, 0.0)
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return inter / np.maximum(union, 1e-12)


def median0(a: np.ndarray) -> np.ndarray:
    """np.median(a, axis=0) of an array without NaN, by one sort: the middle row, or the two middle
    rows' mean (x + y) / 2 exactly as np.median computes it, without its ~13 us of overhead."""
    n = len(a)
    if n == 0:
        return np.median(a, axis=0)
    s = np.sort(a, axis=0)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _assign(cost: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian assignment on cost[rows][:, cols], keeping pairs with cost < 1."""
    if len(rows) == 0 or len(cols) == 0:
        return rows[:0], cols[:0]
    sub = cost[rows][:, cols]
    feasible = sub < 1.0
    r_ok = feasible.any(axis=1).nonzero()[0]
    if len(r_ok) == 0:
        return rows[:0], cols[:0]
    per_row = feasible.sum(axis=1)
    per_col = feasible.sum(axis=0)
    if per_row.max() == 1 and per_col.max() == 1:  # no conflicts: each feasible pair stands alone
        ri, ci = feasible.nonzero()
        return rows[ri], cols[ci]
    c_ok = per_col.nonzero()[0]
    if len(r_ok) == 1 or len(c_ok) == 1:  # one row or column: the cheapest feasible pair
        sub = sub[r_ok][:, c_ok]
        k = int(np.argmin(sub))
        ri, ci = np.array([k // len(c_ok)]), np.array([k % len(c_ok)])
    else:
        sub = sub[r_ok][:, c_ok]
        sub[sub >= 1.0] = 1e6
        ri, ci = linear_sum_assignment(sub)
    ok = sub[ri, ci] < 1.0
    return rows[r_ok[ri[ok]]], cols[c_ok[ci[ok]]]


class ByteTracker:
    """Tracks one camera's detections over time.

    `update(dets, t)` advances to time t; the live tracks are then in the arrays `ids`, `state`,
    `confirmed`, `persistent`, `gate_score`, `matched`, `kf.x`, `hist`/`hlen`, and as snapshots
    in `tracks` (slower, for convenience).
    """

    def __init__(self, config: Optional[TrackerConfig] = None, gate: Optional[Gate] = None,
                 image_size: Optional[tuple[int, int]] = None, gate_key_offset: int = 0, outside: bool = False):
        self.cfg = config or TrackerConfig()
        self.outside = outside  # boxes from an outside detector (see TrackerConfig.outside_iou_cost)
        self.gate = gate if gate is not None else HitCountGate(3, 1.0)
        self.image_size = image_size
        # Added to track ids in gate calls, so trackers that share one gate keep distinct keys.
        self.gate_key_offset = int(gate_key_offset)
        c = self.cfg
        self.kf = BatchedKalman(c.accel_std, c.size_accel_std, c.meas_std, c.size_meas_std, c.init_vel_std,
                                ref_dt=c.noise_ref_dt, meas_rel=c.meas_rel)
        self.dt = 0.0  # seconds since the previous frame
        self.intervals = np.zeros(0)  # the last frame intervals (seconds), for the frame-count floors
        L = c.max_history
        self.ids = np.zeros(0, np.int64)
        self.state = np.zeros(0, np.int8)
        self.born_t = np.zeros(0)
        self.last_t = np.zeros(0)
        self.hits = np.zeros(0, np.int64)
        self.confirmed = np.zeros(0, bool)
        self.persistent = np.zeros(0, bool)
        self.gate_score = np.zeros(0)
        self.matched = np.zeros(0, bool)
        self.det_index = np.zeros(0, np.int64)  # detection matched this frame (-1 if none)
        self.hist = np.zeros((0, L, 7))
        self.hlen = np.zeros(0, np.int64)
        self.removed_ids = np.zeros(0, np.int64)  # removed during the last update ...
        self.removed_hist = np.zeros((0, L, 7))  # ... with their histories
        self.removed_hlen = np.zeros(0, np.int64)
        self.next_id = 1
        self.t: Optional[float] = None
        self.frame = -1
        self.bad_detections = 0
        self.last_detections = Detections.empty()

    def __len__(self) -> int:
        return len(self.ids)

    # ---- the per-frame step ---------------------------------------------------------------------
    def update(self, dets: Detections, t: float, run_gate: bool = True) -> "ByteTracker":
        """Advance to time t (seconds) with this frame's detections. run_gate=False leaves the
        gate to the caller (apply_gate), so one batched gate call can serve several trackers."""
        if not np.isfinite(t):
            raise Tracker3DError(f"frame time {t}: expected a finite number of seconds")
        if self.t is not None and t < self.t:
            raise Tracker3DError(f"frame time went backwards: {t:.6f}s after {self.t:.6f}s")
        dets, bad = dets.sanitized(self.image_size)
        self.bad_detections += bad
        c = self.cfg
        if len(dets) and dets.scores.min() < c.low_thresh:
            dets = dets.select(dets.scores >= c.low_thresh)
        self.last_detections = dets
        dt = 0.0 if self.t is None else t - self.t
        self.dt = dt
        if dt > 0:
            self.intervals = np.append(self.intervals[-15:], dt)
        self.t = t
        self.frame += 1
        self.kf.predict(dt)
        n, m = len(self.ids), len(dets)
        self.matched = np.zeros(n, bool)
        self.det_index = np.full(n, -1, np.int64)
        det_used = np.zeros(m, bool)
        if n and m:
            st = self.state
            is_high = dets.scores >= c.high_thresh
            high, low = is_high.nonzero()[0], (~is_high).nonzero()[0]
            cost_hi, cost_lo = self._costs(dets, with_low=len(low) > 0)
            # Tracked tracks first, then lost ones: a lost track never takes a detection that a
            # currently tracked one explains, so duplicate tracks cannot trade an object.
            for stage_state in (TRACKED, LOST):
                rows = (st == stage_state).nonzero()[0]
                if len(rows):
                    cost = cost_hi if stage_state == TRACKED else self._reacquire_cost(cost_hi, dets, rows)
                    self._mark(*_assign(cost, rows, high[~det_used[high]]), det_used)
                if stage_state == TRACKED and len(low):
                    rem = ((st == TRACKED) & ~self.matched).nonzero()[0]
                    self._mark(*_assign(cost_lo, rem, low), det_used)
            rows = (st == TENTATIVE).nonzero()[0]
            if len(rows):
                self._mark(*_assign(cost_hi, rows, high[~det_used[high]]), det_used)
            z = np.zeros((n, 4))
            mi = self.matched.nonzero()[0]
            z[mi] = self._z(dets, self.det_index[mi])
            # A blob larger than the track's box (two objects merged, a shadow) locates the
            # object less well: its centre's noise grows with the unexplained extent.
            excess = np.maximum(z[:, 2:] - self.kf.x[:, 2:4], 0.0) * c.merge_std_factor
            excess *= excess
            if c.noise_adapt_rate > 0:
                y = z[:, :2] - self.kf.x[:, :2]
                nis = np.mean(y * y / (self.kf.innovation_var()[:, :2] + excess), axis=1)
                self.kf.adapt_noise(self.matched, nis, c.noise_adapt_rate, c.noise_adapt_floor,
                                   c.noise_adapt_min_gain)
            self.kf.update_masked(self.matched, z, excess)
        # History rows: the detection for matched tracks, the prediction (coasted) for the rest.
        if n:
            rows = np.zeros((n, 7))
            rows[:, 0] = t
            rows[:, 1:5] = self.kf.x[:, :4]
            mi = self.matched.nonzero()[0]
            if len(mi):
                j = self.det_index[mi]
                rows[mi, 1:5] = z[mi]
                rows[mi, 5] = dets.scores[j]
                rows[mi, 6] = 1.0
                self.hits[mi] += 1
                self.last_t[mi] = t
            self._append(rows)
            self.state[self.matched & (self.state == LOST)] = TRACKED
            self.state[~self.matched & (self.state == TRACKED)] = LOST
        # New tracks from unmatched confident detections.
        new = (~det_used & (dets.scores >= c.new_track_thresh)).nonzero()[0]
        if len(new):
            self._add(dets, new, t)
        # Removal by time unseen (in seconds, with a floor in frames for low and uneven rates).
        unseen = t - self.last_t
        fdt = self.frame_interval
        gone = ((self.state == TENTATIVE) & (unseen > max(c.tentative_max_gap_s, c.tentative_max_gap_frames * fdt))) | (
            (self.state == LOST) & (unseen > max(c.lost_buffer_s, c.lost_buffer_frames * fdt)))
        if self.image_size is not None and len(gone):  # lost tracks that coasted out of the image
            w, h = self.image_size
            cx, cy = self.kf.x[:, 0], self.kf.x[:, 1]
            gone |= (self.state == LOST) & ((cx < 0) | (cy < 0) | (cx > w) | (cy > h))
        self.removed_ids = self.ids[gone]
        self.removed_hist, self.removed_hlen = self.hist[gone], self.hlen[gone]
        if gone.any():
            self.gate.forget((self.removed_ids + self.gate_key_offset).tolist())
            self._keep(~gone)
        # The gate confirms.
        if run_gate and len(self.ids):
            self.apply_gate(*self.gate(self.ids + self.gate_key_offset, self.hist, self.hlen,
                                      image_size=self.image_size))
        return self

    def apply_gate(self, persistent: np.ndarray, scores: np.ndarray) -> None:
        """Take the gate's verdict for every live track (in the order of `ids`)."""
        self.persistent = np.asarray(persistent, bool)
        self.gate_score = np.asarray(scores, float)
        newly = self.persistent & ~self.confirmed
        self.confirmed |= newly
        self.state[newly & (self.state == TENTATIVE)] = TRACKED

    @property
    def frame_interval(self) -> float:
        """The median of the last 16 frame intervals, seconds (0 before the second frame)."""
        return float(median0(self.intervals)) if len(self.intervals) else 0.0  # intervals are > 0

    # ---- helpers ----------------------------------------------------------------------------------
    def _costs(self, dets: Detections, with_low: bool) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """(high-stage cost, low-stage cost or None), each (N tracks, M detections); < 1 is feasible."""
        c = self.cfg
        x = self.kf.x
        half = x[:, 2:4] * (0.5 + c.iou_buffer)
        b = dets.boxes
        if c.iou_buffer:
            pad = (b[:, 2:] - b[:, :2]) * c.iou_buffer
            b = np.hstack([b[:, :2] - pad, b[:, 2:] + pad])
        s = self.kf.innovation_var()
        dx = dets.centroids[:, 0] - x[:, 0, None]
        dy = dets.centroids[:, 1] - x[:, 1, None]
        # The jump allowed grows with the time since the last frame (at 2 fps a walker crosses many
        # times its size between frames); at high rates max_jump per frame is the bound.
        size = np.maximum(np.maximum(x[:, 2], x[:, 3]), c.min_size_px) * max(c.max_jump, c.max_jump_per_s * self.dt)
        # Costs only for the pairs within the jump (inf beyond): the same arithmetic per pair as
        # over the whole matrix (iou_matrix's), at a cost that grows with the pairs nearby.
        r, q = np.nonzero(dx * dx + dy * dy <= (size * size)[:, None])
        dx, dy = dx[r, q], dy[r, q]
        bq = b[q]
        one_minus_iou = 1.0 - iou_pairs(np.hstack([x[:, :2] - half, x[:, :2] + half])[r], bq)
        sr = s[r]
        d2 = dx * dx / sr[:, 0] + dy * dy / sr[:, 1]
        if c.size_gate:
            dw = (bq[:, 2] - bq[:, 0]) - x[r, 2]
            dh = (bq[:, 3] - bq[:, 1]) - x[r, 3]
            d2 = d2 + (dw * dw / sr[:, 2] + dh * dh / sr[:, 3])
            d2 *= c.gate_chi2 / c.size_gate_chi2
        iou_cost = c.outside_iou_cost if self.outside and c.outside_iou_cost is not None else c.iou_cost
        shape = (len(x), len(b))
        hi = np.full(shape, np.inf)
        hi[r, q] = np.minimum(one_minus_iou * (1.0 / iou_cost), np.sqrt(d2 * (1.0 / c.gate_chi2)))
        if not with_low:
            return hi, None
        lo = np.full(shape, np.inf)
        lo[r, q] = np.minimum(one_minus_iou * (1.0 / c.low_iou_cost), np.sqrt(d2 * (1.0 / c.low_gate_chi2)))
        return hi, lo

    def _reacquire_cost(self, cost: np.ndarray, dets: Detections, rows: np.ndarray) -> np.ndarray:
        """cost with the pairs lost tracks `rows` may not re-acquire set to inf: boxes whose height
        or width differs from the track's by more than the ratios cfg.reacquire_size (the other
        rows as they are)."""
        if self.cfg.reacquire_size is None:
            return cost
        rh, rw = self.cfg.reacquire_size
        b = dets.boxes
        w = np.maximum(b[:, 2] - b[:, 0], 1e-6)[None, :]
        h = np.maximum(b[:, 3] - b[:, 1], 1e-6)[None, :]
        tw = np.maximum(self.kf.x[rows, 2], 1e-6)[:, None]
        th = np.maximum(self.kf.x[rows, 3], 1e-6)[:, None]
        ok = (np.maximum(h / th, th / h) <= rh) & (np.maximum(w / tw, tw / w) <= rw)
        out = cost.copy()
        out[rows] = np.where(ok, cost[rows], np.inf)
        return out

    def _mark(self, rows: np.ndarray, cols: np.ndarray, det_used: np.ndarray) -> None:
        self.matched[rows] = True
        self.det_index[rows] = cols
        det_used[cols] = True

    @staticmethod
    def _z(dets: Detections, idx: np.ndarray) -> np.ndarray:
        b = dets.boxes[idx]
        z = np.empty((len(idx), 4))
        z[:, :2] = dets.centroids[idx]
        z[:, 2:] = b[:, 2:] - b[:, :2]
        return z

    def _append(self, rows: np.ndarray) -> None:
        full = self.hlen >= self.hist.shape[1]
        if full.any():
            self.hist[full, :-1] = self.hist[full, 1:]
            self.hlen[full] -= 1
        self.hist[np.arange(len(rows)), self.hlen] = rows
        self.hlen += 1

    def _add(self, dets: Detections, new: np.ndarray, t: float) -> None:
        k = len(new)
        z = self._z(dets, new)
        self.kf.add(z)
        self.ids = np.concatenate([self.ids, np.arange(self.next_id, self.next_id + k)])
        self.next_id += k
        self.state = np.concatenate([self.state, np.full(k, TENTATIVE, np.int8)])
        self.born_t = np.concatenate([self.born_t, np.full(k, t)])
        self.last_t = np.concatenate([self.last_t, np.full(k, t)])
        self.hits = np.concatenate([self.hits, np.ones(k, np.int64)])
        self.confirmed = np.concatenate([self.confirmed, np.zeros(k, bool)])
        self.persistent = np.concatenate([self.persistent, np.zeros(k, bool)])
        self.gate_score = np.concatenate([self.gate_score, np.zeros(k)])
        self.matched = np.concatenate([self.matched, np.ones(k, bool)])
        self.det_index = np.concatenate([self.det_index, new])
        h = np.zeros((k, self.hist.shape[1], 7))
        h[:, 0, 0] = t
        h[:, 0, 1:5] = z
        h[:, 0, 5] = dets.scores[new]
        h[:, 0, 6] = 1.0
        self.hist = np.concatenate([self.hist, h])
        self.hlen = np.concatenate([self.hlen, np.ones(k, np.int64)])

    def _keep(self, keep: np.ndarray) -> None:
        for name in ("ids", "state", "born_t", "last_t", "hits", "confirmed", "persistent", "gate_score", "matched",
                     "det_index", "hist", "hlen"):
            setattr(self, name, getattr(self, name)[keep])
        self.kf.keep(keep)

    # ---- views ------------------------------------------------------------------------------------
    def reported_mask(self) -> np.ndarray:
        """Confirmed tracks matched to a detection this frame (what MOT output lists)."""
        return self.confirmed & self.matched

    def measured(self) -> np.ndarray:
        """(N,4) [cx, cy, w, h] of each track's newest history row (the detection when matched)."""
        return self.hist[np.arange(len(self.ids)), self.hlen - 1, 1:5] if len(self.ids) else np.zeros((0, 4))

    def history(self, i: int) -> np.ndarray:
        return self.hist[i, :self.hlen[i]]

    @property
    def tracks(self) -> list[Track2D]:
        """Snapshots of all live tracks."""
        return [Track2D(int(self.ids[i]), STATE_NAMES[self.state[i]], bool(self.confirmed[i]),
                        bool(self.persistent[i]), float(self.gate_score[i]), bool(self.matched[i]), int(self.hits[i]),
                        float(self.born_t[i]), float(self.last_t[i]), self.kf.x[i].copy(), self.history(i).copy())
                for i in range(len(self.ids))]

    def reported(self) -> list[Track2D]:
        return [tr for tr in self.tracks if tr.confirmed and tr.matched]
