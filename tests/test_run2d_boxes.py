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


def test_offline_backfill_reports_a_confirmed_tracks_first_hits():
    from tracker3d.run2d import run_mot

    def dets(f):  # one box moving right, and from frame 20 a one-frame flash that is never confirmed
        x = 100 + 2 * f
        boxes = [[x, 50, x + 20, 90]] + ([[300, 200, 310, 210]] if f == 20 else [])
        return Detections.from_boxes(boxes, [0.9] * len(boxes))

    online = run_mot(dets, 30, 10.0, ByteTracker(TrackerConfig(), HitCountGate(3, 1.0)))
    offline = run_mot(dets, 30, 10.0, ByteTracker(TrackerConfig(), HitCountGate(3, 1.0)), backfill=True)
    first = min(r[0] for r in online.rows)
    assert first == 3  # confirmed on its third hit: frames 1-2 are empty online
    assert [r[0] for r in offline.rows] == list(range(1, 31))  # offline: every frame, in order, one track
    assert offline.backfilled == first - 1 and len({r[1] for r in offline.rows}) == 1
    for f, _, x, y, w, h, _ in offline.rows[:first - 1]:
        np.testing.assert_allclose([x, y, w, h], [100 + 2 * f, 50, 20, 40])
        assert len(offline.points[f - 1][0]) == 1
