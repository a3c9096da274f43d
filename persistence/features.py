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


def step_features(win: np.ndarray, col: np.ndarray, image_size, t_birth: np.ndarray,
                  t_last_obs: np.ndarray) -> np.ndarray:
    """Features of one row per track, win[i, col[i]], with col[i] in 0..2 and the rows before it
    in the window (N, >= col + 1, 7) as context: equal to
    features(win, col + 1, image_size, t_birth, t_last_obs)[arange(N), col], for a third of the
    work (the gate scores one new row per track per frame)."""
    return step_features_and_last_obs(win, col, image_size, t_birth, t_last_obs)[0]


def step_features_and_last_obs(win: np.ndarray, col: np.ndarray, image_size, t_birth: np.ndarray,
                               t_last_obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """step_features, and each track's time of its last observed row up to win[i, col[i]]
    (t_last_obs where none; seconds)."""
    win = np.asarray(win, dtype=np.float64)
    col = np.asarray(col)
    N = len(win)
    r = np.arange(N)
    size = np.broadcast_to(np.asarray(image_size, dtype=np.float64).reshape(-1, 2), (N, 2))
    c0, c1, c2 = win[r, col], win[r, np.maximum(col - 1, 0)], win[r, np.maximum(col - 2, 0)]
    has1, has2 = col >= 1, col >= 2
    h1, h2 = has1[:, None], has2[:, None]
    # (N, 2) pairs: x and y, or w and h, side by side (the same elementwise arithmetic as features)
    xy0, xy1, xy2 = c0[:, 1:3] / size, c1[:, 1:3] / size, c2[:, 1:3] / size
    dt0 = np.where(has1, np.maximum(c0[:, 0] - c1[:, 0], 1e-3), 1.0)
    dt1 = np.where(has2, np.maximum(c1[:, 0] - c2[:, 0], 1e-3), 1.0)
    v = np.where(h1, (xy0 - xy1) / dt0[:, None], 0.0)
    a = np.where(h2, (v - np.where(h2, (xy1 - xy2) / dt1[:, None], 0.0)) / dt0[:, None], 0.0)
    wh0, wh1 = np.maximum(c0[:, 3:5], 1e-3) / size, np.maximum(c1[:, 3:5], 1e-3) / size
    speed = np.hypot(v[:, 0], v[:, 1])
    heading = np.arctan2(v[:, 1], v[:, 0])
    curv = (v[:, 0] * a[:, 1] - v[:, 1] * a[:, 0]) / np.maximum(speed, 1e-3) ** 3
    dsize = np.where(has1, (np.log(np.sqrt(wh0[:, 0] * wh0[:, 1])) - np.log(np.sqrt(wh1[:, 0] * wh1[:, 1]))) / dt0,
                     0.0)
    obs = c0[:, 6] > 0
    last = np.asarray(t_last_obs, dtype=np.float64)
    for c, on in ((c2, has2), (c1, has1), (c0, True)):
        last = np.maximum(last, np.where(on & (c[:, 6] > 0), c[:, 0], -np.inf))
    t = c0[:, 0]
    since = np.where(np.isfinite(last), t - last, 0.0)
    moving = has1 & (speed > 1e-6)
    th = np.tanh(np.column_stack([v, a / 10, speed, curv / 100, dsize, since, t - np.asarray(t_birth, np.float64),
                                  dt0 * 10]))
    f = np.empty((N, N_FEATURES), np.float32)
    f[:, 0:2] = xy0
    f[:, 2:7] = th[:, 0:5]
    f[:, 7] = np.where(moving, np.sin(heading), 0.0)
    f[:, 8] = np.where(moving, np.cos(heading), 0.0)
    f[:, 9] = th[:, 5]
    f[:, 10:12] = np.log(wh0) / 5
    f[:, 12] = th[:, 6]
    f[:, 13] = c0[:, 5]
    f[:, 14] = obs
    f[:, 15:17] = th[:, 7:9]
    f[:, 17] = np.where(has1, th[:, 9], 0.0)
    return f, last
