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
