"""The learned gate: incremental scoring equals a full pass, hysteresis, safe weights loading,
device fallback, the PersistenceFilter API, and the shipped model on held-out sim tracks."""
import json
import logging

import numpy as np
import pytest
import torch

from persistence import checkpoint
from persistence.data import KINDS, TrackSet, synthetic_tracks
from persistence.errors import HistoryError, WeightsError
from persistence.features import features
from persistence.filter import PersistenceFilter, TrackPersistenceFilter, pick_device
from persistence.model import ModelConfig, PersistenceTransformer


def _model(max_len=64, seed=0):
    torch.manual_seed(seed)
    return PersistenceTransformer(ModelConfig(d_model=32, n_heads=2, d_ff=64, max_len=max_len)).eval()


def _full_scores(m, ts):
    f = torch.from_numpy(features(ts.hist, ts.lengths, ts.image_size))
    age = torch.from_numpy((ts.hist[..., 0] - ts.hist[:, :1, 0]).astype(np.float32))
    with torch.inference_mode():
        return torch.sigmoid(m(f, age)).numpy()


def _check_scores(g, ids, s, expected, prev):
    """The scores of tracks that were latched before this call stay what they were (`prev`:
    id -> score); the others equal `expected`. Updates prev; returns how many were latched."""
    slots = np.array([g._slot_of[i] for i in ids.tolist()])
    frozen = np.array([i in prev and g._latched[k] and prev[i][1] for i, k in zip(ids.tolist(), slots)], bool)
    np.testing.assert_allclose(s[~frozen], expected[~frozen], atol=2e-6)
    np.testing.assert_array_equal(s[frozen], [prev[i][0] for i in ids[frozen].tolist()])
    prev.update({i: (v, bool(g._latched[k])) for i, v, k in zip(ids.tolist(), s, slots)})
    return int(frozen.sum())


@pytest.mark.parametrize("max_len,latch", [(64, 0.0), (8, 0.0), (64, 0.5)])
def test_incremental_gate_equals_full_forward(max_len, latch):
    """Frame by frame (sometimes several new rows at once, tracks born and dying at different
    times, histories longer than the attention window) the gate's scores equal a full pass;
    with the latch, a latched track keeps the score it latched with."""
    m = _model(max_len)
    ts = synthetic_tracks(60, 3, max_len=40)
    full = _full_scores(m, ts)
    g = TrackPersistenceFilter(model=m, device="cpu", image_size=(640, 480), latch_s=latch)
    prev: dict = {}
    latched = 0
    born = np.random.default_rng(0).integers(0, 10, len(ts))  # frame at which each track appears
    L = ts.hist.shape[1] + 10
    t, checked = 0, 0
    while t < L:
        step = 3 if t % 7 == 3 else 1
        n = np.clip(t + step - born, 0, ts.lengths)
        alive = (n > 0) & (t - born < ts.lengths)
        ids = np.flatnonzero(alive)
        _, s = g(ids + 1000, ts.hist[ids], n[ids])
        latched += _check_scores(g, ids + 1000, s, full[ids, n[ids] - 1], prev)
        checked += len(ids)
        gone = np.flatnonzero((t + step - born >= ts.lengths) & (t - born < ts.lengths))
        g.forget(gone + 1000)
        t += step
    assert checked > 500 and (latched > 50) == (latch > 0)
    assert not g._slot_of  # every track was forgotten


def test_gate_with_per_track_image_sizes_and_a_strided_history_equals_full_forward():
    """The pipeline's call form: one (W, H) row per track (two cameras, two sizes) and a history
    array that is a view (not contiguous); tracks with zero, one or several new rows per frame:
    the scores equal a full pass with each track's own size."""
    m = _model(16)
    ts = synthetic_tracks(40, 5, max_len=40)
    sizes = np.where(np.arange(len(ts))[:, None] % 2, [[640.0, 480.0]], [[1280.0, 720.0]])
    f = torch.from_numpy(features(ts.hist, ts.lengths, sizes))
    age = torch.from_numpy((ts.hist[..., 0] - ts.hist[:, :1, 0]).astype(np.float32))
    with torch.inference_mode():
        full = torch.sigmoid(m(f, age)).numpy()
    g = TrackPersistenceFilter(model=m, device="cpu", image_size=(1, 1), latch_s=0.0)
    wide = np.concatenate([ts.hist, np.zeros_like(ts.hist)], axis=2)[:, :, :7]  # a strided view
    assert not wide.flags.c_contiguous
    born = np.random.default_rng(1).integers(0, 6, len(ts))
    t, checked = 0, 0
    while t < ts.hist.shape[1] + 6:
        step = 2 if t % 5 == 2 else 1
        n = np.clip(t + step - born, 0, ts.lengths)
        ids = np.flatnonzero(n > 0)  # finished tracks stay: no new rows for them
        _, s = g(ids, wide[ids], n[ids], image_size=sizes[ids])
        np.testing.assert_allclose(s, full[ids, n[ids] - 1], atol=2e-6)
        checked += len(ids)
        t += step
    assert checked > 500


