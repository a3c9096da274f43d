"""Constant-velocity Kalman filter for many image-space boxes at once (batched numpy).

State per track: [cx, cy, w, h, vcx, vcy, vw, vh] (pixels, pixels/s); measurement [cx, cy, w, h].
Process noise is white acceleration. With `ref_dt` set (the tracker's default) it is continuous
white noise of density accel_std^2 * ref_dt (pixels^2/s^3): Q = q [[dt^3/3, dt^2/2], [dt^2/2, dt]],
so the uncertainty a track gathers over one second is the same at 2 fps and at 60 fps (the
discrete piecewise-constant model, Q = accel_std^2 [[dt^4/4, dt^3/2], [dt^3/2, dt^2]], used when
ref_dt is None, gathers rate times more velocity variance per second at low rates). Measurement
noise is max(absolute std, meas_rel x the box's width (for cx, w) or height (cy, h)): a real
detector's boxes jitter in proportion to their size. These are the
equations of filterpy's KalmanFilter (predict: x = F x, P = F P F' + Q; update: S = H P H' + R,
K = P H' S^-1, x += K y, P = (I - K H) P). With this F, Q, H and a diagonal R, the four
coordinates never mix, so P is kept as four 2x2 blocks [[pp, pv], [pv, vv]] per track and every
step is a handful of elementwise array operations for all tracks at once (tests/test_track2d.py
checks it against filterpy's full 8x8 filter).
"""
from __future__ import annotations

import numpy as np

DIM_X, DIM_Z = 8, 4


