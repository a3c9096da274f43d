"""Persistence features and model (issue 6 groundwork): invariances, bad histories, causality."""
import numpy as np
import pytest
import torch

from persistence import pad_histories
from persistence.features import N_FEATURES, HistoryError, check_history, features
from persistence.model import ModelConfig, PersistenceTransformer


def track(fps, seconds=1.0, scale=1.0, start=(100.0, 80.0), v=(120.0, -40.0), a=(0.0, 60.0)):
    t = np.arange(0, seconds, 1 / fps)
    x = start[0] + v[0] * t + 0.5 * a[0] * t * t
    y = start[1] + v[1] * t + 0.5 * a[1] * t * t
    h = np.column_stack([t, x * scale, y * scale, np.full_like(t, 12 * scale), np.full_like(t, 10 * scale),
                         np.full_like(t, 0.8), np.ones_like(t)])
    h[5, 6] = 0.0  # one coasted step
    return h


def test_features_invariant_to_image_size():
    h1, h2 = track(30), track(30, scale=2.0)
    f1 = features(*pad_histories([h1]), (640, 480))
    f2 = features(*pad_histories([h2]), (1280, 960))
    np.testing.assert_allclose(f1, f2, atol=1e-5)
    assert f1.shape == (1, len(h1), N_FEATURES)


def test_features_invariant_to_frame_rate():
    h15, h60 = track(15), track(60)
    f15 = features(*pad_histories([h15]), (640, 480))[0]
    f60 = features(*pad_histories([h60]), (640, 480))[0]
    names = ("x", "y", "vx", "vy", "speed", "heading_sin", "heading_cos", "log_w", "log_h", "age")
    from persistence.features import FEATURE_NAMES
    cols = [FEATURE_NAMES.index(n) for n in names]
    # Same instants (every 4th row at 60 fps is a 15 fps row); velocity is a backward difference,
    # so compare where both differences span the same motion closely (constant acceleration: <2 %).
    for k in range(8, len(h15)):
        np.testing.assert_allclose(f15[k, cols], f60[4 * k, cols], atol=0.02)


def test_padding_rows_are_zero_and_do_not_leak():
    hist, lens = pad_histories([track(30, 0.5), track(30, 1.0)])
    f = features(hist, lens, (640, 480))
    assert np.all(f[0, lens[0]:] == 0)
    f_alone = features(*pad_histories([track(30, 0.5)]), (640, 480))
    np.testing.assert_allclose(f[0, :lens[0]], f_alone[0], atol=1e-6)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((0, 7)), "empty"),
    (np.zeros((3, 6)), "expected shape"),
    (np.array([[0.0, 1, 1, 1, 1, 1, 1], [np.nan, 1, 1, 1, 1, 1, 1]]), "NaN"),
    (np.array([[1.0, 1, 1, 1, 1, 1, 1], [0.5, 1, 1, 1, 1, 1, 1]]), "backwards"),
])
def test_malformed_histories(bad, match):
    with pytest.raises(HistoryError, match=match):
        check_history(bad, "track 7")
    assert check_history(np.array([[0.0, 1, 1, 1, 1, 1, 1]])).shape == (1, 7)  # one row is fine


def _inputs(hs):
    hist, lens = pad_histories(hs)
    f = torch.from_numpy(features(hist, lens, (640, 480)))
    age = torch.from_numpy((hist[..., 0] - hist[:, :1, 0]).astype(np.float32))
    return f, age, lens


def test_model_is_causal_and_batching_equals_one_by_one():
    torch.manual_seed(0)
    m = PersistenceTransformer(ModelConfig(d_model=32, n_layers=2, d_ff=64)).eval()
    a, b = track(30, 1.0), track(30, 1.5, start=(300.0, 200.0), v=(-50.0, 10.0))
    f, age, lens = _inputs([a, b])
    with torch.inference_mode():
        both = m(f, age)
        fa, agea, _ = _inputs([a])
        alone = m(fa, agea)
        np.testing.assert_allclose(both[0, :lens[0]].numpy(), alone[0].numpy(), atol=1e-5)
        f2 = f.clone()
        f2[:, 20:] += 3.0  # change the future
        changed = m(f2, age)
    np.testing.assert_allclose(changed[:, :20].numpy(), both[:, :20].numpy(), atol=1e-6)
    assert (changed[:, 20:] - both[:, 20:]).abs().max() > 1e-3
    # Each layer attends to the newest max_len steps: with 2 layers of window 8, the score of step
    # 40 depends on steps 26..40 only.
    w = PersistenceTransformer(ModelConfig(d_model=32, n_layers=2, d_ff=64, max_len=8)).eval()
    x, t = torch.randn(1, 50, N_FEATURES), torch.linspace(0, 1.6, 50)[None]
    with torch.inference_mode():
        base = w(x, t)[0, 40].item()
        far, near = x.clone(), x.clone()
        far[:, :26] += 3.0
        near[:, 26] += 3.0
        assert abs(w(far, t)[0, 40].item() - base) < 1e-6
        assert abs(w(near, t)[0, 40].item() - base) > 1e-4


