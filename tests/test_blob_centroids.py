"""blobs.weighted_centroids (small boxes in one gather, large ones by slices) against the
per-box cv2.moments loop it replaced, kept here as the reference."""
import cv2
import numpy as np
import pytest

from tracker3d.detect.blobs import GATHER_MAX_PX, GATHER_MIN_BOXES, weighted_centroids


def _reference(image: np.ndarray, x0, y0, x1, y1, contrast_ref: float):
    cents = np.empty((len(x0), 2))
    scores = np.empty(len(x0))
    for i in range(len(x0)):
        win = image[y0[i]:y1[i], x0[i]:x1[i]]
        thr = 0.25 * float(win.max())
        win = np.maximum(win - thr, 0.0)
        m = cv2.moments(win)
        if m["m00"] > 0:
            cents[i] = (x0[i] + m["m10"] / m["m00"], y0[i] + m["m01"] / m["m00"])
            scores[i] = (m["m00"] / max(np.count_nonzero(win), 1) + thr) / contrast_ref
        else:
            cents[i] = ((x0[i] + x1[i] - 1) / 2, (y0[i] + y1[i] - 1) / 2)
            scores[i] = 0.0
    return cents, scores


@pytest.mark.parametrize("seed", range(20))
def test_weighted_centroids_equal_the_per_box_moments(seed):
    rng = np.random.default_rng(seed)
    H, W = 120, 160
    image = (rng.random((H, W)) ** 3 * 90).astype(np.float32)
    image[rng.random((H, W)) < 0.3] = 0.0
    image[40:60, 10:30] = 0.0  # boxes with no strength at all
    n = int(rng.integers(1, 80))
    x0 = rng.integers(0, W - 3, n)
    y0 = rng.integers(0, H - 3, n)
    # (At least 3 x 3: cv2.moments takes an N x 2 or 1 x N float window for a list of points.)
    x1 = np.minimum(x0 + rng.integers(3, 40, n), W)
    y1 = np.minimum(y0 + rng.integers(3, 40, n), H)
    x0[0], y0[0], x1[0], y1[0] = 12, 42, 25, 55  # all zero
    calls = []

    def strength(idx):
        calls.append(len(idx))
        return np.take(image, idx)

    cents, scores = weighted_centroids(lambda a, b, c, d: image[a:b, c:d], strength, x0, y0, x1, y1, W, 40.0)
    ref_c, ref_s = _reference(image, x0, y0, x1, y1, 40.0)
    size = (x1 - x0) * (y1 - y0)
    small = size < GATHER_MAX_PX
    if small.sum() >= GATHER_MIN_BOXES:  # the small ones, gathered
        assert len(calls) == 1 and calls[0] == int(size[small].sum())
    else:
        assert not calls
    np.testing.assert_allclose(cents, ref_c, rtol=0, atol=1e-9)
    np.testing.assert_allclose(scores, ref_s, rtol=1e-12, atol=1e-12)
    assert tuple(cents[0]) == ((12 + 25 - 1) / 2, (42 + 55 - 1) / 2) and scores[0] == 0.0


def test_thin_boxes_are_images_too():
    """A blob at the image's edge can give a box 1 or 2 pixels wide: its centroid is still the
    weighted mean of its pixels (cv2.moments read such a window as a list of 2D points)."""
    image = np.zeros((600, 10), np.float32)
    image[3, 0], image[5, 0], image[5, 1] = 8.0, 4.0, 4.0
    x0, y0, x1, y1 = np.array([0, 0, 0]), np.array([2, 2, 2]), np.array([2, 1, 2]), np.array([7, 7, 599])
    cents, scores = weighted_centroids(lambda a, b, c, d: image[a:b, c:d], lambda idx: np.take(image, idx),
                                       x0, y0, x1, y1, 10, 10.0)
    w = np.array([6.0, 2.0, 2.0])  # each minus 8 / 4
    np.testing.assert_allclose(cents[0], [(2.0 * 1) / 10.0, (6 * 3 + 2 * 5 + 2 * 5) / 10.0])
    np.testing.assert_allclose(scores[0], (w.mean() + 2.0) / 10.0)
    np.testing.assert_allclose(cents[1], [0.0, (6 * 3 + 2 * 5) / 8.0])
    np.testing.assert_allclose(cents[2], cents[0])  # 2 x 597 pixels: above GATHER_MAX_PX, still gathered
