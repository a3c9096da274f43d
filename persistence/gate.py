"""Gates decide which tracks are persistent (real objects) from their histories.

A history is an (n, 7) float array of rows [t, cx, cy, w, h, score, observed] (seconds, pixels,
score in [0,1], observed 1 for a detection, 0 for a coasted step), oldest first. Gates take a
batch: `hist` (N, L, 7) with track i's rows in hist[i, :lengths[i]] (the rest is padding).
"""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

HISTORY_COLUMNS = ("t", "cx", "cy", "w", "h", "score", "observed")


class Gate(Protocol):
    def __call__(self, ids: np.ndarray, hist: np.ndarray, lengths: np.ndarray,
                 image_size=None) -> tuple[np.ndarray, np.ndarray]:
        """(persistent: bool (N,), score: float (N,) in [0,1]) for a batch of N track histories;
        image_size (W, H) or (N, 2) pixels, for gates that normalise positions."""
        ...

    def forget(self, ids: Sequence[int]) -> None:
        """Drop any state kept for these (removed) tracks."""
        ...


def pad_histories(histories: Sequence[np.ndarray], max_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """List of (n_i, 7) histories -> (hist (N, L, 7) zero-padded at the end, lengths (N,)).
    With max_len, only each track's newest max_len rows are kept."""
    lens = np.array([len(h) if max_len is None else min(len(h), max_len) for h in histories], dtype=int)
    L = int(lens.max()) if len(lens) else 0
    out = np.zeros((len(histories), max(L, 1), 7))
    for i, h in enumerate(histories):
        if lens[i]:
            out[i, :lens[i]] = np.asarray(h, dtype=np.float64)[-lens[i]:]
    return out, lens


class HitCountGate:
    """The classic rule: a track is persistent once it has `min_hits` observed steps within the
    last `window_s` seconds. score = min(1, hits / min_hits)."""

    def __init__(self, min_hits: int = 3, window_s: float = 1.0):
        if min_hits < 1:
            raise ValueError(f"min_hits {min_hits}: expected >= 1")
        if not window_s > 0:
            raise ValueError(f"window_s {window_s}: expected > 0 seconds")
        self.min_hits = int(min_hits)
        self.window_s = float(window_s)

    def __call__(self, ids: np.ndarray, hist: np.ndarray, lengths: np.ndarray,
                 image_size=None) -> tuple[np.ndarray, np.ndarray]:
        n = len(lengths)
        if n == 0:
            return np.zeros(0, bool), np.zeros(0)
        t = hist[:, :, 0]
        t_last = t[np.arange(n), np.maximum(lengths - 1, 0)]
        # Rows past a track's length are padding: their observed flag may be stale, so mask them.
        live = np.arange(hist.shape[1]) < lengths[:, None]
        recent = (t >= (t_last - self.window_s - 1e-9)[:, None]) & live
        hits = np.count_nonzero(recent & (hist[:, :, 6] > 0), axis=1)
        return hits >= self.min_hits, np.minimum(1.0, hits / self.min_hits)

    def forget(self, ids: Sequence[int]) -> None:
        pass

    def __repr__(self) -> str:
        return f"HitCountGate(min_hits={self.min_hits}, window_s={self.window_s})"