def test_training_tracks_are_labelled_by_ground_truth(tmp_path):
    from tracker3d.sim import get_scene
    from tracker3d.sim.gate_data import KINDS, TrackSet, collect

    cfg = get_scene("cluttered").with_(seconds=4.0)
    a = collect(cfg, seed=7)
    b = collect(cfg, seed=7)
    np.testing.assert_array_equal(a.label, b.label)  # seeded: the same scene gives the same set
    np.testing.assert_array_equal(a.hist, b.hist)
    kinds = {KINDS[k] for k in a.kind}
    assert {"object", "flash", "clutter"} <= kinds
    assert np.all(a.label[a.kind == KINDS.index("object")] == 1)
    assert np.all(a.label[a.kind != KINDS.index("object")] == 0)
    # Real objects' tracks live longer than distractors': exactly why scoring must be by age.
    assert np.median(a.lengths[a.label == 1]) > np.median(a.lengths[a.label == 0])
    for i in range(len(a)):
        check_history(a.hist[i, :a.lengths[i]])
    a.save(tmp_path / "t.npz")
    back = TrackSet.load(tmp_path / "t.npz")
    np.testing.assert_allclose(back.hist, a.hist, atol=1e-3)
    assert back.image_size.tolist() == [[640, 480]] * len(a) and list(back.label) == list(a.label)


def _synthetic_set(n, seed):
    """Seed-style histories: steady movers (persistent) and jittery, flickering specks (not)."""
    from tracker3d.sim.gate_data import TrackSet
    rng = np.random.default_rng(seed)
    hs, labels = [], []
    for i in range(n):
        real = i % 2 == 0
        L = int(rng.integers(2, 30))
        t = np.arange(L) / 30.0
        if real:
            v = rng.normal(0, 150, 2)
            xy = rng.uniform(50, 500, 2) + np.outer(t, v) + rng.normal(0, 0.3, (L, 2))
            obs = np.ones(L)
        else:
            xy = rng.uniform(50, 500, 2) + rng.normal(0, 6, (L, 2))
            obs = (rng.random(L) < 0.5).astype(float)
            obs[0] = 1
        h = np.column_stack([t, xy, np.full(L, 8.0), np.full(L, 8.0), np.where(obs > 0, 0.9, 0.0), obs])
        hs.append(h)
        labels.append(int(real))
    hist, lens = pad_histories(hs, max_len=64)
    k = np.zeros(n, np.int64)
    return TrackSet(hist, lens, np.array(labels), k, np.zeros(n, np.int64), np.zeros(n, np.int64), (640, 480))


def test_tiny_training_run_reduces_loss():
    from persistence.train import TrainConfig, roc_auc, scores_by_age, train
    torch.set_num_threads(1)
    tr, va = _synthetic_set(256, 1), _synthetic_set(128, 2)
    res = train(tr, va, ModelConfig(d_model=16, n_layers=1, d_ff=32, n_heads=2, dropout=0.0),
                TrainConfig(epochs=12, batch_size=32, lr=5e-3, seed=0, patience=12))
    assert res.history[-1]["train_loss"] < 0.7 * res.history[0]["train_loss"]
    assert res.best_val_loss < res.history[0]["val_loss"]
    by_age = scores_by_age(res.model, va, ages=(5,))
    s, y, _ = by_age[5]
    assert roc_auc(s, y) > 0.9
    assert roc_auc(np.array([0.1, 0.9, 0.8]), np.array([0, 1, 1])) == 1.0
