"""Image formation for one simulated camera: textured background, discs in depth order,
brightness flicker and sensor noise (BGR uint8)."""
from __future__ import annotations

import cv2
import numpy as np

from calib import CameraModel

_SHIFT = 4  # sub-pixel bits for cv2.circle
_SCALE = 1 << _SHIFT


def make_background(width: int, height: int, rng: np.random.Generator, texture: float = 1.0) -> np.ndarray:
    """A static textured background: smooth blotches plus fine grain and a vertical gradient."""
    base = np.full((height, width, 3), 0, np.float32)
    for scale, amp in ((64, 22.0), (16, 10.0), (4, 5.0)):
        # Mostly luminance texture, with a weak colour component.
        small = rng.normal(0, 1, (height // scale + 2, width // scale + 2, 1)).astype(np.float32)
        small = small + 0.25 * rng.normal(0, 1, (height // scale + 2, width // scale + 2, 3)).astype(np.float32)
        big = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        base += amp * texture * big
    grad = np.linspace(-12, 12, height, dtype=np.float32)[:, None, None]
    tint = np.array([96, 104, 100], np.float32)
    return np.clip(base + grad * texture + tint, 0, 255).astype(np.uint8)


class NoiseBank:
    """Precomputed Gaussian noise frames, added/subtracted with saturation (fast per frame)."""

    def __init__(self, shape: tuple[int, ...], sigma: float, rng: np.random.Generator, n: int = 12):
        self.sigma = sigma
        self.pos, self.neg = [], []
        if sigma <= 0:
            return
        for _ in range(n):
            z = rng.normal(0, sigma, shape)
            self.pos.append(np.clip(z, 0, 255).astype(np.uint8))
            self.neg.append(np.clip(-z, 0, 255).astype(np.uint8))

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> None:
        if not self.pos:
            return
        k = int(rng.integers(len(self.pos)))
        cv2.add(img, self.pos[k], dst=img)
        cv2.subtract(img, self.neg[k], dst=img)


def project_discs(cam: CameraModel, X_cam: np.ndarray, radii: np.ndarray):
    """Pixel centres (N,2), pixel radii (N,) and in-front mask of spheres at X_cam (camera frame)."""
    n = len(X_cam)
    if n == 0:
        return np.zeros((0, 2)), np.zeros(0), np.zeros(0, bool)
    z = X_cam[:, 2]
    front = z > 0.05
    uv = np.full((n, 2), np.nan)
    if np.any(front):
        uv[front] = cam.project(X_cam[front])
    r_px = np.where(front, cam.K[0, 0] * radii / np.maximum(z, 1e-6), 0.0)
    return uv, r_px, front


MIN_VISIBLE_RADIUS_PX = 0.5  # a disc under a pixel across is not counted as visible


def visibility(uv: np.ndarray, r_px: np.ndarray, depth: np.ndarray, front: np.ndarray, size: tuple[int, int],
               occluders: int | None = None) -> np.ndarray:
    """1 where a disc's centre is inside the image, the disc is at least MIN_VISIBLE_RADIUS_PX
    across its radius (a sub-pixel speck is not visible), and no nearer disc covers it.

    The first `occluders` discs (default all) can occlude; all are tested.
    """
    w, h = size
    inside = front & (uv[:, 0] >= 0) & (uv[:, 0] <= w - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= h - 1) & \
        (np.nan_to_num(r_px, nan=0.0) >= MIN_VISIBLE_RADIUS_PX)
    n = len(uv)
    m = n if occluders is None else occluders
    if n == 0 or m == 0:
        return inside
    d = np.linalg.norm(uv[:, None, :] - uv[None, :m, :], axis=2)  # (n, m)
    nearer = depth[None, :m] < depth[:, None]
    covers = nearer & (d < r_px[None, :m]) & front[None, :m]
    covers[np.arange(min(n, m)), np.arange(min(n, m))] = False
    return inside & ~np.any(np.nan_to_num(covers, nan=False), axis=1)


def draw_discs(img: np.ndarray, uv: np.ndarray, r_px: np.ndarray, colors, order: np.ndarray) -> None:
    """Filled anti-aliased discs drawn in the given order (far to near), sub-pixel centres."""
    h, w = img.shape[:2]
    for i in order:
        u, v = uv[i]
        r = r_px[i]
        if not np.isfinite(u) or r <= 0 or u < -r or v < -r or u > w + r or v > h + r:
            continue
        cv2.circle(img, (int(round(u * _SCALE)), int(round(v * _SCALE))), max(1, int(round(r * _SCALE))),
                   colors[i], -1, cv2.LINE_AA, _SHIFT)
