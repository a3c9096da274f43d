"""Boxes cut off by the image border, completed from the view's typical aspect ratio.

A detector's box of an object that leaves the image ends at the border: its centre moves inwards
along the cut axis (half the missing extent), and a triangulation from it lands decimetres off
(WildTrack C1-C2: most 3D points more than 0.5 m from every person came from such boxes). The
uncut axis still tells the object's scale, so the box is completed with the aspect ratio (w / h)
that the view's uncut boxes keep to (a running robust estimate), and the completed centre carries
the spread of that ratio as extra noise along the cut axis. A box cut on both sides of an axis, or
along both axes, cannot be completed: that axis's centre coordinate is unknown. All in pixels.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

LEFT, TOP, RIGHT, BOTTOM = range(4)


def cut_sides(boxes: np.ndarray, width: int, height: int, margin: float | np.ndarray = 1.0) -> np.ndarray:
    """(N, 4) bool: which sides (left, top, right, bottom) of boxes (N, 4) [x1, y1, x2, y2] lie
    within `margin` pixels of the image border (boxes clipped to the image end at width - 1 or at
    width, by the detector's convention: both count)."""
    b = np.asarray(boxes, float).reshape(-1, 4)
    m = np.asarray(margin, float)
    if m.ndim:  # per box (a scalar compares as it is: broadcast_to would cost more than the test)
        m = np.broadcast_to(m, (len(b),))
        return np.column_stack([b[:, 0] < m, b[:, 1] < m, b[:, 2] > width - 1 - m, b[:, 3] > height - 1 - m])
    lim = np.array([m, m, width - 1 - m, height - 1 - m])
    out = b > lim
    out[:, :2] = b[:, :2] < lim[:2]
    return out


@dataclass
class AspectModel:
    """A view's box aspect ratio, log(w / h), from its uncut boxes: median and robust standard
    deviation (1.4826 MAD) over the newest `window` boxes; unknown until `min_samples`."""

    window: int = 2000
    min_samples: int = 30
    _values: deque = field(default_factory=deque, repr=False)
    _estimate: Optional[tuple[float, float]] = field(default=None, repr=False)  # of the boxes so far
    _stale: bool = field(default=False, repr=False)  # boxes were added since _estimate

    def add(self, boxes: np.ndarray, sides: np.ndarray) -> None:
        """Learn from boxes (N, 4) [x1, y1, x2, y2] whose sides (N, 4) all lie inside the image."""
        b = np.asarray(boxes, float).reshape(-1, 4)
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        ok = ~np.asarray(sides, bool).reshape(-1, 4).any(axis=1) & (w > 0) & (h > 0)
        if ok.any():
            self._values.extend(np.log(w[ok] / h[ok]).tolist())
            while len(self._values) > self.window:
                self._values.popleft()
            self._stale = True

    def estimate(self) -> Optional[tuple[float, float]]:
        """(median log aspect, its robust std) or None while too few boxes were seen. Computed
        once per batch of boxes added (the pipeline asks for it several times a frame)."""
        if self._stale:
            self._stale = False
            if len(self._values) >= self.min_samples:
                v = np.fromiter(self._values, float, len(self._values))
                med = float(np.median(v))
                self._estimate = (med, float(1.4826 * np.median(np.abs(v - med))))
        return self._estimate


def complete_boxes(boxes: np.ndarray, sides: np.ndarray,
                   aspect: Optional[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Complete boxes (N, 4) [x1, y1, x2, y2] cut on `sides` (N, 4) along one axis and one side:
    the missing extent follows from the uncut axis and the aspect (median log(w / h), robust std),
    and the box grows away from the border (never shrinks). Returns (completed boxes (N, 4), extra
    std of the centre per axis (N, 2) pixels: 0 where uncut, the aspect's spread where completed,
    inf where unknown: cut on both sides of an axis, along both axes, or no aspect yet)."""
    b = np.asarray(boxes, float).reshape(-1, 4).copy()
    s = np.asarray(sides, bool).reshape(-1, 4)
    extra = np.zeros((len(b), 2))
    cut_x, cut_y = s[:, LEFT] | s[:, RIGHT], s[:, TOP] | s[:, BOTTOM]
    unknown_x = (s[:, LEFT] & s[:, RIGHT]) | (cut_x & cut_y) | (cut_x & (aspect is None))
    unknown_y = (s[:, TOP] & s[:, BOTTOM]) | (cut_x & cut_y) | (cut_y & (aspect is None))
    extra[unknown_x, 0] = np.inf
    extra[unknown_y, 1] = np.inf
    if aspect is None:
        return b, extra
    mu, spread = aspect
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    fx = cut_x & ~unknown_x  # width cut: from the height
    w_full = np.maximum(w, h * np.exp(mu))
    b[fx & s[:, LEFT], 0] = b[fx & s[:, LEFT], 2] - w_full[fx & s[:, LEFT]]
    b[fx & s[:, RIGHT], 2] = b[fx & s[:, RIGHT], 0] + w_full[fx & s[:, RIGHT]]
    extra[fx, 0] = 0.5 * w_full[fx] * spread
    fy = cut_y & ~unknown_y  # height cut: from the width
    h_full = np.maximum(h, w * np.exp(-mu))
    b[fy & s[:, TOP], 1] = b[fy & s[:, TOP], 3] - h_full[fy & s[:, TOP]]
    b[fy & s[:, BOTTOM], 3] = b[fy & s[:, BOTTOM], 1] + h_full[fy & s[:, BOTTOM]]
    extra[fy, 1] = 0.5 * h_full[fy] * spread
    return b, extra


# An unknown centre coordinate (a box cut that cannot be completed) is trusted as if its noise were
# this fraction of the box size sqrt(w h): half the box, i.e. barely.
UNKNOWN_SIGMA_REL = 0.5


def axis_sigma(base: np.ndarray, extra: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Per axis pixel noise (N, 2) of box centres: the base noise (N,) combined with the extra
    std of a completed cut (N, 2; complete_boxes), or UNKNOWN_SIGMA_REL x size (N,) where unknown."""
    base = np.asarray(base, float).reshape(-1, 1)
    extra = np.asarray(extra, float).reshape(-1, 2)
    s = np.sqrt(base ** 2 + np.where(np.isfinite(extra), extra, 0.0) ** 2)
    wide = np.maximum(base, UNKNOWN_SIGMA_REL * np.asarray(size, float).reshape(-1, 1))
    return np.where(np.isfinite(extra), s, wide)
