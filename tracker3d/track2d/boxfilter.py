"""The output box of each 2D track: a SORT-style Kalman filter of the detection boxes.

SORT filters a box as [u, v, s, r] (centre, scale, aspect ratio) with velocities for u, v and s
and a constant aspect ratio: a person's width and height jitter independently in a detector's
boxes, but their ratio hardly changes, so the filtered box keeps its shape while it follows
the person. This is that filter, batched over all tracks (numpy), with s = sqrt(w h) (pixels)
and r = w / h, in seconds and relative to the box's size, so one setting serves any frame rate
and any box size:
- u, v, s: continuous white acceleration of density (accel_rel x s)^2 x ref_dt (pixels^2/s^3,
  the tracker's convention, see kalman.py), plus a random walk of density (walk_rel x s)^2
  (pixels^2/s) on the value itself;
- r: a random walk of density (aspect_walk_rel x r)^2 per second, no velocity;
- measurement noise std: meas_rel x s for u, v, s; aspect_meas_rel x r for r.
The four coordinates never mix (diagonal F blocks, Q and R), so each is a 2x2 covariance block
[[pp, pv], [pv, vv]] per track (r's velocity block stays 0), as in kalman.BatchedKalman;
tests/test_boxfilter.py checks it against filterpy's full 7x7 filter.

`TrackBoxes` keeps one such filter per track of a ByteTracker, beside it: the tracker's own
filter (centroid, width and height) serves association and is left alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class BoxFilterConfig:
    """Noise of the box filter: fractions of the box's scale s (pixels) or aspect r, seconds."""

    meas_rel: float = 0.05  # std of a detection's centre and scale, fraction of s
    aspect_meas_rel: float = 0.1  # std of a detection's aspect ratio, fraction of r
    accel_rel: float = 3.0  # white acceleration of u, v, s: fraction of s per second^2 (at ref_dt steps)
    walk_rel: float = 0.0  # random walk of u, v, s: fraction of s per sqrt(second) (SORT has one)
    aspect_walk_rel: float = 0.2  # random walk of r: fraction of r per sqrt(second)
    init_vel_rel: float = 2.0  # std of the unknown initial velocity of u, v, s: fraction of s per second
    ref_dt: float = 1 / 30  # seconds; see kalman.py


def xyxy_to_usr(boxes: np.ndarray) -> np.ndarray:
    """(N,4) xyxy -> (N,4) [u, v, s, r]: centre (px), sqrt(area) (px), width / height."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w = np.maximum(b[:, 2] - b[:, 0], 1e-6)
    h = np.maximum(b[:, 3] - b[:, 1], 1e-6)
    return np.column_stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, np.sqrt(w * h), w / h])


def usr_to_xyxy(z: np.ndarray) -> np.ndarray:
    """(N,4) [u, v, s, r] -> (N,4) xyxy (w = s sqrt(r), h = s / sqrt(r))."""
    z = np.asarray(z, dtype=np.float64).reshape(-1, 4)
    s, r = np.maximum(z[:, 2], 0.0), np.maximum(z[:, 3], 1e-6)
    hw, hh = s * np.sqrt(r) / 2, s / np.sqrt(r) / 2
    return np.column_stack([z[:, 0] - hw, z[:, 1] - hh, z[:, 0] + hw, z[:, 1] + hh])


class BoxKalman:
    """N independent SORT-style box filters; state x (N,8) [u, v, s, r, du, dv, ds, 0]."""

    def __init__(self, config: Optional[BoxFilterConfig] = None):
        self.cfg = config or BoxFilterConfig()
        self.x = np.zeros((0, 8))
        self.pp = np.zeros((0, 4))
        self.pv = np.zeros((0, 4))
        self.vv = np.zeros((0, 4))
        c = self.cfg
        # measurement variance / (s^2 for u, v, s; r^2 for r)
        self.rel2 = np.array([c.meas_rel, c.meas_rel, c.meas_rel, c.aspect_meas_rel], dtype=np.float64) ** 2

    def __len__(self) -> int:
        return len(self.x)

    def meas_var(self, z: np.ndarray) -> np.ndarray:
        """(N,4) measurement variance for measurements z (N,4) [u, v, s, r]."""
        ref = np.abs(z[:, [2, 2, 2, 3]])
        return np.maximum(self.rel2 * ref * ref, 1e-12)

    def add(self, z: np.ndarray) -> None:
        """Start filters at measurements z (M,4) [u, v, s, r], at rest."""
        z = np.asarray(z, dtype=np.float64).reshape(-1, 4)
        m = len(z)
        v0 = np.zeros((m, 4))
        v0[:, :3] = (self.cfg.init_vel_rel * z[:, 2:3]) ** 2
        self.x = np.vstack([self.x, np.hstack([z, np.zeros_like(z)])])
        self.pp = np.vstack([self.pp, self.meas_var(z)])
        self.pv = np.vstack([self.pv, np.zeros((m, 4))])
        self.vv = np.vstack([self.vv, v0])

    def take(self, idx: np.ndarray) -> None:
        """Keep (and reorder to) the rows idx."""
        self.x, self.pp, self.pv, self.vv = self.x[idx], self.pp[idx], self.pv[idx], self.vv[idx]

    def process_noise(self, dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N,4) each: the pp, pv, vv terms of Q over a step of dt seconds, from the current state."""
        c = self.cfg
        n = len(self.x)
        s2 = self.x[:, 2:3] ** 2
        qa = (c.accel_rel ** 2 * c.ref_dt) * s2  # acceleration density, px^2/s^3
        qp, qv, qvv = np.zeros((n, 4)), np.zeros((n, 4)), np.zeros((n, 4))
        qp[:, :3] = qa * (dt ** 3 / 3) + (c.walk_rel ** 2 * dt) * s2
        qv[:, :3] = qa * (dt * dt / 2)
        qvv[:, :3] = qa * dt
        qp[:, 3] = (c.aspect_walk_rel ** 2 * dt) * self.x[:, 3] ** 2
        return qp, qv, qvv

    def predict(self, dt: float) -> None:
        if dt <= 0 or len(self.x) == 0:
            return
        qp, qv, qvv = self.process_noise(dt)
        self.x[:, :4] += self.x[:, 4:] * dt
        self.pp += 2 * dt * self.pv + dt * dt * self.vv + qp
        self.pv += dt * self.vv + qv
        self.vv += qvv

    def update(self, idx: np.ndarray, z: np.ndarray) -> None:
        """Correct filters idx with measurements z (len(idx), 4) [u, v, s, r]."""
        if len(idx) == 0:
            return
        z = np.asarray(z, dtype=np.float64).reshape(-1, 4)
        pp, pv, vv = self.pp[idx], self.pv[idx], self.vv[idx]
        s = pp + self.meas_var(z)
        kp, kv = pp / s, pv / s
        y = z - self.x[idx, :4]
        self.x[idx, :4] += kp * y
        self.x[idx, 4:] += kv * y
        self.pp[idx] = (1 - kp) * pp
        self.pv[idx] = (1 - kp) * pv
        self.vv[idx] = vv - kv * pv

    def boxes(self) -> np.ndarray:
        """(N,4) xyxy of the filtered boxes."""
        return usr_to_xyxy(self.x[:, :4])


