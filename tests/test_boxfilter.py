"""The SORT-style output box (track2d.boxfilter): equal to filterpy's full 7x7 filter, smooth in
aspect ratio when a detector's width and height jitter independently, aligned with the tracker's
tracks through births and removals, and written by track2d --box filtered."""
import numpy as np
import pytest
from filterpy.kalman import KalmanFilter

from persistence import HitCountGate
from tracker3d.cli import main
from tracker3d.detect.detections import Detections
from tracker3d.errors import Tracker3DError
from tracker3d.run2d import Run2D, run_mot
from tracker3d.track2d.boxfilter import (
    BoxFilterConfig,
    BoxKalman,
    TrackBoxes,
    usr_to_xyxy,
    xyxy_to_usr,
)
from tracker3d.track2d.mot import read_mot, write_mot
from tracker3d.track2d.tracker import ByteTracker, TrackerConfig, iou_matrix


def _reference(z0: np.ndarray, c: BoxFilterConfig) -> KalmanFilter:
    """SORT's KalmanBoxTracker layout: x = [u, v, s, r, du, dv, ds], r without velocity."""
    kf = KalmanFilter(dim_x=7, dim_z=4)
    kf.H = np.hstack([np.eye(4), np.zeros((4, 3))])
    kf.x = np.r_[z0, np.zeros(3)].reshape(7, 1)
    r = np.array([c.meas_rel * z0[2]] * 3 + [c.aspect_meas_rel * z0[3]]) ** 2
    kf.P = np.diag(np.r_[r, np.full(3, (c.init_vel_rel * z0[2]) ** 2)])
    return kf


def _sort_step(kf: KalmanFilter, c: BoxFilterConfig, dt: float) -> None:
    F = np.eye(7)
    F[:3, 4:] = np.eye(3) * dt
    u, v, s, r = kf.x[:4, 0]
    qa = c.accel_rel ** 2 * c.ref_dt * s * s
    Q = np.zeros((7, 7))
    for i in range(3):
        Q[i, i] = qa * dt ** 3 / 3 + c.walk_rel ** 2 * dt * s * s
        Q[i, i + 4] = Q[i + 4, i] = qa * dt ** 2 / 2
        Q[i + 4, i + 4] = qa * dt
    Q[3, 3] = c.aspect_walk_rel ** 2 * dt * r * r
    kf.predict(F=F, Q=Q)


