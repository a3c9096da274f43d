"""The gate's steppers score alike: numpy vs torch on the CPU, the padded bucket step, the GPU's
CUDA graphs (where CUDA is available), and a cache moved between devices mid-stream."""
import logging

import numpy as np
import pytest
import torch

from persistence import fused_step
from persistence.data import synthetic_tracks
from persistence.features import NEWEST3, features, row_features
from persistence.filter import TrackPersistenceFilter
from persistence.graph_step import visible_limit
from persistence.model import ModelConfig, PersistenceTransformer
from persistence.steppers import BUCKETS, CudaGraphStep, NumpyStep, TorchStep, bucket_of

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _model(seed=0):
    torch.manual_seed(seed)
    return PersistenceTransformer(ModelConfig(d_model=32, n_heads=2, d_ff=64, max_len=16)).eval()


def _drive(gate, n_tracks=90, seed=1, step_every=7):
    """Feed the gate frame by frame (tracks born and ending at different frames, now and then
    several new rows at once); -> one score array per frame."""
    ts = synthetic_tracks(n_tracks, seed, max_len=40)
    born = np.random.default_rng(seed).integers(0, 12, len(ts))
    out, t = [], 0
    while t < ts.hist.shape[1] + 12:
        step = 3 if t % step_every == 3 else 1
        n = np.clip(t + step - born, 0, ts.lengths)
        ids = np.flatnonzero((n > 0) & (t - born < ts.lengths))
        out.append(gate(ids + 1000, ts.hist[ids], n[ids])[1])
        gate.forget(np.flatnonzero((t + step - born >= ts.lengths) & (t - born < ts.lengths)) + 1000)
        t += step
    return out


def _max_diff(a, b):
    assert [len(x) for x in a] == [len(x) for x in b]
    return max(float(np.abs(x - y).max(initial=0.0)) for x, y in zip(a, b))


def test_numpy_step_scores_like_the_torch_step(monkeypatch):
    m = _model()
    torch_only = _drive(TrackPersistenceFilter(model=m, device="cpu", image_size=(640, 480), numpy_max=0), 25)
    numpy_only = _drive(TrackPersistenceFilter(model=m, device="cpu", image_size=(640, 480), numpy_max=10 ** 6), 25)
    assert sum(len(x) for x in numpy_only) > 300
    assert _max_diff(torch_only, numpy_only) < 2e-6
    monkeypatch.setattr(NumpyStep, "CHUNK", 7)  # large batches go in chunks: the same scores
    chunked = _drive(TrackPersistenceFilter(model=m, device="cpu", image_size=(640, 480), numpy_max=10 ** 6), 25)
    assert _max_diff(numpy_only, chunked) < 1e-6


def test_attending_in_place_over_the_slots_span_scores_like_gathering(monkeypatch):
    """TorchStep on the CPU attends over the cache's first slots as they lie when the tracks fill
    most of them (steppers.SPAN_FILL): bit for bit the scores of gathering each track's cache,
    with tracks born and forgotten (holes in the slots, reused lowest first)."""
    import persistence.steppers as steppers

    m = _model()

    def run(fill):
        monkeypatch.setattr(steppers, "SPAN_FILL", fill)
        gate = TrackPersistenceFilter(model=m, device="cpu", image_size=(640, 480), numpy_max=0)
        spans = []
        real = TorchStep.step

        def spy(self, feats, age, slots, pos):
            spans.append((int(slots.max()) + 1) / len(slots))
            return real(self, feats, age, slots, pos)

        monkeypatch.setattr(TorchStep, "step", spy)
        out = _drive(gate, 90)
        monkeypatch.setattr(TorchStep, "step", real)
        return out, spans

    gathered, _ = run(0.0)
    in_place, spans = run(1e9)
    assert sum(len(x) for x in gathered) > 1000 and max(spans) > 1.2  # holes were there
    assert _max_diff(gathered, in_place) == 0.0


