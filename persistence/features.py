"""Per-step features of track histories, normalised so one model serves any image size and
frame rate.

A history row is [t, cx, cy, w, h, score, observed] (seconds, pixels, [0,1], 0/1). Positions are
divided by the image width/height, rates are per second, so resampling a motion at another frame
rate or another resolution gives the same features at the same times.
"""
from __future__ import annotations

import numpy as np

FEATURE_NAMES = (
    "x", "y", "vx", "vy", "ax", "ay", "speed", "heading_sin", "heading_cos", "curvature",
    "log_w", "log_h", "dlog_size", "score", "observed", "since_obs", "age", "dt",
)
N_FEATURES = len(FEATURE_NAMES)


from .errors import HistoryError  # noqa: F401  (re-exported)


def check_history(h: np.ndarray, where: str = "history") -> np.ndarray:
    """Validate one (n, 7) history: non-empty, finite, time not decreasing."""
    h = np.asarray(h, dtype=np.float64)
    if h.ndim != 2 or h.shape[1] != 7:
        raise HistoryError(f"{where}: expected shape (n, 7) rows [t, cx, cy, w, h, score, observed], got {h.shape}")
    if len(h) == 0:
        raise HistoryError(f"{where}: empty (a track has at least one row)")
    if not np.all(np.isfinite(h)):
        raise HistoryError(f"{where}: contains NaN or infinite values")
    if np.any(np.diff(h[:, 0]) < 0):
        raise HistoryError(f"{where}: time goes backwards (rows must be oldest first)")
    return h


def features(hist: np.ndarray, lengths: np.ndarray, image_size, t_birth: np.ndarray | None = None,
             t_last_obs: np.ndarray | None = None) -> np.ndarray:
    """(N, L, 7) histories (rows past lengths[i] are padding) -> (N, L, N_FEATURES) float32.

    image_size: (W, H) pixels for all tracks, or an (N, 2) array, one per track.
    Every feature of step k uses rows <= k only (causal), so scoring a track row by row gives the
    same features as scoring its whole history. When `hist` holds only the newest rows of longer
    tracks, pass each track's birth time `t_birth` (s) and `t_last_obs`, the time of its last
    observed row before the first row given (-inf if none); by default the first row is the birth.
    Padding rows get zeros. Rates use each step's own dt; the first row has no rates.
    """
    hist = np.asarray(hist, dtype=np.float64)
    N, L, _ = hist.shape
    size = np.broadcast_to(np.asarray(image_size, dtype=np.float64).reshape(-1, 2), (N, 2))
    W, H = size[:, :1], size[:, 1:]
    valid = np.arange(L)[None, :] < np.asarray(lengths)[:, None]
    t = hist[..., 0]
    x = hist[..., 1] / W
    y = hist[..., 2] / H
    w = np.maximum(hist[..., 3], 1e-3) / W
    h = np.maximum(hist[..., 4], 1e-3) / H
    dt = np.ones((N, L))
    dt[:, 1:] = t[:, 1:] - t[:, :-1]
    dt = np.where(valid, np.maximum(dt, 1e-3), 1.0)
    vx = np.zeros((N, L))
    vy = np.zeros((N, L))
    vx[:, 1:] = (x[:, 1:] - x[:, :-1]) / dt[:, 1:]
    vy[:, 1:] = (y[:, 1:] - y[:, :-1]) / dt[:, 1:]
    ax = np.zeros((N, L))
    ay = np.zeros((N, L))
    ax[:, 2:] = (vx[:, 2:] - vx[:, 1:-1]) / dt[:, 2:]
    ay[:, 2:] = (vy[:, 2:] - vy[:, 1:-1]) / dt[:, 2:]
    speed = np.hypot(vx, vy)
    heading = np.arctan2(vy, vx)
    curv = (vx * ay - vy * ax) / np.maximum(speed, 1e-3) ** 3
    size_ = np.log(np.sqrt(w * h))
    dsize = np.zeros((N, L))
    dsize[:, 1:] = (size_[:, 1:] - size_[:, :-1]) / dt[:, 1:]
    obs = hist[..., 6] > 0
    # Seconds since the last observed row (0 on observed rows).
    last0 = np.full(N, -np.inf) if t_last_obs is None else np.asarray(t_last_obs, dtype=np.float64)
    last_obs_t = np.where(obs, t, -np.inf)
    last_obs_t[:, 0] = np.maximum(last_obs_t[:, 0], last0)
    last_obs_t = np.maximum.accumulate(last_obs_t, axis=1)
    since = np.where(np.isfinite(last_obs_t), t - last_obs_t, 0.0)
    t0 = t[:, :1] if t_birth is None else np.asarray(t_birth, dtype=np.float64)[:, None]
    age = t - t0
    has_motion = (np.arange(L) >= 1)[None, :]
    moving = has_motion & (speed > 1e-6)
    f = np.stack([
        x, y, np.tanh(vx), np.tanh(vy), np.tanh(ax / 10), np.tanh(ay / 10), np.tanh(speed),
        np.where(moving, np.sin(heading), 0.0), np.where(moving, np.cos(heading), 0.0), np.tanh(curv / 100),
        np.log(w) / 5, np.log(h) / 5, np.tanh(dsize), hist[..., 5], obs.astype(float), np.tanh(since),
        np.tanh(age), np.where(has_motion, np.tanh(dt * 10), 0.0),
    ], axis=-1)
    f[~valid] = 0.0
    return f.astype(np.float32)