def test_slots_follow_ids_in_order_reuse_the_lowest_free_and_grow():
    """Track id -> cache slot, as one loop over the ids would give them: new ids take the lowest
    free slots in the order they come (a repeated new id one slot), forgotten slots are reused,
    the cache doubles when full; a new slot starts at its track's birth time. Frames with and
    without repeated ids, in any order, some live ids left out of a call: the last call's ids
    take their slots by lookup, the rest through the dictionary."""
    import heapq

    g = TrackPersistenceFilter(device="cpu")
    cap = len(g._pos)
    ref_of, ref_free = {}, list(range(cap))
    rng = np.random.default_rng(5)

    def reference(ids):
        nonlocal cap
        out = []
        for i in ids.tolist():
            if i not in ref_of:
                if not ref_free:
                    ref_free.extend(range(cap, 2 * cap))
                    cap *= 2
                ref_of[i] = heapq.heappop(ref_free)
            out.append(ref_of[i])
        return out

    live: list[int] = []
    for frame in range(40):
        gone = [i for i in live if rng.random() < 0.1]
        g.forget(gone)
        for i in gone:
            heapq.heappush(ref_free, ref_of.pop(i))
        live = [i for i in live if i not in gone]
        live += [i for i in dict.fromkeys(rng.integers(1000 * frame, 1000 * frame + 900, 30).tolist())]
        if frame % 3 == 0:
            ids = np.array(live + live[-3:], np.int64)  # the last three twice: repeated new ids
        else:  # shuffled, one in five live ids left out of this call (they keep their slots)
            ids = rng.permutation(np.array([i for i in live if rng.random() > 0.2 or i >= 1000 * frame], np.int64))
        hist = np.zeros((len(ids), 4, 7))
        hist[:, 0, 0] = frame + (ids % 7) / 10
        fresh = np.array([i not in ref_of for i in ids.tolist()])
        slots = g._slots(ids, hist)
        assert slots.dtype == np.int64 and slots.tolist() == reference(ids)
        np.testing.assert_array_equal(g._t_birth[slots[fresh]], hist[fresh, 0, 0])
        assert fresh.sum() >= 25
    assert len(g._pos) == cap > 64 and len(set(ref_of.values())) == len(ref_of)
    assert g._slots(np.zeros(0, np.int64), np.zeros((0, 4, 7))).shape == (0,)


def test_hysteresis_and_thresholds():
    m = _model()
    g = TrackPersistenceFilter(model=m, device="cpu", image_size=(640, 480), on=0.6, off=0.4)
    # Drive the state directly through scores: a track enters at >= on and leaves below off.
    slot = g._slots(np.array([7]), np.zeros((1, 1, 7)))[0]
    for score, expect in [(0.5, False), (0.65, True), (0.45, True), (0.39, False), (0.55, False)]:
        g._persist[slot] = score >= (g.off if g._persist[slot] else g.on)
        assert g._persist[slot] == expect
    with pytest.raises(ValueError, match="0 <= off <= on <= 1"):
        g.update_thresholds(0.3, 0.5)
    with pytest.raises(ValueError, match="image_size"):
        TrackPersistenceFilter(model=m, device="cpu")(np.array([1]), np.zeros((1, 1, 7)), np.array([1]))
    for lengths in ([0], [2]):  # a track has 1..L rows: none beyond the history array
        with pytest.raises(ValueError, match=r"lengths \(N,\) in 1..L"):
            g(np.array([1]), np.zeros((1, 1, 7)), np.array(lengths))


