"""Detection on a downscaled image, with positions mapped back to full-resolution pixels."""
from __future__ import annotations

import cv2
import numpy as np

from ..errors import Tracker3DError
from .base import Detector
from .detections import Detections

# Detector options that are lengths or areas in full-resolution pixels (scaled for the inner detector).
LENGTH_OPTIONS = ("merge_px",)
AREA_OPTIONS = ("min_area", "max_area")


def scaled_options(options: dict, scale: float) -> dict:
    """Detector options in full-resolution pixels as the same limits at `scale`."""
    out = dict(options)
    for k in LENGTH_OPTIONS:
        if out.get(k) is not None:
            out[k] = out[k] * scale
    for k in AREA_OPTIONS:
        if out.get(k) is not None:
            out[k] = out[k] * scale * scale
    return out


def to_full_resolution(d: Detections, scale: float) -> Detections:
    """Detections found on an image resized by `scale` (cv2.resize, INTER_AREA) in the full image's
    pixels. Boxes are pixel-edge coordinates (a box [0, w] covers the first w pixels), so they
    scale by 1/scale; centroids are pixel-centre coordinates (pixel i's centre is at i), so
    full = (small + 0.5) / scale - 0.5. A centroid that is its box's centre (box detectors) stays
    its mapped box's centre. Areas scale by 1/scale^2."""
    if len(d) == 0:
        return d
    inv = 1.0 / scale
    boxes = d.boxes * inv
    is_centre = np.all(d.centroids == (d.boxes[:, :2] + d.boxes[:, 2:]) / 2, axis=1)
    cents = np.where(is_centre[:, None], (boxes[:, :2] + boxes[:, 2:]) / 2, (d.centroids + 0.5) * inv - 0.5)
    return Detections(boxes, cents, d.scores, d.areas * inv * inv, d.classes)


class ScaledDetector:
    """Runs `inner` on each image resized by `scale` (0 < scale < 1, INTER_AREA: each small pixel
    is the mean of the full pixels it covers, so intensity-weighted centroids keep sub-pixel
    accuracy) and hands on its detections in full-resolution pixels. Build `inner` with
    `scaled_options` so its size limits mean the same objects."""

    def __init__(self, inner: Detector, scale: float):
        if not 0.0 < scale < 1.0:
            raise Tracker3DError(f"detect scale {scale}: expected a factor in (0, 1) (1 = no downscaling)")
        self.inner, self.scale = inner, float(scale)

    def detect(self, image: np.ndarray, t: float) -> Detections:
        h, w = image.shape[:2]
        size = (max(1, int(round(w * self.scale))), max(1, int(round(h * self.scale))))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        # The exact factor per axis (a rounded size differs from scale by under half a pixel).
        d = self.inner.detect(small, t)
        if len(d) == 0:
            return d
        sx, sy = size[0] / w, size[1] / h
        if abs(sx - sy) < 1e-12:
            return to_full_resolution(d, sx)
        fx, fy = to_full_resolution(d, sx), to_full_resolution(d, sy)
        boxes = np.column_stack([fx.boxes[:, 0], fy.boxes[:, 1], fx.boxes[:, 2], fy.boxes[:, 3]])
        cents = np.column_stack([fx.centroids[:, 0], fy.centroids[:, 1]])
        return Detections(boxes, cents, d.scores, d.areas / (sx * sy), d.classes)
