"""Outdoor robustness for background subtraction: global illumination gain and flutter map."""
from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.ma  # noqa: F401 - np.median imports it at its first call (~12 ms): here, not in a live frame

GAIN_STEP_PX = 8  # sample grid of the illumination estimate, full-resolution pixels
GAIN_CELL = 8  # samples per gain cell side: cells of GAIN_CELL x GAIN_STEP_PX = 64 pixels
MIN_SAMPLES = 16  # per cell; fewer and the cell takes the frame's median
LOCAL_MIN = 0.015  # a cell's gain departs from the frame's only by more than this


def illumination_gain(frame: np.ndarray, background: np.ndarray, fg_small: np.ndarray, scale: float,
                      clip: tuple[float, float] = (0.5, 2.0)) -> np.ndarray:
    """A coarse gain field g (one value per 64x64-pixel cell) such that g x frame matches the
    background on still pixels: outdoor light changes are not uniform (sun on the buildings, not
    on the grass), so one global gain leaves half the frame flooded.

    frame: HxW(x3) uint8; background: the same shape, float32 (grey levels); fg_small: the last
    foreground mask at `scale` x resolution (non-zero = moving, excluded). In each cell, g = median
    of background / frame over a GAIN_STEP_PX grid of pixels that are still, not dark (< 16) and
    not saturated (> 240) in either; a cell with fewer than MIN_SAMPLES such pixels takes the
    median over the frame (1.0 if the frame has too few). Clipped to `clip`. A median of ratios
    ignores whatever moves, as long as it covers under half a cell."""
    s, c = GAIN_STEP_PX, GAIN_CELL
    f, b = _every(frame, s), _every(background, s)
    if f.ndim == 3:
        f = cv2.cvtColor(f, cv2.COLOR_BGR2GRAY).astype(np.float32)
        b = cv2.cvtColor(b, cv2.COLOR_BGR2GRAY)
    else:
        f = f.astype(np.float32)
    h, w = f.shape
    ys = np.minimum((np.arange(h) * s * scale).astype(int), fg_small.shape[0] - 1)
    xs = np.minimum((np.arange(w) * s * scale).astype(int), fg_small.shape[1] - 1)
    ok = (fg_small[np.ix_(ys, xs)] == 0) & (f > 16) & (f < 240) & (b > 16) & (b < 240)
    ratio = np.where(ok, b / np.maximum(f, 1.0), np.inf)  # inf: excluded (sorts last)
    cy, cx = -(-h // c), -(-w // c)
    pad = np.full((cy * c, cx * c), np.inf, np.float32)
    pad[:h, :w] = ratio
    cells = np.sort(pad.reshape(cy, c, cx, c).transpose(0, 2, 1, 3).reshape(cy, cx, c * c), axis=2)
    n = np.count_nonzero(np.isfinite(cells[:, :, :]), axis=2)
    med = np.take_along_axis(cells, np.maximum(n // 2, 0)[:, :, None], axis=2)[:, :, 0]
    valid = ratio[ok]
    overall = float(np.median(valid)) if len(valid) >= MIN_SAMPLES else 1.0
    field = np.where(n >= MIN_SAMPLES, med, overall).astype(np.float32)
    # The frame's gain everywhere, plus a cell's own departure from it where that is consistent
    # with its neighbours (3x3 median) and larger than LOCAL_MIN: sensor noise and flicker stay a
    # single global gain, a real uneven change (sun on one side) is followed per cell.
    res = cv2.medianBlur(field - np.float32(overall), 3) if min(field.shape) >= 3 else field - np.float32(overall)
    field = np.float32(overall) + np.where(np.abs(res) > LOCAL_MIN, res, 0.0).astype(np.float32)
    return np.clip(field, *clip)


def _every(image: np.ndarray, step: int) -> np.ndarray:
    """image[::step, ::step], contiguous. When step divides both sides, OpenCV's nearest-neighbour
    resize picks exactly those pixels, about 4x faster than numpy's strided copy of a large
    float image (it is cold in the cache here)."""
    h, w = image.shape[:2]
    if h % step == 0 and w % step == 0:
        return cv2.resize(image, (w // step, h // step), interpolation=cv2.INTER_NEAREST)
    return np.ascontiguousarray(image[::step, ::step])


def apply_gain(image: np.ndarray, field: np.ndarray) -> np.ndarray:
    """image (HxW or HxWx3 uint8) x the gain field, bilinearly upsampled to the image size."""
    if float(field.min()) == float(field.max()):  # one gain for the whole frame: the fast path
        return cv2.convertScaleAbs(image, alpha=float(field.flat[0]))
    h, w = image.shape[:2]
    g = cv2.resize(field, (w, h), interpolation=cv2.INTER_LINEAR)
    if image.ndim == 3:
        g = cv2.merge([g] * image.shape[2])
    return cv2.multiply(image, g, dtype=cv2.CV_8U)


class FlutterMap:
    """Pixels whose foreground state toggles often for a long time (tape, leaves, flags).

    rate: per pixel, the exponential average (time constant tau_s seconds) of foreground
    toggles per second. update() returns the mask with the pixels whose rate exceeds hz (grown by
    one pixel) cleared. A person walking past toggles a pixel twice (arrives, leaves): about
    2 / tau_s per second, well under hz; tape in the wind toggles several times a second for
    minutes."""

    def __init__(self, hz: float = 1.0, tau_s: float = 8.0):
        self.hz, self.tau_s = float(hz), float(tau_s)
        self.rate: np.ndarray | None = None
        self._prev: np.ndarray | None = None
        self._grow = np.ones((3, 3), np.uint8)

    def update(self, mask: np.ndarray, dt: float, learn: bool = True) -> np.ndarray:
        """mask: uint8 foreground (0/255); dt: seconds since the last frame."""
        prev, self._prev = self._prev, mask
        if prev is None or prev.shape != mask.shape:
            self.rate = np.zeros(mask.shape, np.float32)
            return mask
        if not learn:
            return mask
        toggles = cv2.compare(mask, prev, cv2.CMP_NE)  # 255 where the state changed
        a = 1.0 - math.exp(-dt / self.tau_s)
        # rate <- (1 - a) rate + a x toggles / dt  (toggles per second)
        self.rate *= (1.0 - a)
        self.rate += (a / max(dt, 1e-3) / 255.0) * toggles.astype(np.float32)
        flutter = (self.rate > self.hz).astype(np.uint8)
        if not flutter.any():
            return mask
        flutter = cv2.dilate(flutter, self._grow)
        return cv2.bitwise_and(mask, mask, mask=cv2.bitwise_not(flutter * 255))