def test_a_long_persistent_track_latches_and_is_no_longer_scored():
    """Scores driven through the head's bias: high for 20 frames, then low. With the latch (0.5 s)
    the track stays persistent, keeps the score it latched with and costs no model step from then
    on (nothing a score could do would change a decision); without it, it is scored every frame
    and drops at the first low score. A track that has not latched yet is still scored."""
    for latch, expect in ((0.5, True), (0.0, False)):
        m = _model()
        with torch.no_grad():
            m.head.weight.zero_()
            m.head.bias.fill_(5.0)
        g = TrackPersistenceFilter(model=m, device="cpu", image_size=(640, 480), on=0.6, off=0.4, latch_s=latch)
        stepped = []
        real = g._step.step
        g._step.step = lambda f, *a: stepped.append(len(f)) or real(f, *a)
        h = np.zeros((2, 40, 7))
        h[:, :, 0] = np.arange(40) / 30
        h[:, :, 1:5] = [100, 100, 10, 10]
        h[:, :, 5:7] = [0.9, 1.0]
        for k in range(20):
            p, s = g(np.array([1]), h[:1], np.array([k + 1]))
        assert p[0] and s[0] > 0.99
        assert stepped == [1] * (20 if latch == 0 else 16)  # latched at 15/30 s after it turned persistent
        with torch.no_grad():
            m.head.bias.fill_(-5.0)
        p, s = g(np.array([1, 2]), h, np.array([21, 1]))
        assert bool(p[0]) is expect and s[1] < 0.01
        assert (s[0] > 0.99) if latch else (s[0] < 0.01)
        assert stepped[-1] == (1 if latch else 2)


def test_gpu_absent_or_out_of_memory_falls_back_to_cpu(caplog, monkeypatch):
    if not torch.cuda.is_available():
        with caplog.at_level(logging.WARNING):
            assert pick_device("cuda").type == "cpu"
        assert "no GPU" in caplog.text
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        pick_device("tpu")
    m = _model()
    g = TrackPersistenceFilter(model=m, device="cpu", image_size=(640, 480))
    ts = synthetic_tracks(5, 1)
    expected = g(np.arange(5), ts.hist, np.minimum(ts.lengths, 3))[1]
    g.reset()
    # Pretend the gate runs on a GPU that runs out of memory once: it must move to the CPU and retry.
    real = g._score_new
    calls = []

    def flaky(*a):
        calls.append(1)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*a)

    monkeypatch.setattr(g, "_score_new", flaky)
    g.device = torch.device("meta")  # anything but the CPU
    with caplog.at_level(logging.WARNING):
        got = g(np.arange(5), ts.hist, np.minimum(ts.lengths, 3))[1]
    assert g.device.type == "cpu" and g.fallbacks == 1 and "out of memory" in caplog.text
    np.testing.assert_allclose(got, expected, atol=1e-6)


def _save(tmp_path, m=None, name="w.pt"):
    m = m or _model()
    checkpoint.save(tmp_path / name, m, 0.6, 0.3, {"note": "test"})
    return tmp_path / name


def test_weights_round_trip_and_bad_files(tmp_path):
    m = _model()
    p = _save(tmp_path, m)
    back, card = checkpoint.load(p)
    assert card["on"] == 0.6 and card["off"] == 0.3 and card["note"] == "test"
    for k, v in m.state_dict().items():
        assert torch.equal(v, back.state_dict()[k])
    with pytest.raises(WeightsError, match="no such weights file"):
        checkpoint.load(tmp_path / "nope.pt")
    # Tampered: one byte changed.
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "t.pt").write_bytes(bytes(data))
    (tmp_path / "t.json").write_text((tmp_path / "w.json").read_text())
    with pytest.raises(WeightsError, match="t.pt: checksum"):
        checkpoint.load(tmp_path / "t.pt")
    # No model card.
    (tmp_path / "lone.pt").write_bytes(p.read_bytes())
    with pytest.raises(WeightsError, match="no model card lone.json"):
        checkpoint.load(tmp_path / "lone.pt")
    # Another architecture's weights under this config.
    other = PersistenceTransformer(ModelConfig(d_model=16, n_heads=2, d_ff=32))
    blob = torch.load(p, weights_only=True)
    blob["state_dict"] = other.state_dict()
    torch.save(blob, tmp_path / "arch.pt")
    card = json.loads((tmp_path / "w.json").read_text())
    card["sha256"] = checkpoint.sha256(tmp_path / "arch.pt")
    (tmp_path / "arch.json").write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="arch.pt: weights do not fit the architecture"):
        checkpoint.load(tmp_path / "arch.pt")
    # Not a torch file at all; a card that is not JSON.
    (tmp_path / "junk.pt").write_bytes(b"hello")
    card["sha256"] = checkpoint.sha256(tmp_path / "junk.pt")
    (tmp_path / "junk.json").write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="junk.pt: not a loadable weights file"):
        checkpoint.load(tmp_path / "junk.pt")
    (tmp_path / "junk.json").write_text("{")
    with pytest.raises(WeightsError, match="junk.json: not valid JSON"):
        checkpoint.load(tmp_path / "junk.pt")


class Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_pickled_code_in_weights_is_refused(tmp_path, capsys):
    torch.save({"format": checkpoint.FORMAT, "x": Evil()}, tmp_path / "evil.pt")
    (tmp_path / "evil.json").write_text(json.dumps({"sha256": checkpoint.sha256(tmp_path / "evil.pt")}))
    with pytest.raises(WeightsError, match="evil.pt: not a loadable weights file"):
        checkpoint.load(tmp_path / "evil.pt")
    assert "pickled code ran" not in capsys.readouterr().out


def test_persistence_filter_api(tmp_path):
    p = _save(tmp_path)
    pf = PersistenceFilter((640, 480), weights=str(p), device="cpu")
    ts = synthetic_tracks(12, 5)
    tracks = [ts.hist[i, :ts.lengths[i]] for i in range(len(ts))]
    s = pf.get_persistence_scores(tracks)
    np.testing.assert_allclose(s, _full_scores(pf.model, ts)[np.arange(len(ts)), ts.lengths - 1], atol=1e-6)
    pf.update_threshold(float(np.median(s)))
    kept = pf.filter_tracks(tracks)
    assert 0 < len(kept) < len(tracks)
    assert all(any(k is t for t in tracks) for k in kept)
    a, b = pf.batch_filter_tracks([tracks[:5], tracks[5:]])
    assert [id(x) for x in a + b] == [id(x) for x in kept]
    with pytest.raises(ValueError, match="threshold 1.5"):
        pf.update_threshold(1.5)
    bad = tracks[0].copy()
    bad[1, 0] = bad[0, 0] - 1
    with pytest.raises(HistoryError, match="track 0: time goes backwards"):
        pf.get_persistence_scores([bad])


def test_shipped_weights_separate_a_held_out_object_from_a_flash():
    """The shipped model, on tracks our detector and tracker produce on a sim scene with a seed
    that no split uses: at age 5, real objects' tracks score above the flashes' and clutter's."""
    from tracker3d.sim import get_scene
    from tracker3d.sim.gate_data import collect

    pf = PersistenceFilter((640, 480))
    ts = collect(get_scene("cluttered").with_(seconds=4.0), seed=4242)
    old = ts.lengths >= 5
    y, k = ts.label[old], ts.kind[old]
    s = pf.get_persistence_scores([ts.hist[i, :5] for i in np.flatnonzero(old)])
    real = s[y == 1]
    brief = s[np.isin(k, [KINDS.index("flash"), KINDS.index("clutter")])]
    assert len(real) >= 5 and len(brief) >= 5
    assert np.median(real) > pf.threshold > np.median(brief)
    assert np.mean(real > pf.threshold) > 0.8 and np.mean(brief < pf.threshold) > 0.8


def test_track_set_round_trip_and_bad_file(tmp_path):
    ts = synthetic_tracks(20, 2)
    assert set(np.unique(ts.kind)) <= set(range(len(KINDS)))
    ts.save(tmp_path / "s.npz")
    back = TrackSet.load(tmp_path / "s.npz")
    np.testing.assert_allclose(back.hist, ts.hist, atol=1e-3)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz: cannot read track set"):
        TrackSet.load(tmp_path / "bad.npz")


