"""The detector protocol and image checks shared by detectors."""
from __future__ import annotations

from typing import Protocol

import numpy as np

from ..errors import Tracker3DError
from .detections import Detections


class Detector(Protocol):
    def detect(self, image: np.ndarray, t: float) -> Detections:
        """Detections in one image (BGR or greyscale uint8) captured at t seconds."""
        ...


def check_image(image: np.ndarray, expected_size=None) -> None:
    """Tracker3DError for images a detector cannot use (wrong type, channels or size)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise Tracker3DError(f"image: expected a uint8 array, got {getattr(image, 'dtype', type(image).__name__)}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise Tracker3DError(f"image: expected HxW or HxWx{{1,3,4}}, got shape {image.shape}")
    if expected_size is not None and (image.shape[1], image.shape[0]) != tuple(expected_size):
        raise Tracker3DError(f"image: {image.shape[1]}x{image.shape[0]} but the detector was set up for "
                             f"{expected_size[0]}x{expected_size[1]}")


def to_gray(image: np.ndarray) -> np.ndarray:
    import cv2

    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[:, :, 0]
    return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