def test_row_features_equal_the_full_features_bit_for_bit():
    """Random windows (young tracks with 0-2 context rows, repeated times, still objects,
    unobserved rows, per-track image sizes): row_features of the new row and the two before it
    == features at the new row."""
    rng = np.random.default_rng(3)
    N = 3000
    win = np.zeros((N, 3, 7))
    t = np.cumsum(rng.uniform(0, 0.05, (N, 3)), axis=1)
    dup = rng.random(N) < 0.05
    t[dup, 1] = t[dup, 0]
    win[:, :, 0] = t
    win[:, :, 1:3] = rng.uniform(0, 600, (N, 3, 2))
    win[:, :, 3:5] = rng.uniform(0, 30, (N, 3, 2))
    win[:, :, 3][rng.random((N, 3)) < 0.05] = 0
    still = rng.random(N) < 0.1
    win[still, :, 1:3] = win[still, :1, 1:3]
    win[:, :, 5] = rng.random((N, 3))
    win[:, :, 6] = rng.random((N, 3)) > 0.3
    col = rng.integers(0, 3, N)
    size = rng.uniform(100, 2000, (N, 2))
    t_birth = t[:, 0] - rng.uniform(0, 3, N)
    t_obs = np.where(rng.random(N) < 0.5, -np.inf, t_birth)
    ref = features(win, col + 1, size, t_birth=t_birth, t_last_obs=t_obs)[np.arange(N), col]
    rows = win[np.arange(N), np.maximum(col + NEWEST3[:, None], 0)].transpose(2, 0, 1)  # (7, 3, N)
    f, _ = row_features(np.ascontiguousarray(rows), size, t_birth, t_obs, col >= 1, col >= 2)
    np.testing.assert_array_equal(f, ref)


def test_row_features_of_whole_windows_equal_the_full_features_bit_for_bit():
    """The gate's per-frame path: (7, 3, N) newest rows, every track with two rows before its
    newest (no masks) or a mix with young tracks (their first row repeated, masked), one image
    size for all: == features at the newest row, with the time of the last observed row."""
    rng = np.random.default_rng(4)
    N = 2000
    hist = np.zeros((N, 3, 7))
    hist[:, :, 0] = np.cumsum(rng.uniform(0, 0.05, (N, 3)), axis=1)
    hist[:, :, 1:3] = rng.uniform(0, 600, (N, 3, 2))
    hist[:, :, 3:5] = rng.uniform(0, 30, (N, 3, 2))
    still = rng.random(N) < 0.1
    hist[still, :, 1:3] = hist[still, :1, 1:3]
    hist[:, :, 5] = rng.random((N, 3))
    hist[:, :, 6] = rng.random((N, 3)) > 0.3
    t_birth = hist[:, 0, 0] - rng.uniform(0, 3, N)
    t_obs = np.where(rng.random(N) < 0.5, -np.inf, t_birth)
    size = np.array([[640.0, 480.0]])
    for lengths in (np.full(N, 3), rng.integers(1, 4, N)):
        ref_f = features(hist, lengths, (640, 480), t_birth=t_birth, t_last_obs=t_obs)[np.arange(N), lengths - 1]
        obs_t = np.where((hist[:, :, 6] > 0) & (np.arange(3) < lengths[:, None]), hist[:, :, 0], -np.inf)
        ref_last = np.maximum(t_obs, obs_t.max(axis=1))
        rows = hist[np.arange(N), np.maximum(lengths + NEWEST3[:, None] - 1, 0)].transpose(2, 0, 1)
        young = (lengths >= 2, lengths >= 3) if (lengths < 3).any() else (None, None)
        f, last = row_features(np.ascontiguousarray(rows), size, t_birth, t_obs, *young)
        np.testing.assert_array_equal(f, ref_f)
        np.testing.assert_array_equal(last, ref_last)


def test_bucket_of_pads_to_the_next_bucket():
    assert [bucket_of(n) for n in (1, 16, 17, 1000, 4096, 4097)] == [16, 16, 64, 1024, 4096, 8192]
    assert BUCKETS == tuple(sorted(BUCKETS))


def test_padded_bucket_step_scores_like_the_cpu_step():
    """The GPU stepper's packing, padding rows on the scratch slot and cache growth, run eagerly
    on the CPU (no graphs), give the CPU gate's scores."""
    m = _model()
    ref = _drive(TrackPersistenceFilter(model=m, device="cpu", image_size=(640, 480)))
    g = TrackPersistenceFilter(model=m, device="cpu", image_size=(640, 480))
    g._gpu = CudaGraphStep(m, "cpu", 64, graphs=False)
    g._prefer = [(0, "cuda")]
    g._move_to(g._gpu)
    got = _drive(g)
    assert g._step is g._gpu and g._gpu.capacity >= 90  # grown past its first 64 slots
    assert _max_diff(ref, got) < 2e-6