def test_persistence_commands_build_train_and_evaluate(tmp_path, capsys, caplog):
    """data -> train -> eval from the CLI on a few short scenes (a smoke run of the real recipe).
    Building the scenes (what eval and train do first on a fresh machine: minutes) is logged scene
    by scene off a terminal, where no progress bar shows (it used to be silent until the end)."""
    from tracker3d.cli import main

    data = str(tmp_path / "data")
    caplog.set_level("INFO")
    assert main(["persistence", "data", "--quick", "--seconds", "3", "--data", data, "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "train:" in out and "test:" in out and "clutter" in out
    lines = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert any("test_quick.npz is missing; building it from 3 sim scenes" in x for x in lines), lines
    steps = [x.split()[4] for x in lines if x.startswith("building test scene data: ")]
    assert steps == ["1/3", "2/3", "3/3"], lines
    w = tmp_path / "w.pt"
    assert main(["persistence", "train", "--quick", "--seconds", "3", "--data", data, "--out", str(w), "--epochs",
                 "2", "--synthetic", "300", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "trained" in out and (tmp_path / "w.json").exists() and (tmp_path / "w.metrics.json").exists()
    card = json.loads((tmp_path / "w.json").read_text())
    assert card["sha256"] == checkpoint.sha256(w) and [r["age"] for r in card["test_by_age"]] == [1, 2, 3, 5, 10]
    assert main(["persistence", "eval", "--quick", "--data", data, "--weights", str(w), "--json",
                 str(tmp_path / "e.json")]) == 0
    rows = json.loads((tmp_path / "e.json").read_text())["by_age"]
    assert rows == card["test_by_age"], "eval repeats what train measured on the same held-out scenes"
    (tmp_path / "data" / "test_quick.npz").write_bytes(b"junk")
    assert main(["persistence", "eval", "--quick", "--data", data, "--weights", str(w)]) == 2
    assert "test_quick.npz: cannot read track set" in capsys.readouterr().err


def test_pipeline_with_the_learned_gate_publishes_scores():
    """The shipped gate in the stereo pipeline: both cameras' tracks in one batch, scores in the
    messages, state forgotten when 2D tracks end (no leak across a scene)."""
    from tracker3d.pipeline import StereoPipeline
    from tracker3d.sim import SimWorld, get_scene

    world = SimWorld(get_scene("default").with_(seconds=6.0), seed=11)
    gate = TrackPersistenceFilter(device="cpu")
    pipe = StereoPipeline(world.calib, gate=gate)
    scores, live_max = [], 0
    for _ in range(world.cfg.n_frames):
        pair, _ = world.step()
        f3 = pipe.step(pair)
        scores += [t["persistence"] for t in f3.tracks]
        live_max = max(live_max, len(gate._slot_of))
        n_live = len(pipe.trackers[0]) + len(pipe.trackers[1])
        assert len(gate._slot_of) == n_live, "the gate keeps state for the live 2D tracks only"
    assert len(f3.tracks) >= 4 and len(scores) > 200
    assert np.median(scores) > gate.on
    assert 0 < live_max < 64


def test_track2d_with_the_learned_gate(tmp_path, capsys):
    from tracker3d.cli import main
    from tracker3d.sim import get_scene, write_sim_recording

    rec = write_sim_recording(get_scene("default").with_(seconds=3.0, width=320, height=240), tmp_path / "r", seed=2)
    assert main(["track2d", "--video", str(rec / "cam0.mjpg"), "--gate", "persistence", "--out",
                 str(tmp_path / "t.txt")]) == 0
    assert "tracks over 90 frames" in capsys.readouterr().out
    rows = (tmp_path / "t.txt").read_text().splitlines()
    assert len(rows) > 100
    (tmp_path / "det.txt").write_text("1,-1,10,10,5,5,0.9\n")
    assert main(["track2d", "--det", str(tmp_path / "det.txt"), "--gate", "persistence", "--out",
                 str(tmp_path / "t2.txt")]) == 2
    assert "needs --image-size WxH" in capsys.readouterr().err


def test_weights_with_non_finite_tensors_are_refused_at_load(tmp_path, capsys):
    m = _model()
    with torch.no_grad():
        for prm in m.parameters():
            prm.fill_(float("nan"))
    p = _save(tmp_path, m)
    with pytest.raises(WeightsError, match=r"w.pt: tensor '.*' holds \d+ of \d+ NaN or infinite values"):
        checkpoint.load(p)
    from tracker3d.cli import main

    assert main(["demo", "--fast", "--seconds", "0.5", "--no-publish", "--weights", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NaN or infinite" in err[0]