NEWEST3 = np.array([-2, -1, 0])  # offsets of a track's newest row and the two before it


def row_features(rows: np.ndarray, size: np.ndarray, t_birth: np.ndarray, t_last_obs: np.ndarray,
                 has1: np.ndarray | None = None, has2: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Features of each track's newest row from the two rows before it: rows (7, 3, N) float64 =
    history columns x (row before the previous, previous, newest) x tracks; has1/has2 (N,) bool
    say whether the previous / the one before are real rows (None: all are; the others are
    ignored but must be finite, e.g. copies of the newest). size (N or 1, 2) pixels.
    -> (N, N_FEATURES) float32 equal bit for bit to `features` at the newest row, and each
    track's time of its last observed row up to it (t_last_obs where none; seconds). The gate's
    per-frame path: a few numpy passes, each over contiguous rows of N values."""
    N = rows.shape[2]
    wh_size = size.T[:, None, :]  # (2, 1, N or 1): W, H
    t = rows[0]
    xy = rows[1:3] / wh_size  # (2, 3, N) (the same elementwise arithmetic as features)
    wh = np.maximum(rows[3:5, 1:], 1e-3)  # (2, 2, N): the previous and the newest row
    wh /= wh_size
    dt = t[1:] - t[:-1]  # (2, N): the previous step, the newest
    np.maximum(dt, 1e-3, out=dt)
    v2 = (xy[:, 1:] - xy[:, :-1]) / dt  # (2, 2, N): velocity at the previous and the newest row
    v = v2[:, 1]
    a = (v - v2[:, 0]) / dt[1]
    ls = np.log(np.sqrt(wh[0] * wh[1]))
    dsize = (ls[1] - ls[0]) / dt[1]
    dt0 = dt[1]
    obs = rows[6] > 0
    if has1 is not None:
        v = np.where(has1, v, 0.0)
        a = np.where(has2, a, 0.0)
        dsize = np.where(has1, dsize, 0.0)
        dt0 = np.where(has1, dt0, 1.0)
        obs[0] &= has2
        obs[1] &= has1
    speed = np.hypot(v[0], v[1])
    heading = np.arctan2(v[1], v[0])
    last = np.maximum(t_last_obs, np.where(obs, t, -np.inf).max(axis=0))
    tn = t[2]
    g = np.empty((N_FEATURES, N))  # feature-major; tanh over features 2..17, then the others written
    g[2:4] = v
    np.divide(a, 10, out=g[4:6])
    g[6] = speed
    np.divide((v[0] * a[1] - v[1] * a[0]) / np.maximum(speed, 1e-3) ** 3, 100, out=g[9])
    g[12] = dsize
    g[15] = np.where(np.isfinite(last), tn - last, 0.0)
    np.subtract(tn, t_birth, out=g[16])
    np.multiply(dt0, 10, out=g[17])
    np.tanh(g[2:], out=g[2:])
    g[0:2] = xy[:, 2]
    np.sin(heading, out=g[7])
    np.cos(heading, out=g[8])
    moving = speed > 1e-6  # speed is 0 without a previous row
    if not moving.all():
        g[7:9, ~moving] = 0.0
    np.log(wh[:, 1], out=g[10:12])
    g[10:12] /= 5
    g[13] = rows[5, 2]
    g[14] = obs[2]
    if has1 is not None:
        g[17] = np.where(has1, g[17], 0.0)
    return np.ascontiguousarray(g.T, dtype=np.float32), last