def test_device_built_mask_equals_the_models_mask():
    """lim = visible_limit(pos) packed per track, hidden = j > lim built in the step: the ring
    positions model.step_ring hides (not yet written while the window fills; none once full)."""
    W = 16
    pos = np.arange(4 * W)
    j = np.arange(W)
    ring, full = pos % W, pos >= W
    table = (j[None, :] > ring[:, None]) & ~full[:, None]
    np.testing.assert_array_equal(j[None, :] > visible_limit(pos, W)[:, None], table)


@pytest.mark.parametrize("device, tol", [("cpu", 1e-6), pytest.param("cuda", 1e-5, marks=cuda)])
def test_packed_step_equals_the_models_step(device, tol):
    """CudaGraphStep's step (PackedStep: stacked cache, reordered and scaled qkv, mask from lim,
    host sigmoid), eager on the CPU or in CUDA graphs, over 40 steps (windows filling and full),
    tracks in scattered slots, padded buckets: the scores and caches of TorchStep on the CPU."""
    m = _model()
    ref, got = TorchStep(m, "cpu", 64), CudaGraphStep(m, device, 64)
    rng = np.random.default_rng(5)
    slots = rng.permutation(64)[:20]
    born = rng.integers(0, 20, len(slots))
    worst = 0.0
    for t in range(40):
        live = np.flatnonzero(born <= t)
        if not len(live):
            continue
        live = live[rng.permutation(len(live))]
        feats = rng.normal(0, 0.5, (len(live), m.config.n_features)).astype(np.float32)
        age = ((t - born[live]) / 30 * rng.uniform(0.5, 3)).astype(np.float32)
        pos = t - born[live]
        a = ref.step(feats, age, slots[live], pos)
        b = got.step(feats, age, slots[live], pos)
        worst = max(worst, float(np.abs(a - b).max()))
    assert worst < tol
    assert len(got._g) >= 2  # two buckets (16 and 64 tracks) were padded and used
    assert got.graphs == (device == "cuda")
    np.testing.assert_allclose(got.k[:, :64].cpu().numpy(), ref.k.numpy(), atol=10 * tol)
    np.testing.assert_allclose(got.v[:, :64].cpu().numpy(), ref.v.numpy(), atol=10 * tol)


def test_gate_moves_its_cache_when_the_count_crosses_a_measured_boundary(caplog):
    """With 'cuda' preferred above 16 tracks (here a second CPU stepper stands in for the GPU),
    the gate moves after SWITCH_AFTER frames over 16 tracks and back below; scores stay those of
    a gate that never moved."""
    m = _model()
    ref = _drive(TrackPersistenceFilter(model=m, device="cpu", image_size=(640, 480)), n_tracks=60)
    g = TrackPersistenceFilter(model=m, device="cpu", image_size=(640, 480))
    g.SWITCH_AFTER = 3
    g._gpu = CudaGraphStep(m, "cpu", 64, graphs=False)
    g._prefer = [(16, "cpu"), (0, "cuda")]
    used = []
    real = g._choose

    def spy(n):
        real(n)
        used.append(g._step.name)

    g._choose = spy
    with caplog.at_level(logging.INFO, logger="persistence.filter"):
        got = _drive(g, n_tracks=60)
    assert "cuda" in used and used[0] == "cpu" and used[-1] == "cpu"
    assert "moved to" in caplog.text
    assert _max_diff(ref, got) < 2e-6


def test_measured_pick_is_a_table_by_track_count_and_is_logged(caplog):
    """_measure (what device='auto' runs when torch sees a GPU), with a CPU stand-in for the GPU:
    one entry per bucket up to MEASURE_UP_TO, the last covering any count, a log line with both
    times per bucket."""
    m = _model()
    g = TrackPersistenceFilter(model=m, device="cpu", image_size=(640, 480))
    g._gpu = CudaGraphStep(m, "cpu", 64, graphs=False)
    g.MEASURE_UP_TO = 64
    with caplog.at_level(logging.INFO, logger="persistence.filter"):
        g._measure()
    assert [b for b, _ in g._prefer] == [16, 0]
    assert {d for _, d in g._prefer} <= {"cpu", "cuda"}
    assert g._preferred(10) == g._prefer[0][1] and g._preferred(5000) == g._prefer[1][1]
    assert "16: cpu" in caplog.text and "64: cpu" in caplog.text and "starting on" in caplog.text


