"""Default detector: background subtraction (OpenCV MOG2 or KNN), no weights needed."""
from __future__ import annotations

import cv2
import numpy as np

from ..errors import Tracker3DError
from .base import check_image, to_gray
from .blobs import blobs_to_detections
from .detections import Detections


class BackgroundSubtractionDetector:
    """Moving blobs against a learned background.

    The foreground mask comes from MOG2 (or KNN) on the colour image at `scale` x resolution
    (shadows, marked 127 by OpenCV, are dropped; colour keeps dark objects from being taken for
    shadows). The learning rate is 1/frames for the first warmup_frames (a fast start), then learning_rate; cleaned by a morphological opening; blobs come
    from connected components, with min_area/max_area in full-resolution pixels^2. Each blob's
    centroid is the sub-pixel weighted centroid of the colour difference |frame - background| at
    full resolution, where the background is a slow running average updated only where nothing
    moves (so slow objects are not absorbed). The score is the blob's
    mean contrast against that background divided by contrast_ref (grey levels), clipped to [0,1]:
    a faint noise speck scores low, a solid object high.
    """

    def __init__(self, method: str = "mog2", scale: float = 0.5, min_area: float = 6.0, max_area: float = 40000.0,
                 learning_rate: float = 0.002, warmup_frames: int = 60, history: int = 500, var_threshold: float = 16.0,
                 contrast_ref: float = 40.0, open_kernel: int = 3, bg_alpha: float = 0.004):
        if method not in ("mog2", "knn"):
            raise Tracker3DError(f"method {method!r}: expected mog2 or knn")
        if not 0.1 <= scale <= 1.0:
            raise Tracker3DError(f"scale {scale}: expected 0.1..1")
        if min_area < 0 or max_area <= min_area:
            raise Tracker3DError(f"min_area {min_area}, max_area {max_area}: expected 0 <= min_area < max_area")
        self.method = method
        self.scale = float(scale)
        self.min_area, self.max_area = float(min_area), float(max_area)
        self.learning_rate = float(learning_rate)
        self.contrast_ref = float(contrast_ref)
        self.bg_alpha = float(bg_alpha)
        self.warmup_frames = int(warmup_frames)
        self._make_sub = (lambda: cv2.createBackgroundSubtractorMOG2(history=history, varThreshold=var_threshold,
                                                                     detectShadows=True)) if method == "mog2" \
            else (lambda: cv2.createBackgroundSubtractorKNN(history=history, detectShadows=True))
        self.sub = self._make_sub()
        self._warm: list[tuple[np.ndarray, np.ndarray]] = []  # (small, full) frames of the warm-up
        self.kernel = (cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (open_kernel, open_kernel))
                       if open_kernel > 1 else None)
        self._bg: np.ndarray | None = None
        self._size: tuple[int, int] | None = None
        self._frames = 0

    def _restart_from_median(self) -> None:
        """Objects present from the first frame were learned into the background during the
        warm-up (and would leave 'ghosts' when they move): rebuild the background from the
        per-pixel median of the warm-up frames, in which moving objects do not survive."""
        stack = np.stack([w[0] for w in self._warm])
        small = np.median(stack, axis=0).astype(np.uint8)
        full = np.median(np.stack([w[1] for w in self._warm]), axis=0).astype(np.float32)
        self._warm = []
        self.sub = self._make_sub()
        # Re-learn from the warm-up frames with whatever moved replaced by the median, so the
        # model keeps the real sensor noise but none of the objects.
        for i, f in enumerate(stack):
            moved = cv2.absdiff(f, small) > 25
            self.sub.apply(np.where(moved, small, f), learningRate=1.0 / (i + 1))
        self._bg = full

    def detect(self, image: np.ndarray, t: float) -> Detections:
        check_image(image, self._size)
        if self._size is None:
            self._size = (image.shape[1], image.shape[0])
        src = image if image.ndim == 3 and image.shape[2] == 3 else to_gray(image)
        small = src if self.scale == 1.0 else cv2.resize(src, None, fx=self.scale, fy=self.scale,
                                                         interpolation=cv2.INTER_AREA)
        self._frames += 1
        warm = self._frames <= self.warmup_frames
        if warm and self._frames % 4 == 1:
            self._warm.append((small, src))
        if self._frames == self.warmup_frames and self._warm:
            self._restart_from_median()
        fg = self.sub.apply(small, learningRate=1.0 / self._frames if warm else self.learning_rate)
        mask = cv2.threshold(fg, 200, 255, cv2.THRESH_BINARY)[1]  # drop shadows (127)
        if self.kernel is not None:
            mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self.kernel)
        if self._bg is None:
            self._bg = src.astype(np.float32)
        bg = self._bg

        def weight(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
            d = np.abs(src[y0:y1, x0:x1].astype(np.float32) - bg[y0:y1, x0:x1])
            return d if d.ndim == 2 else d.sum(axis=2) * (1.0 / 3.0)

        if warm or self._frames % 2 == 0:  # every other frame, at twice the rate, after the warm-up
            full_mask = mask if self.scale == 1.0 else cv2.resize(mask, self._size, interpolation=cv2.INTER_NEAREST)
            still = cv2.bitwise_not(cv2.dilate(full_mask, None, iterations=2))
            alpha = 1.0 / self._frames if warm else min(1.0, 2 * self.bg_alpha)
            cv2.accumulateWeighted(src, self._bg, alpha, mask=still)
        if warm:  # no background yet: anything reported now would be a ghost later
            return Detections.empty()
        return blobs_to_detections(mask, weight, self._size, self.scale, self.min_area, self.max_area,
                                   self.contrast_ref)