class BatchedKalman:
    """N independent constant-velocity filters sharing the noise model."""

    def __init__(self, accel_std: float = 500.0, size_accel_std: float = 100.0, meas_std: float = 1.0,
                 size_meas_std: float = 2.0, init_vel_std: float = 300.0, init_size_vel_std: float = 20.0,
                 ref_dt: float | None = None, meas_rel: float = 0.0):
        self.q = np.array([accel_std, accel_std, size_accel_std, size_accel_std], dtype=np.float64) ** 2
        self.ref_dt = ref_dt
        self.meas_rel = float(meas_rel)
        self.r = np.array([meas_std, meas_std, size_meas_std, size_meas_std], dtype=np.float64) ** 2
        self.v0 = np.array([init_vel_std, init_vel_std, init_size_vel_std, init_size_vel_std]) ** 2
        self.x = np.zeros((0, DIM_X))
        self.pp = np.zeros((0, 4))  # var(position-like coordinate)
        self.pv = np.zeros((0, 4))  # cov(coordinate, its rate)
        self.vv = np.zeros((0, 4))  # var(rate)
        self.qs = np.zeros(0)  # per-track scale of the process noise (see adapt_noise)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def R(self) -> np.ndarray:
        return np.diag(self.r)

    @property
    def P(self) -> np.ndarray:
        """Full (N,8,8) covariances (for inspection and tests)."""
        n = len(self.x)
        P = np.zeros((n, DIM_X, DIM_X))
        i = np.arange(4)
        P[:, i, i] = self.pp
        P[:, i, i + 4] = P[:, i + 4, i] = self.pv
        P[:, i + 4, i + 4] = self.vv
        return P

    def meas_var(self, boxes: np.ndarray | None = None) -> np.ndarray:
        """(N,4) measurement variance per track: max(absolute, meas_rel x box size)^2, the size
        taken from `boxes` (N,4 [cx, cy, w, h]) or else the tracks' own boxes."""
        b = self.x[:, :4] if boxes is None else boxes
        if not self.meas_rel:
            return np.broadcast_to(self.r, (len(b), 4))
        rel = self.meas_rel * np.abs(b[:, [2, 3, 2, 3]])
        return np.maximum(self.r, rel * rel)

    def add(self, z: np.ndarray) -> None:
        """Start filters at measurements z (M,4) with zero velocity."""
        z = np.asarray(z, dtype=np.float64).reshape(-1, 4)
        m = len(z)
        self.x = np.vstack([self.x, np.hstack([z, np.zeros_like(z)])])
        self.pp = np.vstack([self.pp, self.meas_var(z)])
        self.pv = np.vstack([self.pv, np.zeros((m, 4))])
        self.vv = np.vstack([self.vv, np.broadcast_to(self.v0, (m, 4))])
        self.qs = np.concatenate([self.qs, np.ones(m)])

    def keep(self, mask: np.ndarray) -> None:
        self.x, self.pp, self.pv, self.vv = self.x[mask], self.pp[mask], self.pv[mask], self.vv[mask]
        self.qs = self.qs[mask]

    def predict(self, dt: float) -> None:
        if dt <= 0 or len(self.x) == 0:
            return
        self.x[:, :4] += self.x[:, 4:] * dt
        self.pp += 2 * dt * self.pv + dt * dt * self.vv
        self.pv += dt * self.vv
        if self.ref_dt is None:  # discrete white acceleration, constant over each step
            q = self.q * self.qs[:, None]
            self.pp += q * (dt ** 4 / 4)
            self.pv += q * (dt ** 3 / 2)
            self.vv += q * (dt * dt)
        else:  # continuous white acceleration, density q * ref_dt
            q = self.q * (self.ref_dt * self.qs[:, None])
            self.pp += q * (dt ** 3 / 3)
            self.pv += q * (dt * dt / 2)
            self.vv += q * dt

    def adapt_noise(self, mask: np.ndarray, nis: np.ndarray, rate: float, floor: float,
                    min_gain: float = 0.7) -> None:
        """Scale each masked track's process noise towards what its innovations show: nis (N,) is
        the normalised innovation squared per coordinate (1 when the noise model is right); the
        scale moves by the factor (1 - r + r * nis) and stays in [floor, 1]. r = rate x w, where w
        rises from 0 to 1 as the centre's Kalman gain goes from min_gain to 1: the innovation
        measures the motion model only where the prediction's variance dominates the
        measurement's (long steps: low frame rates, slow-moving large boxes). Where the
        measurement noise dominates, a small nis says only that R is generous, and the scale
        stays put."""
        if rate <= 0 or not mask.any():
            return
        gain = np.mean(self.pp[:, :2] / (self.pp[:, :2] + self.meas_var()[:, :2]), axis=1)
        r = rate * np.clip((gain - min_gain) / (1.0 - min_gain), 0.0, 1.0)
        f = np.where(mask, 1.0 - r + r * nis, 1.0)
        np.clip(self.qs * f, floor, 1.0, out=self.qs)

    def innovation_var(self) -> np.ndarray:
        """Diagonal of S = H P H' + R, (N,4)."""
        return self.pp + self.meas_var()

    def update_masked(self, mask: np.ndarray, z: np.ndarray, extra_pos_var: np.ndarray | None = None) -> None:
        """Correct the tracks where mask is True with z (N,4) (rows of other tracks are ignored);
        extra_pos_var (N,2) adds to the centre's measurement variance per track. Computed for all
        rows at once: cheaper than indexing when most tracks are matched."""
        if not mask.any():
            return
        s = self.pp + self.meas_var()
        if extra_pos_var is not None:
            s[:, :2] += extra_pos_var
        m = mask[:, None]
        kp = np.where(m, self.pp / s, 0.0)
        kv = np.where(m, self.pv / s, 0.0)
        y = z - self.x[:, :4]
        self.x[:, :4] += kp * y
        self.x[:, 4:] += kv * y
        self.vv -= kv * self.pv
        self.pv *= 1 - kp
        self.pp *= 1 - kp

    def update(self, idx: np.ndarray, z: np.ndarray) -> None:
        """Correct tracks idx with measurements z (len(idx), 4)."""
        if len(idx) == 0:
            return
        pp, pv, vv = self.pp[idx], self.pv[idx], self.vv[idx]
        s = pp + self.meas_var(self.x[idx, :4])
        kp, kv = pp / s, pv / s
        y = np.asarray(z, dtype=np.float64) - self.x[idx, :4]
        self.x[idx, :4] += kp * y
        self.x[idx, 4:] += kv * y
        self.pp[idx] = (1 - kp) * pp
        self.pv[idx] = (1 - kp) * pv
        self.vv[idx] = vv - kv * pv