@cuda
@pytest.mark.parametrize("fused", [None, False])
def test_gpu_gate_scores_like_the_cpu_gate(fused):
    """CUDA graphs over buckets 16/64/256, the cache grown on the GPU, with the fused Triton step
    (the default where Triton imports) or the torch step: the CPU gate's scores."""
    m = _model()
    ref = _drive(TrackPersistenceFilter(model=m, device="cpu", image_size=(640, 480)), n_tracks=300)
    g = TrackPersistenceFilter(model=m, device="cuda", image_size=(640, 480), fused=fused)
    got = _drive(g, n_tracks=300)
    assert g.device.type == "cuda" and g._step.graphs and len(g._step._g) >= 2
    assert g._step.fused == (fused is None and fused_step.available())
    assert _max_diff(ref, got) < 1e-5


_FUSED_ON_CPU = """
import os
os.environ["TRITON_INTERPRET"] = "1"  # Triton's interpreter: the kernel run with numpy on the CPU
from test_persistence_steppers import _drive, _model, _max_diff
from persistence.filter import TrackPersistenceFilter
from persistence.steppers import CudaGraphStep
m = _model()
ref = _drive(TrackPersistenceFilter(model=m, device="cpu", image_size=(640, 480)))
g = TrackPersistenceFilter(model=m, device="cpu", image_size=(640, 480))
g._gpu = CudaGraphStep(m, "cpu", 64, graphs=False, fused=True)
g._prefer = [(0, "cuda")]
g._move_to(g._gpu)
got = _drive(g)
print(g._gpu.fused, g._gpu.capacity, _max_diff(ref, got), sum(len(x) for x in got))
"""


@pytest.mark.skipif(not fused_step.available(), reason="needs Triton (its interpreter runs the kernel on the CPU)")
def test_fused_triton_step_scores_like_the_cpu_gate_in_the_interpreter():
    """The fused kernel, run by Triton's interpreter on the CPU (TRITON_INTERPRET is read when
    Triton compiles a function, so in a fresh process): the padded buckets, padding rows on the
    scratch slot, a cache grown past 64 slots, several new rows at once: the CPU gate's scores."""
    import os
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, here, os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", _FUSED_ON_CPU], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    fused, capacity, diff, n = r.stdout.split()
    assert fused == "True" and int(capacity) > 64 and int(n) > 500
    assert float(diff) < 2e-6


def test_fused_step_is_refused_when_its_self_check_disagrees(monkeypatch, caplog):
    """A fused step whose logits are off is not used: the torch step runs, and the log says why."""
    from persistence import steppers

    class Wrong:
        def __init__(self, packed):
            self.packed = packed

        def __call__(self, p, kv, out):
            out.copy_(self.packed(p, kv) + 1e-3)
            return out

    monkeypatch.setattr(steppers.fused_step, "FusedStep", Wrong)
    with caplog.at_level(logging.WARNING, logger="persistence.steppers"):
        st = CudaGraphStep(_model(), "cpu", 64, graphs=False, fused=True)
    assert not st.fused and "differs from the torch step" in caplog.text

    class Broken:
        def __init__(self, packed):
            raise RuntimeError("no compiler")

    monkeypatch.setattr(steppers.fused_step, "FusedStep", Broken)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="persistence.steppers"):
        st = CudaGraphStep(_model(), "cpu", 64, graphs=False, fused=True)
    assert not st.fused and "unavailable (RuntimeError: no compiler)" in caplog.text
    assert not CudaGraphStep(_model(), "cpu", 64, graphs=False).fused  # by default only on a GPU


@cuda
def test_auto_device_is_measured_and_logged(caplog):
    with caplog.at_level(logging.INFO, logger="persistence.filter"):
        g = TrackPersistenceFilter(model=_model(), device="auto", image_size=(640, 480))
    assert "device auto: one step measured" in caplog.text and g.device.type in ("cpu", "cuda")
    assert [b for b, _ in g._prefer][-1] == 0


def test_auto_without_a_gpu_runs_on_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    g = TrackPersistenceFilter(model=_model(), device="auto", image_size=(640, 480))
    assert g.device.type == "cpu" and g._gpu is None
