"""MOT rows from run_2d carry the detection's own box, not a box centred on its centroid."""
import numpy as np

from persistence import HitCountGate
from tracker3d.detect.detections import Detections
from tracker3d.run2d import run_2d
from tracker3d.track2d.tracker import ByteTracker, TrackerConfig


class _Blob:
    """A blob moving right 2 px a frame whose contrast-weighted centroid sits near its top-left."""

    def detect(self, image, t):
        x = 100 + 20 * t
        return Detections.from_boxes([[x, 50, x + 20, 90]], [0.9], centroids=[[x + 4, 56]])


def test_rows_are_the_blob_box_and_points_the_centroid():
    frames = [(k, k / 10, np.zeros((240, 320, 3), np.uint8)) for k in range(8)]
    res = run_2d(frames, _Blob(), ByteTracker(TrackerConfig(), HitCountGate(3, 1.0)))
    assert res.rows, "the track is confirmed within 8 frames"
    for f, _, x, y, w, h, _ in res.rows:
        x0 = 100 + 2 * (f - 1)
        np.testing.assert_allclose([x, y, w, h], [x0, 50, 20, 40], atol=1e-6)
        ids, pts = res.points[f - 1]
        np.testing.assert_allclose(pts[0], [x0 + 4, 56], atol=1e-6)
