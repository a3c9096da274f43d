"""Default detector: background subtraction (OpenCV MOG2 or KNN), no weights needed."""
from __future__ import annotations

import math
from typing import Optional

import cv2
import numpy as np

from ..errors import Tracker3DError
from .base import check_image, to_gray
from .blobs import blobs_to_detections
from .detections import Detections
from .outdoor import FlutterMap, apply_gain, illumination_gain

DEFAULT_FPS = 30.0  # frame rate assumed for the warm-up when the frame times do not advance
GAIN_TAU_S = 1.0  # time constant of the illumination gain's average, seconds
GAIN_MIN = 0.01  # a gain field within this of 1 everywhere is left alone (the model absorbs it)


def _sorting_network(n: int) -> list[tuple[int, int]]:
    """Compare-exchange pairs (i < j) that sort n values: Batcher's odd-even merge sort for the
    next power of two, without the pairs that touch an index >= n (those values would be +inf,
    which never move, so the rest still sorts)."""
    size = 1
    while size < n:
        size *= 2

    def merge(lo: int, hi: int, r: int):
        step = 2 * r
        if step < hi - lo:
            yield from merge(lo, hi, step)
            yield from merge(lo + r, hi, step)
            yield from ((i, i + r) for i in range(lo + r, hi - r, step))
        else:
            yield lo, lo + r

    def sort(lo: int, hi: int):
        if hi - lo >= 1:
            mid = lo + (hi - lo) // 2
            yield from sort(lo, mid)
            yield from sort(mid + 1, hi)
            yield from merge(lo, hi, 1)

    return [(i, j) for i, j in sort(0, size - 1) if j < n]