def test_box_kalman_equals_a_sort_style_filterpy_filter():
    rng = np.random.default_rng(3)
    c = BoxFilterConfig(walk_rel=0.2)  # every term of Q in play
    boxes = np.column_stack([rng.uniform(0, 400, (3, 2)), rng.uniform(420, 600, (3, 2))])
    z0 = xyxy_to_usr(boxes)
    bk = BoxKalman(c)
    bk.add(z0)
    refs = [_reference(z, c) for z in z0]
    for step in range(40):
        dt = rng.uniform(0.02, 0.5)
        bk.predict(dt)
        for kf in refs:
            _sort_step(kf, c, dt)
        z = xyxy_to_usr(boxes + rng.normal(0, 5, boxes.shape))
        mask = rng.random(3) < 0.7  # some frames missed
        idx = np.flatnonzero(mask)
        bk.update(idx, z[idx])
        for i in idx:
            R = np.diag(np.r_[np.full(3, (c.meas_rel * z[i, 2]) ** 2), (c.aspect_meas_rel * z[i, 3]) ** 2])
            refs[i].update(z[i].reshape(4, 1), R=R)
        for i, kf in enumerate(refs):
            np.testing.assert_allclose(bk.x[i, :7], kf.x[:, 0], rtol=1e-9, atol=1e-9)
            assert bk.x[i, 7] == 0.0  # r has no velocity
            np.testing.assert_allclose(bk.pp[i], np.diag(kf.P)[:4], rtol=1e-9)
            np.testing.assert_allclose(bk.pv[i, :3], np.diag(kf.P[:3, 4:]), rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(bk.vv[i, :3], np.diag(kf.P)[4:], rtol=1e-9)


def test_usr_conversion_round_trips():
    b = np.array([[10.0, 20.0, 50.0, 140.0], [0.0, 0.0, 3.0, 1.0]])
    np.testing.assert_allclose(usr_to_xyxy(xyxy_to_usr(b)), b, atol=1e-9)


def _walker(f: int, rng: np.random.Generator, jitter: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """A 40x100 px person walking right 3 px a frame; the detector's width and height jitter
    independently by `jitter` (log-normal), its centre by 2 px. Returns (truth, detection) xyxy."""
    cx, cy, w, h = 100 + 3 * f, 200, 40.0, 100.0
    truth = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    dw, dh = w * np.exp(rng.normal(0, jitter)), h * np.exp(rng.normal(0, jitter))
    dx, dy = rng.normal(0, 2, 2)
    return truth, np.array([cx + dx - dw / 2, cy + dy - dh / 2, cx + dx + dw / 2, cy + dy + dh / 2])


def test_filtered_box_keeps_its_aspect_when_width_and_height_jitter_independently():
    rng = np.random.default_rng(0)
    frames = [_walker(f, rng) for f in range(1, 101)]
    truth = {f: t for f, (t, _) in enumerate(frames, 1)}

    def run(box):
        res = run_mot(lambda f: Detections.from_boxes(frames[f - 1][1][None], [0.9]), 100, 25.0,
                      ByteTracker(TrackerConfig(), HitCountGate(3, 1.0)), box=box)
        rows = np.array([r[:6] for r in res.rows if r[0] > 10])  # after the filter settles
        assert len(rows) == 90 and len(set(rows[:, 1])) == 1  # one track throughout
        xyxy = np.column_stack([rows[:, 2:4], rows[:, 2:4] + rows[:, 4:6]])
        iou = np.array([iou_matrix(truth[int(f)][None], b[None])[0, 0] for f, b in zip(rows[:, 0], xyxy)])
        return np.log(rows[:, 4] / rows[:, 5]), iou

    raw_aspect, raw_iou = run("detection")
    aspect, iou = run("filtered")
    assert np.std(np.diff(aspect)) < 0.3 * np.std(np.diff(raw_aspect))  # frame to frame: smooth
    assert abs(np.mean(aspect) - np.log(0.4)) < 0.03  # and still the person's shape
    assert iou.mean() > raw_iou.mean() + 0.03
    assert (iou < 0.8).sum() < 0.2 * (raw_iou < 0.8).sum()  # 0 of 90 boxes vs 28


def test_track_boxes_follow_births_and_removals():
    tracker = ByteTracker(TrackerConfig(lost_buffer_s=0.2), HitCountGate(2, 1.0))
    tb = TrackBoxes()
    seen = set()
    for f in range(40):
        boxes = [[100 + 2 * f, 50, 140 + 2 * f, 150]]
        if 10 <= f < 20:  # a second person for a while, then gone
            boxes.append([300, 60 + f, 330, 140 + f])
        if f >= 30:  # a third one later
            boxes.append([500, 300, 530, 380])
        tracker.update(Detections.from_boxes(boxes, [0.9] * len(boxes)), f / 10)
        tb.step(tracker)
        out = tb.boxes(tracker)
        assert out.shape == (len(tracker.ids), 4)
        np.testing.assert_array_equal(tb.ids, tracker.ids)
        for i in np.flatnonzero(tracker.matched):
            det = tracker.last_detections.boxes[tracker.det_index[i]]
            assert iou_matrix(det[None], out[i][None])[0, 0] > 0.8  # each row follows its own person
        seen.update(tracker.ids.tolist())
    assert len(seen) == 3 and len(tracker.ids) == 2  # the second was removed, the third born


def test_filtered_backfill_and_bad_box_kind():
    dets = lambda f: Detections.from_boxes([[100 + 2 * f, 50, 120 + 2 * f, 90]], [0.9])  # noqa: E731
    res = run_mot(dets, 10, 10.0, ByteTracker(TrackerConfig(), HitCountGate(3, 1.0)), backfill=True, box="filtered")
    assert [r[0] for r in res.rows] == list(range(1, 11)) and res.backfilled == 2
    for f, _, x, y, w, h, _ in res.rows:  # no jitter: the filtered box is the box
        np.testing.assert_allclose([x, y, w, h], [100 + 2 * f, 50, 20, 40], atol=0.5)
    with pytest.raises(Tracker3DError, match="box 'smooth': expected one of detection, filtered"):
        Run2D(box="smooth")


def test_track2d_box_filtered_writes_smoother_rows(tmp_path):
    rng = np.random.default_rng(1)
    rows = [(f, -1, *(lambda b: (b[0], b[1], b[2] - b[0], b[3] - b[1]))(_walker(f, rng, 0.15)[1]), 1.0)
            for f in range(1, 61)]
    det = tmp_path / "det.txt"
    write_mot(det, rows)
    aspects = {}
    for box in ("detection", "filtered"):
        out = tmp_path / f"{box}.txt"
        assert main(["track2d", "--det", str(det), "--fps", "25", "--box", box, "--out", str(out)]) == 0
        m = read_mot(out)
        assert len(m.frame) == 60
        aspects[box] = np.std(np.diff(np.log(m.boxes[:, 2] / m.boxes[:, 3])))
    assert aspects["filtered"] < 0.3 * aspects["detection"]
