"""The 2D tracker: Kalman equations, identities through crossings and occlusions, time-based
parameters, bad detections, and the hit-count gate."""
import numpy as np
import pytest
from filterpy.kalman import KalmanFilter

from persistence import HitCountGate, pad_histories
from tracker3d.detect.detections import Detections
from tracker3d.errors import Tracker3DError
from tracker3d.track2d.kalman import BatchedKalman
from tracker3d.track2d.tracker import LOST, TRACKED, ByteTracker, TrackerConfig, median0


def blobs(points, size=8.0, score=0.9):
    p = np.asarray(points, dtype=float).reshape(-1, 2)
    boxes = np.column_stack([p - size / 2, p + size / 2])
    return Detections.from_boxes(boxes, np.full(len(p), score), centroids=p)


def test_batched_kalman_equals_filterpy():
    rng = np.random.default_rng(0)
    acc, sacc, ms, sms, v0 = 400.0, 50.0, 1.5, 2.5, 200.0
    bk = BatchedKalman(acc, sacc, ms, sms, v0)
    z0 = rng.uniform(0, 500, (3, 4))
    bk.add(z0)
    kfs = []
    for z in z0:
        kf = KalmanFilter(dim_x=8, dim_z=4)
        kf.x = np.r_[z, np.zeros(4)]
        kf.H = np.hstack([np.eye(4), np.zeros((4, 4))])
        kf.R = np.diag([ms, ms, sms, sms]) ** 2
        kf.P = np.diag(np.r_[np.diag(kf.R), np.array([v0, v0, 20.0, 20.0]) ** 2])
        kfs.append(kf)
    for step in range(30):
        dt = rng.uniform(0.01, 0.08)
        F = np.eye(8)
        F[:4, 4:] = np.eye(4) * dt
        q = np.array([acc, acc, sacc, sacc]) ** 2
        Q = np.zeros((8, 8))
        i = np.arange(4)
        Q[i, i], Q[i, i + 4], Q[i + 4, i], Q[i + 4, i + 4] = q * dt ** 4 / 4, q * dt ** 3 / 2, q * dt ** 3 / 2, q * dt ** 2
        bk.predict(dt)
        for kf in kfs:
            kf.predict(F=F, Q=Q)
        z = rng.uniform(0, 500, (3, 4))
        mask = rng.random(3) < 0.7
        if step % 2:
            bk.update_masked(mask, z)
        else:
            bk.update(np.flatnonzero(mask), z[mask])
        for kf, zz, m in zip(kfs, z, mask):
            if m:
                kf.update(zz)
        np.testing.assert_allclose(bk.x, [kf.x for kf in kfs], rtol=1e-9, atol=1e-7)
        np.testing.assert_allclose(bk.P, [kf.P for kf in kfs], rtol=1e-9, atol=1e-7)


def run(tracker, frames, fps):
    out = []
    for k, pts in enumerate(frames):
        tracker.update(blobs(pts) if len(pts) else Detections.empty(), k / fps)
        rep = tracker.reported_mask()
        out.append(dict(zip(map(int, tracker.ids[rep]), map(tuple, tracker.measured()[rep, :2]))))
    return out


def test_crossing_keeps_identities():
    fps = 30
    frames = [[(50 + 8 * k, 100 + 2 * k), (290 - 8 * k, 100 + 2 * k)] for k in range(31)]  # cross at k=15
    out = run(ByteTracker(), frames, fps)
    first, last = out[5], out[30]
    left_id = min(first, key=lambda i: first[i][0])
    right_id = max(first, key=lambda i: first[i][0])
    assert last[left_id][0] > last[right_id][0], "identities follow the objects through the crossing"
    assert len(set().union(*map(set, out))) == 2


def test_short_occlusion_keeps_identity_and_coasts():
    fps = 30
    frames = [[(100 + 5 * k, 200.0)] if not 20 <= k < 29 else [] for k in range(45)]
    tr = ByteTracker()
    out = run(tr, frames, fps)
    assert set(out[10]) == set(out[40]) and len(out[40]) == 1
    tid = next(iter(out[40]))
    h = tr.history(int(np.flatnonzero(tr.ids == tid)[0]))
    assert h[:, 6].tolist().count(0.0) == 9, "the occluded steps are coasted rows"
    coasted = h[h[:, 6] == 0]
    np.testing.assert_allclose(coasted[:, 1], 100 + 5 * np.arange(20, 29), atol=1.5)