class TrackBoxes:
    """The filtered box of every track of one ByteTracker. Call `step(tracker)` after each
    `tracker.update`; `boxes(tracker)` then gives (N,4) xyxy in the order of tracker.ids (the
    posterior for tracks matched this frame, the prediction for the others)."""

    def __init__(self, config: Optional[BoxFilterConfig] = None):
        self.kf = BoxKalman(config)
        self.ids = np.zeros(0, np.int64)
        self.t: Optional[float] = None

    def step(self, tracker) -> None:
        """Follow the tracker's last update: drop removed tracks, predict to its time, start
        new tracks and correct matched ones with their detection's box."""
        ids = tracker.ids
        dt = 0.0 if self.t is None or tracker.t is None else tracker.t - self.t
        self.t = tracker.t
        rows = np.zeros(len(ids), np.int64)
        found = np.zeros(len(ids), bool)
        if len(self.ids):  # where each of the tracker's ids is in ours
            order = np.argsort(self.ids, kind="stable")
            pos = np.minimum(np.searchsorted(self.ids[order], ids), len(self.ids) - 1)
            rows = order[pos]
            found = self.ids[rows] == ids
        self.kf.predict(dt)
        matched = tracker.matched
        dets = tracker.last_detections
        fresh = ~found
        if fresh.any():  # new tracks: at their detection's box (or the tracker's box when unmatched)
            z = xyxy_to_usr(self._xyxy(tracker, fresh))
            rows[fresh] = len(self.kf) + np.arange(int(fresh.sum()))
            self.kf.add(z)
        self.kf.take(rows)
        self.ids = ids.copy()
        upd = np.flatnonzero(matched & found)
        if len(upd) and len(dets):
            self.kf.update(upd, xyxy_to_usr(dets.boxes[tracker.det_index[upd]]))

    @staticmethod
    def _xyxy(tracker, mask: np.ndarray) -> np.ndarray:
        idx = np.flatnonzero(mask)
        dets = tracker.last_detections
        out = np.empty((len(idx), 4))
        m = tracker.measured()[idx]
        out[:] = np.column_stack([m[:, :2] - m[:, 2:] / 2, m[:, :2] + m[:, 2:] / 2])
        ok = tracker.matched[idx] & (tracker.det_index[idx] >= 0)
        if ok.any() and len(dets):
            out[ok] = dets.boxes[tracker.det_index[idx[ok]]]
        return out

    def boxes(self, tracker) -> np.ndarray:
        """(N,4) xyxy filtered boxes aligned with tracker.ids (call after step)."""
        if len(self.ids) != len(tracker.ids) or not np.array_equal(self.ids, tracker.ids):
            raise RuntimeError("TrackBoxes.boxes: step(tracker) was not called after the tracker's update")
        return self.kf.boxes()
