"""Detections in one image: boxes, centroids, scores, areas (pixels)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class Detections:
    """N detections. boxes: (N,4) xyxy pixels; centroids: (N,2) pixels (sub-pixel, may differ
    from the box centre; the point that is tracked); scores: (N,) in [0,1];
    areas: (N,) pixels^2 (blob area, not box area); classes: (N,) labels or None (no classes)."""

    boxes: np.ndarray
    centroids: np.ndarray
    scores: np.ndarray
    areas: np.ndarray
    classes: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4)), np.zeros((0, 2)), np.zeros(0), np.zeros(0))

    @classmethod
    def from_boxes(cls, boxes, scores=None, centroids=None, areas=None, classes=None) -> "Detections":
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        n = len(b)
        s = np.ones(n) if scores is None else np.asarray(scores, dtype=np.float64).reshape(n)
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite boxes are dropped by sanitized()
            c = (np.column_stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2]) if centroids is None
                 else np.asarray(centroids, dtype=np.float64).reshape(n, 2))
            a = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) if areas is None
                 else np.asarray(areas, dtype=np.float64).reshape(n))
        return cls(b, c, s, a, None if classes is None else np.asarray(classes, dtype=object).reshape(n))

    def select(self, mask) -> "Detections":
        return Detections(self.boxes[mask], self.centroids[mask], self.scores[mask], self.areas[mask],
                          None if self.classes is None else self.classes[mask])

    def sanitized(self, image_size: Optional[tuple[int, int]] = None) -> tuple["Detections", int]:
        """Drop non-finite, zero/negative-size and fully out-of-image detections; clip the rest to
        the image and scores to [0,1]. Returns (clean detections, number dropped)."""
        b = self.boxes
        if len(b):
            # Fast path: everything already valid (comparisons are False for NaN, so these also
            # check finiteness) and, with an image size, inside the image.
            s = self.scores
            lo, hi = b.min(axis=0), b.max(axis=0)
            inside = image_size is None or (lo[0] >= 0 and lo[1] >= 0 and hi[2] <= image_size[0]
                                            and hi[3] <= image_size[1])
            if (inside and (b[:, 2:] > b[:, :2]).all() and np.isfinite(self.centroids).all()
                    and s.min() >= 0 and s.max() <= 1):
                return self, 0
        ok = np.all(np.isfinite(b), axis=1) & np.all(np.isfinite(self.centroids), axis=1) & np.isfinite(self.scores)
        with np.errstate(invalid="ignore"):
            ok &= (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
            if image_size is not None:
                w, h = image_size
                ok &= (b[:, 2] > 0) & (b[:, 3] > 0) & (b[:, 0] < w) & (b[:, 1] < h)
        d = self.select(ok)
        if image_size is not None and len(d):
            w, h = image_size
            d.boxes = d.boxes.copy()
            d.boxes[:, [0, 2]] = np.clip(d.boxes[:, [0, 2]], 0, w)
            d.boxes[:, [1, 3]] = np.clip(d.boxes[:, [1, 3]], 0, h)
            d.centroids = np.column_stack([np.clip(d.centroids[:, 0], 0, w), np.clip(d.centroids[:, 1], 0, h)])
        d.scores = np.clip(d.scores, 0.0, 1.0)
        return d, int((~ok).sum())
