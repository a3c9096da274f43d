"""Re-acquisition after misses: a lost track takes back only a box of its own size, so a partial
body or a child-sized neighbour after an occlusion starts a new track instead of taking the ID."""

from persistence import HitCountGate
from tracker3d.detect.detections import Detections
from tracker3d.track2d.tracker import ByteTracker, TrackerConfig


def _run(cfg: TrackerConfig, after_gap):
    """A 30x90 px person walks right for 10 frames at 25 fps, is missed for 3, then `after_gap`
    boxes appear where it would be. Returns (the person's track id, ids reported after the gap)."""
    tr = ByteTracker(cfg, HitCountGate(3, 1.0))
    fps = 25.0
    for f in range(10):
        x = 100 + 3 * f
        tr.update(Detections.from_boxes([[x, 100, x + 30, 190]], [0.9]), f / fps)
    pid = int(tr.ids[tr.reported_mask()][0])
    for f in range(10, 13):
        tr.update(Detections.empty(), f / fps)
    x = 100 + 3 * 13
    tr.update(Detections.from_boxes(after_gap(x), [0.9] * len(after_gap(x))), 13 / fps)
    return pid, tr


def test_lost_track_reacquires_its_own_size():
    pid, tr = _run(TrackerConfig(), lambda x: [[x, 100, x + 30, 190]])
    assert pid in tr.ids[tr.matched]  # same size, predicted place: the same person again


def test_lost_track_does_not_take_a_partial_body():
    legs = lambda x: [[x, 150, x + 30, 190]]  # noqa: E731  the lower 40 px only (height ratio 2.25)
    pid, tr = _run(TrackerConfig(), legs)
    assert pid not in tr.ids[tr.matched]
    # ... which it did with no size check (the old behaviour), keeping its ID on the wrong box
    pid, tr = _run(TrackerConfig(reacquire_size=None), legs)
    assert pid in tr.ids[tr.matched]


def test_tracked_tracks_are_not_size_checked():
    """Only re-acquisition after a miss is checked: a tracked person who crouches keeps the ID."""
    tr = ByteTracker(TrackerConfig(), HitCountGate(3, 1.0))
    for f in range(10):
        x = 100 + 3 * f
        h = 90 if f < 9 else 50
        tr.update(Detections.from_boxes([[x, 190 - h, x + 30, 190]], [0.9]), f / 25.0)
    assert len(set(tr.ids)) == 1 and tr.matched.all()
