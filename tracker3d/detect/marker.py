"""Bright or coloured marker detector (lab rigs with LEDs, retro-reflective or painted markers)."""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from ..errors import Tracker3DError
from .base import check_image, to_gray
from .blobs import blobs_to_detections
from .detections import Detections


class MarkerDetector:
    """Blobs whose pixels pass a threshold: greyscale intensity >= `min_value`, or, with `hue`
    given, an HSV box (hue range in OpenCV's 0..180 units, wrapping allowed, saturation and
    value minima). Centroids are intensity-weighted; score = mean value above threshold / 255."""

    def __init__(self, min_value: int = 200, hue: Optional[tuple[int, int]] = None, min_saturation: int = 80,
                 min_area: float = 4.0, max_area: float = 20000.0, open_kernel: int = 0):
        if not 0 <= min_value <= 255:
            raise Tracker3DError(f"min_value {min_value}: expected 0..255")
        if hue is not None and not (0 <= hue[0] <= 180 and 0 <= hue[1] <= 180):
            raise Tracker3DError(f"hue {hue}: expected two values in 0..180")
        self.min_value, self.hue, self.min_saturation = int(min_value), hue, int(min_saturation)
        self.min_area, self.max_area = float(min_area), float(max_area)
        self.kernel = (cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (open_kernel, open_kernel))
                       if open_kernel > 1 else None)

    def _mask(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.hue is None or image.ndim == 2:
            v = to_gray(image)
            return cv2.threshold(v, self.min_value - 1, 255, cv2.THRESH_BINARY)[1], v
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
        h0, h1 = self.hue
        lo_s, lo_v = self.min_saturation, self.min_value
        if h0 <= h1:
            mask = cv2.inRange(hsv, (h0, lo_s, lo_v), (h1, 255, 255))
        else:  # wraps around red
            mask = cv2.inRange(hsv, (h0, lo_s, lo_v), (180, 255, 255)) | cv2.inRange(hsv, (0, lo_s, lo_v),
                                                                                     (h1, 255, 255))
        return mask, hsv[:, :, 2]

    def detect(self, image: np.ndarray, t: float) -> Detections:
        check_image(image)
        mask, value = self._mask(image)
        if self.kernel is not None:
            mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self.kernel)
        floor = float(self.min_value - 1)

        def brightness(v: np.ndarray, m: np.ndarray) -> np.ndarray:  # above the floor, inside the mask
            w = v.astype(np.float32) - floor
            return np.where(m > 0, np.maximum(w, 0.0), 0.0).astype(np.float32)

        def weight(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
            return brightness(value[y0:y1, x0:x1], mask[y0:y1, x0:x1])

        def strength(idx: np.ndarray) -> np.ndarray:  # weight's values at flat pixel indices
            return brightness(np.take(value, idx), np.take(mask, idx))

        dets = blobs_to_detections(mask, weight, strength, (image.shape[1], image.shape[0]), 1.0, self.min_area,
                                   self.max_area, 255.0 - floor)
        return dets