def _median_network(n: int) -> list[tuple[int, int]]:
    """The comparators of _sorting_network(n) that the middle output(s) depend on (walking back
    from them): the others only order values the median does not need."""
    need = {n // 2} if n % 2 else {n // 2 - 1, n // 2}
    keep = []
    for i, j in reversed(_sorting_network(n)):
        if i in need or j in need:
            keep.append((i, j))
            need |= {i, j}
    return keep[::-1]


def median_of_frames(frames: list[np.ndarray], dtype=np.float64) -> np.ndarray:
    """np.median(np.stack(frames), axis=0).astype(dtype) of same-shape uint8 images, exactly, by
    a network of whole-image min/max (~15 warm-up frames at 640x480x3 in ~10 ms instead of ~70:
    the warm-up's last frame, a live pair, waited for it). dtype float32/float64, or uint8 (the
    median's floor, as astype(np.uint8) gives)."""
    s = list(frames)
    n = len(s)
    for i, j in _median_network(n):
        s[i], s[j] = cv2.min(s[i], s[j]), cv2.max(s[i], s[j])
    if n % 2:
        return s[n // 2].astype(dtype)
    lo, hi = s[n // 2 - 1], s[n // 2]
    if np.dtype(dtype) == np.uint8:  # floor((lo + hi) / 2) without overflow
        return (lo >> 1) + (hi >> 1) + (lo & hi & 1)
    return (lo.astype(dtype) + hi) / dtype(2)


class BackgroundSubtractionDetector:
    """Moving blobs against a learned background.

    The foreground mask comes from MOG2 (or KNN) on the colour image at `scale` x resolution
    (shadows, marked 127 by OpenCV, are dropped; colour keeps dark objects from being taken for
    shadows). Outdoors three things would flood it, and are handled before the blobs:
    - a lighting change (clouds, sun, auto exposure): each frame is multiplied by a coarse gain
      field (per 64-pixel cell) that brings its still pixels back to the learned background
      (`illumination_gain`, averaged over GAIN_TAU_S so that frame-to-frame flicker is left to the
      model), so the model sees constant lighting (`compensate=False`: off);
    - the warm-up: the first `warmup_s` seconds of frame time (not a frame count: the same at any
      frame rate; at least 8 frames; 30 fps assumed if the times do not advance) learn fast
      (rate 1/frames), then the model is rebuilt from the per-pixel median of those frames (so
      objects present from the start leave no ghosts) and learns slowly (`learning_rate`);
      nothing is reported during the warm-up;
    - persistent small oscillating motion (tape, leaves, flags): pixels whose foreground state
      toggles more than `flutter_hz` times a second on average over the last ~`flutter_s` seconds
      are taken as background (`FlutterMap`; 0 turns it off).
    The mask is cleaned by a morphological opening; blobs come from connected components, with
    fragments whose boxes come within `merge_px` pixels merged into one (0: no merging), and a size
    prior min_area/max_area in full-resolution pixels^2 (see `sizeprior` for limits from a
    calibration). Each detection's box is the blob's box; its centroid (an extra field, the point
    that is tracked in 3D) is the sub-pixel weighted centroid of the colour difference
    |frame - background| at full resolution, where the background is a slow running average
    updated only where nothing moves (so slow objects are not absorbed). The score is the blob's
    mean contrast against that background divided by contrast_ref (grey levels), clipped to [0,1].
    """

    def __init__(self, method: str = "mog2", scale: float = 0.5, min_area: float = 6.0, max_area: float = 40000.0,
                 learning_rate: float = 0.002, warmup_s: float = 2.0, history: int = 500, var_threshold: float = 16.0,
                 contrast_ref: float = 40.0, open_kernel: int = 3, bg_alpha: float = 0.004, merge_px: float = 0.0,
                 compensate: bool = True, flutter_hz: float = 1.0, flutter_s: float = 8.0):
        if method not in ("mog2", "knn"):
            raise Tracker3DError(f"method {method!r}: expected mog2 or knn")
        if not 0.1 <= scale <= 1.0:
            raise Tracker3DError(f"scale {scale}: expected 0.1..1")
        if min_area < 0 or max_area <= min_area:
            raise Tracker3DError(f"min_area {min_area}, max_area {max_area}: expected 0 <= min_area < max_area")
        if warmup_s < 0 or merge_px < 0 or flutter_hz < 0 or flutter_s <= 0:
            raise Tracker3DError(f"warmup_s {warmup_s}, merge_px {merge_px}, flutter_hz {flutter_hz}, flutter_s "
                                 f"{flutter_s}: expected non-negative values (flutter_s > 0)")
        self.method = method
        self.scale = float(scale)
        self.min_area, self.max_area = float(min_area), float(max_area)
        self.learning_rate = float(learning_rate)
        self.contrast_ref = float(contrast_ref)
        self.bg_alpha = float(bg_alpha)
        self.warmup_s = float(warmup_s)
        self.merge_px = float(merge_px)
        self.compensate = bool(compensate)
        self.flutter = FlutterMap(flutter_hz, flutter_s) if flutter_hz > 0 else None
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
        self._t0: Optional[float] = None
        self._t_prev: Optional[float] = None
        self._warm_done = False  # the warm-up is over (its last frame was seen)
        self._stride = 4  # keep every stride-th warm-up frame for the median
        self._prev_mask: Optional[np.ndarray] = None
        self.gain = np.ones((1, 1), np.float32)  # the last frame's illumination gain field (per 64 px cell)
        # A warm-up frame's model work may wait until flush() (the detector process sets this: it
        # answers first, then does it while the caller tracks); the frame then must stay untouched.
        self.defer_warmup = False
        self._deferred: Optional[tuple] = None

    @property
    def warmup_frames(self) -> int:
        """Warm-up length in frames at DEFAULT_FPS (the frame count when frame times do not advance)."""
        return max(8, int(math.ceil(self.warmup_s * DEFAULT_FPS)))

    def warmup_frames_at(self, fps: float) -> int:
        """Frames the warm-up lasts at `fps` frames per second."""
        return max(8, int(math.ceil(self.warmup_s * fps - 1e-9)))

    def _in_warmup(self, t: float) -> tuple[bool, bool]:
        """(this frame is in the warm-up, it is the warm-up's last frame)."""
        if self._warm_done:
            return False, False
        if self._t0 is None:
            self._t0 = float(t)
        elapsed = float(t) - self._t0
        if elapsed > 0 and self._frames == 2:  # keep ~15 frames for the median, whatever the rate
            self._stride = max(1, int(round(self.warmup_frames_at(1.0 / elapsed) / 15)))
        # The frames' own times when they advance (any frame rate), else the frame count at 30 fps.
        n = self.warmup_frames_at((self._frames - 1) / elapsed) if elapsed > 0 else self.warmup_frames
        if self._frames >= n:
            self._warm_done = True
        return self._frames <= n, self._frames >= n

    def _restart_from_median(self) -> None:
        """Objects present from the first frame were learned into the background during the
        warm-up (and would leave 'ghosts' when they move): rebuild the background from the
        per-pixel median of the warm-up frames, in which moving objects do not survive."""
        stack = [w[0] for w in self._warm]
        small = median_of_frames(stack, np.uint8)
        full = median_of_frames([w[1] for w in self._warm], np.float32)
        self._warm = []
        self.sub = self._make_sub()
        # Re-learn from the warm-up frames with whatever moved replaced by the median, so the
        # model keeps the real sensor noise but none of the objects.
        for i, f in enumerate(stack):  # (the small frames, in order)
            moved = cv2.absdiff(f, small) > 25
            self.sub.apply(np.where(moved, small, f), learningRate=1.0 / (i + 1))
        self._bg = full

    def _compensate(self, src: np.ndarray, dt: float) -> np.ndarray:
        """src scaled by the gain that matches its still pixels to the learned background,
        averaged over GAIN_TAU_S: lighting drifts over seconds (clouds, the sun, exposure), while
        frame-to-frame flicker is noise the model already absorbs."""
        if self._bg is None or self._prev_mask is None:
            return src
        g = illumination_gain(src, self._bg, self._prev_mask, self.scale)
        if self.gain.shape != g.shape:
            self.gain = np.ones_like(g)
        self.gain += (1.0 - math.exp(-dt / GAIN_TAU_S)) * (g - self.gain)
        if np.abs(self.gain - 1.0).max() < GAIN_MIN:
            return src
        return apply_gain(src, self.gain)

    def _still(self, mask: np.ndarray) -> np.ndarray:
        """Full-resolution mask (255) of the pixels more than 2 pixels from any foreground of
        `mask` (at `scale`): where the slow background may learn."""
        h, w = mask.shape
        if self.scale == 0.5 and self._size == (2 * w, 2 * h):
            # Each small pixel is a 2x2 block: growing the blocks by 2 full pixels is growing the
            # small mask by 1 pixel, so dilate and invert at a quarter of the pixels (identical).
            return cv2.resize(cv2.bitwise_not(cv2.dilate(mask, None)), self._size, interpolation=cv2.INTER_NEAREST)
        full_mask = mask if self.scale == 1.0 else cv2.resize(mask, self._size, interpolation=cv2.INTER_NEAREST)
        return cv2.bitwise_not(cv2.dilate(full_mask, None, iterations=2))

    def detect(self, image: np.ndarray, t: float) -> Detections:
        self.flush()
        check_image(image, self._size)
        if self._size is None:
            self._size = (image.shape[1], image.shape[0])
        src = image if image.ndim == 3 and image.shape[2] == 3 else to_gray(image)
        self._frames += 1
        warm, last = self._in_warmup(t)
        dt = (float(t) - self._t_prev) if self._t_prev is not None and t > self._t_prev else 1.0 / DEFAULT_FPS
        self._t_prev = float(t)
        if warm and self.defer_warmup:
            # Nothing is reported during the warm-up, so the answer does not wait for its model work
            # (the last frame's rebuild from the median above all): flush() does it, before the next
            # frame at the latest. The frame is kept: only for callers that never reuse its buffer.
            self._deferred = (src, dt, warm, last)
            return Detections.empty()
        return self._learn_and_find(src, dt, warm, last)

    def flush(self) -> None:
        """The model work a warm-up frame left for later (defer_warmup), if any."""
        if self._deferred is not None:
            args, self._deferred = self._deferred, None
            self._learn_and_find(*args)

    def _learn_and_find(self, src: np.ndarray, dt: float, warm: bool, last: bool) -> Detections:
        """Everything after the frame's bookkeeping: the model's update and, after the warm-up, the blobs."""
        if self.compensate and not warm:
            src = self._compensate(src, dt)
        small = src if self.scale == 1.0 else cv2.resize(src, None, fx=self.scale, fy=self.scale,
                                                         interpolation=cv2.INTER_AREA)
        if warm and (self._frames - 1) % self._stride == 0:
            self._warm.append((small, src))
        if last and self._warm:
            self._restart_from_median()
        fg = self.sub.apply(small, learningRate=1.0 / self._frames if warm else self.learning_rate)
        mask = cv2.threshold(fg, 200, 255, cv2.THRESH_BINARY)[1]  # drop shadows (127)
        if self.kernel is not None:
            mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self.kernel)
        if self.flutter is not None:
            mask = self.flutter.update(mask, dt, learn=not warm)
        self._prev_mask = mask
        if self._bg is None:
            self._bg = src.astype(np.float32)
        bg = self._bg
        if warm or self._frames % 2 == 0:  # every other frame, at twice the rate, after the warm-up
            still = self._still(mask)
            alpha = 1.0 / self._frames if warm else min(1.0, 2 * self.bg_alpha)
            cv2.accumulateWeighted(src, self._bg, alpha, mask=still)
        if warm:  # no background yet: anything reported now would be a ghost later
            return Detections.empty()
        colour = src.ndim == 3

        def contrast(pixels: np.ndarray, background: np.ndarray) -> np.ndarray:
            d = np.abs(pixels.astype(np.float32) - background)
            # The channel mean; written out, 3x faster than d.sum(axis=-1) and the same sums.
            return (d[..., 0] + d[..., 1] + d[..., 2]) * np.float32(1.0 / 3.0) if colour else d

        flat_src = src.reshape(src.shape[0] * src.shape[1], *src.shape[2:])
        flat_bg = bg.reshape(flat_src.shape)

        def weight(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
            return contrast(src[y0:y1, x0:x1], bg[y0:y1, x0:x1])

        def strength(idx: np.ndarray) -> np.ndarray:  # weight's values at flat pixel indices
            return contrast(np.take(flat_src, idx, axis=0), np.take(flat_bg, idx, axis=0))

        return blobs_to_detections(mask, weight, strength, self._size, self.scale, self.min_area, self.max_area,
                                   self.contrast_ref, merge_px=self.merge_px)
