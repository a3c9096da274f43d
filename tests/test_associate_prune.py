"""Association pruning: candidate pairs that provably fail the gate are skipped before the windowed
Sampson cost, and the association is the same as without pruning (same pairs, same distances, same
evidence), on a crowd and on random scenes; last frame's pairs are never pruned."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from persistence import HitCountGate
from streams.detections import Boxes2D, DetectionPair
from tracker3d.pipeline import PipelineConfig, StereoPipeline
from tracker3d.sim import SimWorld, get_scene
from tracker3d.stereo.associate import AssociationConfig, StereoAssociator


class CheckedAssociator(StereoAssociator):
    """Prunes, and checks every call against an unpruned associator in the same state."""

    def __init__(self, calib, config):
        super().__init__(calib, dataclasses.replace(config, prune=True))
        self.calls = self.pruned = self.candidates = self.kept_held = 0

    def associate(self, trk0, idx0, trk1, idx1, t_now, dt_frame, min_common=None):
        ref = StereoAssociator(self.calib, dataclasses.replace(self.cfg, prune=False))
        ref.pairs = dict(self.pairs)
        held = dict(self.pairs)
        want = ref.associate(trk0, idx0, trk1, idx1, t_now, dt_frame, min_common)
        full = ref.cost_matrix(trk0, idx0, trk1, idx1, t_now, dt_frame)
        got = super().associate(trk0, idx0, trk1, idx1, t_now, dt_frame, min_common)
        assert got == want and self.pairs == ref.pairs and self.evidence_s == ref.evidence_s
        # What was computed equals the full cost bit for bit; what was pruned fails the gate.
        n0, n1 = len(idx0), len(idx1)
        if n0 and n1:
            part = self.cost_matrix(trk0, idx0, trk1, idx1, t_now, dt_frame, prune_gate=self._gate, keep=self._keep)
            done = np.isfinite(part)
            assert np.array_equal(part[done], full[done])
            skipped = ~done & np.isfinite(full)
            assert (full[skipped] >= self._gate[skipped]).all()
            assert not (self._keep & skipped).any()  # last frame's pairs are never pruned
            ids0, ids1 = trk0.ids[idx0], trk1.ids[idx1]
            self.kept_held += sum(1 for a in ids0 if held.get(int(a), -1) in set(ids1.tolist()))
            self.pruned += self.last_pruned
            self.candidates += n0 * n1
        self.calls += 1
        return got

    def cost_matrix(self, trk0, idx0, trk1, idx1, t_now, dt_frame, prune_gate=None, keep=None):
        if prune_gate is not None:
            self._gate, self._keep = prune_gate, keep
        return super().cost_matrix(trk0, idx0, trk1, idx1, t_now, dt_frame, prune_gate, keep)


def _detection_pairs(scene, seed, frames, noise_px=0.3, miss=0.0, false_per_cam=0.0):
    """Boxes around the sim's ground-truth pixels (no rendering-dependent detector), with noise,
    misses and false boxes drawn from a seeded generator."""
    world = SimWorld(scene, seed=seed)
    rng = np.random.default_rng(seed + 100)
    w, h = scene.width, scene.height
    for _ in range(frames):
        pair, gt = world.step()
        boxes = []
        for cam in (0, 1):
            uv = np.array([r.uv0 if cam == 0 else r.uv1 for r in gt if r.kind == "object"
                           and (r.vis0 if cam == 0 else r.vis1)]).reshape(-1, 2)
            uv = uv[rng.random(len(uv)) >= miss]
            uv = uv + rng.normal(0.0, noise_px, uv.shape)
            n_false = rng.poisson(false_per_cam)
            uv = np.vstack([uv, rng.uniform([0, 0], [w, h], (n_false, 2))])
            half = rng.uniform(3.0, 6.0, (len(uv), 1))
            b = np.hstack([uv - half, uv + half])
            keep = (b[:, 0] >= 0) & (b[:, 1] >= 0) & (b[:, 2] <= w) & (b[:, 3] <= h)
            boxes.append(Boxes2D(b[keep], np.ones(int(keep.sum()))))
        yield DetectionPair(pair.index, pair.t0, pair.t1, boxes[0], boxes[1])


def _run(scene, seed, frames, **kw) -> CheckedAssociator:
    pipe = StereoPipeline(SimWorld(scene, seed=seed).calib, PipelineConfig(threads=False), gate=HitCountGate(3, 1.0))
    pipe.associator = checked = CheckedAssociator(pipe.calib, AssociationConfig())
    paired = 0
    for p in _detection_pairs(scene, seed, frames, **kw):
        pipe.step(p)
        paired += len(pipe.last_obs)
    pipe.close()
    checked.paired = paired
    return checked


def test_pruned_association_is_the_full_association_on_a_crowd():
    scene = get_scene("crowd").with_(seconds=2.0, n_objects=150)
    a = _run(scene, seed=0, frames=20, false_per_cam=5.0)
    assert a.calls == 20 and a.paired > 20 * 50  # many pairs every frame once confirmed
    assert a.kept_held > 1000  # last frame's pairs were among the candidates, and kept
    assert a.pruned > 0.9 * a.candidates, (a.pruned, a.candidates)  # the cost follows the plausible pairs


@pytest.mark.parametrize("seed", range(4))
def test_pruned_association_is_the_full_association_on_random_scenes(seed):
    rng = np.random.default_rng(seed)
    name = ["swarm", "walkers", "faults", "default"][seed]
    scene = get_scene(name).with_(seconds=1.0, n_objects=int(rng.integers(5, 40)),
                                  time_offset=float(rng.uniform(0.0, 0.01)), drop_prob=float(rng.uniform(0.0, 0.1)))
    a = _run(scene, seed=seed, frames=25, noise_px=float(rng.uniform(0.1, 1.5)), miss=float(rng.uniform(0.0, 0.2)),
             false_per_cam=float(rng.uniform(0.0, 4.0)))
    assert a.calls == 25 and a.paired > 0 and a.pruned > 0


def test_window_undistortion_reuses_kept_rows_and_equals_the_lens_model_bit_for_bit():
    """_normalized keeps last call's window: rows a track keeps (one row on) are not undistorted
    again. Whatever happens between calls (rows appended, tracks born and gone, a pixel changed,
    the window's length changing, ids out of order) its output equals the lens model's."""
    calib = SimWorld(get_scene("default"), seed=0).calib
    assoc = StereoAssociator(calib, AssociationConfig())
    rng = np.random.default_rng(3)
    ids = np.arange(1, 41)
    hist = {int(i): list(rng.uniform(0, 640, (rng.integers(1, 20), 2))) for i in ids}
    calls = []
    real = calib.cam1.normalize
    for frame in range(40):
        for i in list(hist):
            hist[i].append(rng.uniform(0, 640, 2))
        if frame % 5 == 2:  # one track gone, one born
            hist.pop(min(hist))
            hist[max(hist) + 1] = [rng.uniform(0, 640, 2)]
        W = 8 if frame < 20 else 6
        ids = np.array(sorted(hist))
        if frame == 30:
            ids = ids[::-1].copy()  # out of order: no reuse, still right
        uv = np.array([[hist[int(i)][max(len(hist[int(i)]) - W + k, 0)] for k in range(W)] for i in ids])
        if frame == 10:
            uv[3, 2] += 0.5  # a kept row that changed (camera 1's rows move with the shutter offset)
        object.__setattr__(calib.cam1, "normalize", lambda p: calls.append(len(p)) or real(p))  # a frozen dataclass
        got = assoc._normalized(1, ids, uv)
        object.__delattr__(calib.cam1, "normalize")
        assert np.array_equal(got, real(uv.reshape(-1, 2)).reshape(uv.shape))
    # From the second call on, mostly the newest row of each track was undistorted.
    assert sum(calls[1:]) < 0.3 * 39 * 40 * 7
