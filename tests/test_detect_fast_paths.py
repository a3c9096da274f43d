"""The background detector's faster paths compute exactly what the plain ones did: connected
components (Grana vs OpenCV's default), the still mask dilated at half resolution, the strided
sample of the illumination estimate, the channel mean of the centroid weights, and the warm-up median."""
import cv2
import numpy as np
import pytest

from tracker3d.detect.background import BackgroundSubtractionDetector
from tracker3d.detect.outdoor import _every


def _masks(rng, h, w, n=30):
    for _ in range(n):
        m = np.zeros((h, w), np.uint8)
        for _ in range(rng.integers(1, 12)):  # blobs of many shapes, some touching the border
            x, y = rng.integers(-5, w), rng.integers(-5, h)
            cv2.ellipse(m, (int(x), int(y)), (int(rng.integers(1, 20)), int(rng.integers(1, 30))),
                        float(rng.uniform(0, 180)), 0, 360, 255, -1)
        m[rng.random((h, w)) < 0.005] = 255  # specks
        yield m


def test_grana_components_equal_the_default_algorithm():
    rng = np.random.default_rng(0)
    for m in _masks(rng, 240, 320):
        n0, lab0, st0, c0 = cv2.connectedComponentsWithStats(m, connectivity=8)
        n1, lab1, st1, c1 = cv2.connectedComponentsWithStatsWithAlgorithm(m, 8, cv2.CV_32S, cv2.CCL_GRANA)
        assert n0 == n1
        np.testing.assert_array_equal(st0, st1)
        np.testing.assert_array_equal(lab0, lab1)


def test_still_mask_at_half_resolution_equals_the_full_resolution_dilation():
    rng = np.random.default_rng(1)
    det = BackgroundSubtractionDetector()
    for w, h in ((640, 480), (100, 60)):
        det._size = (w, h)
        for m in _masks(rng, h // 2, w // 2, 10):
            full = cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST)
            np.testing.assert_array_equal(det._still(m), cv2.bitwise_not(cv2.dilate(full, None, iterations=2)))
    det._size = (101, 61)  # odd sizes: the full-resolution path
    m = next(_masks(rng, 31, 51, 1))
    full = cv2.resize(m, (101, 61), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(det._still(m), cv2.bitwise_not(cv2.dilate(full, None, iterations=2)))


def test_every_eighth_pixel_equals_numpy_striding():
    rng = np.random.default_rng(2)
    for shape in ((480, 640, 3), (576, 768), (100, 90, 3), (61, 83)):
        for dtype in (np.uint8, np.float32):
            a = (rng.random(shape) * 255).astype(dtype)
            np.testing.assert_array_equal(_every(a, 8), a[::8, ::8])


def test_channel_mean_written_out_equals_the_sum():
    rng = np.random.default_rng(3)
    d = np.abs(rng.integers(0, 255, (40, 30, 3)).astype(np.float32) - (rng.random((40, 30, 3)) * 255).astype(np.float32))
    np.testing.assert_array_equal((d[..., 0] + d[..., 1] + d[..., 2]) * (1.0 / 3.0), d.sum(axis=2) * (1.0 / 3.0))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 14, 15, 16, 17])
def test_the_warm_up_median_by_sorting_network_is_numpys_median(n):
    from tracker3d.detect.background import median_of_frames

    rng = np.random.default_rng(n)
    for shape in [(5, 7, 3), (6, 4)]:
        frames = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]
        frames[0][0, 0] = 0  # ties and extremes
        if n > 1:
            frames[1][0, 0] = 255
            frames[-1][1, 1] = frames[0][1, 1]
        want = np.median(np.stack(frames), axis=0)
        for dtype in (np.float64, np.float32, np.uint8):
            got = median_of_frames(frames, dtype)
            assert got.dtype == dtype and np.array_equal(got, want.astype(dtype)), dtype