@pytest.mark.parametrize("fps", [15, 60])
def test_gaps_are_measured_in_seconds(fps):
    cfg = TrackerConfig(lost_buffer_s=1.0)

    def frames(gap_s):
        n0, gap = int(1.0 * fps), int(round(gap_s * fps))
        return [[(100 + 60 * k / fps, 100.0)] if not n0 <= k < n0 + gap else [] for k in range(n0 + gap + fps // 2)]

    kept = run(ByteTracker(cfg), frames(0.7), fps)
    assert len(set().union(*map(set, kept))) == 1, "a 0.7 s gap is bridged at any frame rate"
    lost = run(ByteTracker(cfg), frames(1.5), fps)
    assert len(set().union(*map(set, lost))) == 2, "a 1.5 s gap ends the track at any frame rate"


def test_bad_detections_are_dropped_and_counted():
    tr = ByteTracker(image_size=(320, 240))
    d = Detections.from_boxes(
        [[10, 10, 20, 20], [np.nan, 5, 9, 9], [30, 30, 30, 40], [50, 50, 40, 60], [400, 400, 410, 410],
         [-20, -20, -10, -10], [300, 230, 330, 250]], [0.9, 0.9, 0.9, 0.9, 0.9, 0.9, np.inf])
    tr.update(d, 0.0)
    assert len(tr) == 1 and tr.bad_detections == 6
    tr.update(Detections.empty(), 0.1)
    tr.update(Detections.from_boxes([[300, 230, 330, 250]], [1.7]), 0.2)  # clipped box, score clipped
    assert tr.ids.tolist() == [2], "the unconfirmed first track ended after 0.2 s unseen; a new one began"
    np.testing.assert_allclose(tr.measured()[0], [315, 240, 20, 10])  # centroid clipped, box clipped
    with pytest.raises(Tracker3DError, match="went backwards"):
        tr.update(Detections.empty(), 0.1)
    with pytest.raises(Tracker3DError, match="finite"):
        tr.update(Detections.empty(), float("nan"))


def test_low_score_detections_only_extend_tracks():
    tr = ByteTracker()
    for k in range(5):
        tr.update(blobs([(100 + 3 * k, 50)], score=0.9), k / 30)
    tid = int(tr.ids[0])
    for k in range(5, 10):
        tr.update(blobs([(100 + 3 * k, 50), (300, 300)], score=0.3), k / 30)
    assert tr.ids.tolist() == [tid], "low-score detections keep a track alive but start none"
    assert tr.state[0] == TRACKED and tr.matched[0]
    tr.update(Detections.empty(), 10 / 30)
    assert tr.state[0] == LOST


def test_history_rows_and_gate():
    tr = ByteTracker(gate=HitCountGate(min_hits=4, window_s=1.0))
    for k in range(3):
        tr.update(blobs([(10 + k, 10)]), k * 0.1)
    assert not tr.confirmed[0] and tr.gate_score[0] == pytest.approx(0.75)
    tr.update(blobs([(13, 10)]), 0.3)
    assert tr.confirmed[0] and tr.state[0] == TRACKED
    h = tr.history(0)
    assert h.shape == (4, 7)
    np.testing.assert_allclose(h[:, 0], [0, 0.1, 0.2, 0.3])
    np.testing.assert_allclose(h[:, 6], 1.0)
    np.testing.assert_allclose(h[:, 5], 0.9)
    np.testing.assert_allclose(h[:, 3:5], 8.0)


def test_hit_count_gate_on_padded_batches():
    g = HitCountGate(min_hits=3, window_s=0.5)
    hs = [np.array([[0.0, 0, 0, 1, 1, 1, 1], [0.1, 0, 0, 1, 1, 1, 1], [0.2, 0, 0, 1, 1, 0, 0]]),
          np.array([[0.0, 0, 0, 1, 1, 1, 1], [0.6, 0, 0, 1, 1, 1, 1], [0.7, 0, 0, 1, 1, 1, 1],
                    [0.8, 0, 0, 1, 1, 1, 1]]),
          np.array([[5.0, 0, 0, 1, 1, 1, 1]])]
    hist, lens = pad_histories(hs)
    p, s = g(np.arange(3), hist, lens)
    assert p.tolist() == [False, True, False]
    np.testing.assert_allclose(s, [2 / 3, 1.0, 1 / 3])
    hist, lens = pad_histories(hs, max_len=2)
    assert lens.tolist() == [2, 2, 1]
    with pytest.raises(ValueError):
        HitCountGate(0)


def test_commands_running_the_learned_gate_use_one_torch_thread():
    """track2d --video took up to 369 ms per frame under CPU load with torch's default thread
    pool (1.1-1.4 ms with one thread): make_gate, which every command uses, sets one thread."""
    import argparse

    torch = pytest.importorskip("torch")
    from tracker3d.commands.common import make_gate

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        make_gate(argparse.Namespace(gate="persistence", weights=None, gate_on=None, gate_off=None,
                                     gate_device="cpu", gate_latch=0.5, min_hits=3, window=1.0))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_median0_equals_numpy_median_bit_for_bit():
    rng = np.random.default_rng(11)
    for n in range(1, 24):
        for shape in ((n,), (n, 1), (n, 13)):
            a = rng.normal(size=shape) * 10.0 ** rng.uniform(-6, 6)
            if n > 3:
                a[1] = a[0]  # ties
            np.testing.assert_array_equal(median0(a), np.median(a, axis=0))
    a = np.array([1.0, np.inf, 3.0, np.inf])
    assert median0(a) == np.median(a) == np.inf


def test_iou_pairs_are_iou_matrix_entries_bit_for_bit():
    """The tracker's costs take IoU only for the pairs within reach (iou_pairs): the same numbers
    as the whole matrix's, so the tracks do not change."""
    from tracker3d.track2d.tracker import iou_matrix, iou_pairs

    rng = np.random.default_rng(0)
    a = rng.uniform(0, 100, (50, 2))
    b = rng.uniform(0, 100, (40, 2))
    a = np.hstack([a, a + rng.uniform(0, 30, (50, 2))])
    b = np.hstack([b, b + rng.uniform(0, 30, (40, 2))])
    r, q = (i.ravel() for i in np.indices((50, 40)))
    assert np.array_equal(iou_pairs(a[r], b[q]), iou_matrix(a, b).ravel())
    assert iou_pairs(a[:0], b[:0]).shape == (0,)
