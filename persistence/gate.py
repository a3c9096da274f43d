"""Gates decide which tracks are persistent (real objects) from their histories.

A history is an (n, 7) float array of rows [t, cx, cy, w, h, score, observed] (seconds, pixels,
score in [0,1], observed 1 for a detection, 0 for a coasted step), oldest first. Gates take a
batch: `hist` (N, L, 7) with track i's rows in hist[i, :lengths[i]] (the rest is padding).
"""
from __future__ import annotations

import logging
from typing import Optional, Protocol, Sequence

import numpy as np

log = logging.getLogger(__name__)

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
    last `window_s` seconds, or within its last `min_hits` rows when those span longer (at low or
    uneven frame rates `min_hits` frames may not fit in `window_s`: 3 frames at 2 fps span 1 s,
    at 2 fps with jitter a little more). score = min(1, hits / min_hits)."""

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
        span = t_last - t[np.arange(n), np.maximum(lengths - self.min_hits, 0)]
        window = np.maximum(self.window_s, span)
        recent = (t >= (t_last - window - 1e-9)[:, None]) & live
        hits = np.count_nonzero(recent & (hist[:, :, 6] > 0), axis=1)
        return hits >= self.min_hits, np.minimum(1.0, hits / self.min_hits)

    def forget(self, ids: Sequence[int]) -> None:
        pass

    def __repr__(self) -> str:
        return f"HitCountGate(min_hits={self.min_hits}, window_s={self.window_s})"


def history_interval(hist: np.ndarray, lengths: np.ndarray) -> Optional[float]:
    """The median time (seconds) between each track's last two rows (one row per frame), or None
    when no track has two rows yet."""
    two = np.flatnonzero(lengths >= 2)
    if len(two) == 0:
        return None
    last = lengths[two] - 1
    d = hist[two, last, 0] - hist[two, last - 1, 0]
    d = d[d > 0]
    return float(np.median(d)) if len(d) else None


class RateGuardedGate:
    """A learned gate used only at the frame rates it was trained for; outside them, `fallback`
    (the hit-count rule) decides, with one log line.

    `rates_hz` is (lowest, highest) frame rate, from the model card's `frame_rates_hz`; a rate
    within `tolerance` x of those bounds counts as inside. The rate is the median of the
    per-call intervals (the time between tracks' last two rows) over the first `settle_calls`
    calls that have one (and at least `settle_s` seconds of stream time): one stalled frame (a
    live loop busy at start-up, a detector rebuilding its background) must not decide it.
    Until then both gates see every call (so the learned gate's per-track state has no holes)
    and the fallback's answer is used; the choice then holds for the rest of the stream.
    """

    def __init__(self, learned: Gate, fallback: Gate, rates_hz: tuple[float, float], tolerance: float = 1.2,
                 settle_calls: int = 3, settle_s: float = 0.0):
        lo, hi = float(rates_hz[0]), float(rates_hz[1])
        if not (0 < lo <= hi):
            raise ValueError(f"rates_hz {rates_hz}: expected 0 < lowest <= highest frame rate")
        self.learned, self.fallback = learned, fallback
        self.rates_hz = (lo, hi)
        self.tolerance = float(tolerance)
        self.settle_calls, self.settle_s = int(settle_calls), float(settle_s)
        self.use_learned: Optional[bool] = None  # None until the rate is known
        self.rate_hz: Optional[float] = None
        self._intervals: list[float] = []
        self._t_first: Optional[float] = None

    def _measure(self, hist: np.ndarray, lengths: np.ndarray) -> None:
        dt = history_interval(hist, lengths)
        if dt is None:
            return
        t_now = float(np.max(hist[np.arange(len(lengths)), np.maximum(lengths - 1, 0), 0]))
        self._t_first = t_now if self._t_first is None else self._t_first
        self._intervals.append(dt)
        if len(self._intervals) < self.settle_calls or t_now - self._t_first < self.settle_s:
            return
        self.rate_hz = 1.0 / float(np.median(self._intervals))
        lo, hi = self.rates_hz
        self.use_learned = lo / self.tolerance <= self.rate_hz <= hi * self.tolerance
        if not self.use_learned:
            log.warning("gate: frames come at %.3g fps, outside the learned gate's %g-%g fps "
                        "(its model card); confirming tracks with %r instead", self.rate_hz, lo, hi, self.fallback)
        else:
            log.info("gate: frames come at %.3g fps, within the learned gate's %g-%g fps", self.rate_hz, lo, hi)

    def __call__(self, ids: np.ndarray, hist: np.ndarray, lengths: np.ndarray,
                 image_size=None) -> tuple[np.ndarray, np.ndarray]:
        if self.use_learned is None:
            self._measure(hist, lengths)
            if self.use_learned is None:  # still settling: both see the rows, the fallback answers
                self.learned(ids, hist, lengths, image_size=image_size)
                return self.fallback(ids, hist, lengths, image_size=image_size)
        gate = self.learned if self.use_learned else self.fallback
        return gate(ids, hist, lengths, image_size=image_size)

    def forget(self, ids: Sequence[int]) -> None:
        self.learned.forget(ids)
        self.fallback.forget(ids)

    def __getattr__(self, name):  # the learned gate's attributes (device, card, thresholds ...)
        if name in ("learned", "fallback"):
            raise AttributeError(name)
        return getattr(self.learned, name)

    def __repr__(self) -> str:
        return f"RateGuardedGate({self.learned!r}, fallback={self.fallback!r}, rates_hz={self.rates_hz})"
