"""One incremental step of the persistence transformer for a batch of tracks, on the CPU or a GPU.

A stepper owns the per-track key/value cache (layers x slots x heads x max_len x head size, the
newest max_len steps of each track in a ring) and turns (features (B, F), age (B,) seconds, cache
slots (B,), step index since birth (B,)) into scores in [0, 1] (B,), writing the new keys and
values. All steppers compute `PersistenceTransformer.step` (equal to a full causal pass):

- `CpuStep`: torch on the CPU; up to `numpy_max` tracks a numpy mirror of the step (`NumpyStep`,
  float32 like torch), which costs a fraction of torch's per-op overhead at small counts.
- `CudaGraphStep`: the cache stays on the GPU; the step for a padded batch of B tracks (B one of
  `BUCKETS`) is captured once in a CUDA graph, so a frame is one host->device copy of the packed
  inputs (F + 7 floats' worth a track), one graph replay, one device->host copy of the logits
  and one sync. The captured step is one Triton kernel (`fused_step.FusedStep`) where Triton
  imports and the kernel passes a self-check at start-up, else `graph_step.PackedStep` (40
  torch ops for 2 layers, the attention mask built on the device).
- `TorchStep`: torch eagerly on any device (the GPU path before graphs; kept for comparison).
"""
from __future__ import annotations

import copy
import logging
import math
import time
from typing import Optional

import numpy as np
import torch

from . import fused_step
from .graph_step import Packed, PackedStep, visible_limit
from .model import PersistenceTransformer

log = logging.getLogger(__name__)

NUMPY_MAX = 128  # CpuStep: numpy up to this many tracks, torch above (measured: docs/benchmarks.md)
SPAN_FILL = 1.5  # TorchStep on the CPU: attend in place when the slots' span <= this x the tracks
BUCKETS = (16, 64, 256, 1024, 4096)  # CudaGraphStep batch sizes; above the last, multiples of it


def _cache_shape(model: PersistenceTransformer, slots: int) -> tuple[int, ...]:
    c = model.config
    return (c.n_layers, slots, c.n_heads, c.max_len, c.d_model // c.n_heads)


def _ring_code(pos: np.ndarray, W: int) -> np.ndarray:
    """Step index since birth -> ring position + W if the window is full (what the step needs)."""
    return pos % W + W * (pos >= W)


class TorchStep:
    """model.step eagerly on `device` (cache: torch tensors there)."""

    name = "torch"
    _extra = 0  # cache slots beyond the tracks' (CudaGraphStep: one scratch slot)

    def __init__(self, model: PersistenceTransformer, device="cpu", capacity: int = 64):
        self.device = torch.device(device)
        self.model = model if next(model.parameters()).device == self.device else copy.deepcopy(model).to(self.device)
        self.model.eval()
        self.W = model.config.max_len
        self._alloc(capacity + self._extra)

    def _alloc(self, slots: int) -> None:
        """A zeroed cache of `slots` slots."""
        self.k = torch.zeros(_cache_shape(self.model, slots), device=self.device)
        self.v = torch.zeros_like(self.k)

    @property
    def capacity(self) -> int:
        return self.k.shape[1]

    def grow(self, capacity: int) -> None:
        if capacity > self.capacity:
            self.load(self.k, self.v, capacity)

    def load(self, k: torch.Tensor, v: torch.Tensor, capacity: int) -> None:
        """Take over a cache of `capacity` track slots (another stepper's k, v; slots past
        `capacity` in them, such as a scratch slot, are left behind)."""
        n = min(k.shape[1], capacity)
        self._alloc(capacity + self._extra)
        self.k[:, :n] = k[:, :n].to(self.device)
        self.v[:, :n] = v[:, :n].to(self.device)
        self._on_new_cache()

    def _on_new_cache(self) -> None:
        pass

    def step(self, feats: np.ndarray, age: np.ndarray, slots: np.ndarray, pos: np.ndarray) -> np.ndarray:
        dev = self.device
        code = torch.from_numpy(_ring_code(pos, self.W)).to(dev)
        span = int(slots.max()) + 1 if len(slots) else 0
        # Attention over the cache in place when the tracks fill most of its first `span` slots
        # (the filter reuses the lowest free slots): no gather of their keys and values (200
        # tracks: 1.2 ms a frame of the 5.4 on one CPU thread).
        span = span if dev.type == "cpu" and span <= SPAN_FILL * len(slots) else None
        with torch.inference_mode():
            logit = self.model.step_ring(torch.from_numpy(feats).to(dev), torch.from_numpy(age).to(dev), self.k,
                                         self.v, torch.from_numpy(slots).to(dev), code % self.W, code >= self.W, span)
            return torch.sigmoid(logit).cpu().numpy().astype(np.float64)


_erf = None  # scipy.special.erf, imported on first use


def _gelu(x: np.ndarray) -> np.ndarray:
    global _erf
    if _erf is None:
        from scipy.special import erf as _erf
    return x * (0.5 * (1.0 + _erf(x * (1 / math.sqrt(2)))))


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    inv_n = 1.0 / x.shape[-1]
    d = x - x.sum(-1, keepdims=True) * inv_n
    return d * (1.0 / np.sqrt((d * d).sum(-1, keepdims=True) * inv_n + eps)) * w + b


class NumpyStep:
    """The model's step in numpy float32 (views of the CPU model's weights), on a cache given as
    numpy arrays k, v (layers, slots, heads, W, dh) (views of a CPU torch cache). Scores differ
    from torch's by float32 rounding (a few 1e-7, at most 2e-6 seen), as torch's own
    incremental and full passes do."""

    def __init__(self, model: PersistenceTransformer):
        def a(t: torch.Tensor) -> np.ndarray:  # a view: in-place changes to the weights are seen
            return t.detach().numpy()

        def lin(m) -> tuple[np.ndarray, np.ndarray]:
            return a(m.weight).T, a(m.bias)

        def ln(m) -> tuple[np.ndarray, np.ndarray, float]:
            return a(m.weight), a(m.bias), float(m.eps)

        c = model.config
        self.W, self.cap = c.max_len, np.float32(c.age_cap_s)
        self._j = np.arange(self.W)
        self.e0, self.e1 = lin(model.embed[0]), lin(model.embed[2])
        self.freq = a(model.time.freq)
        self.d_model = c.d_model
        self.layers = [(ln(b.norm1), lin(b.qkv), lin(b.proj), ln(b.norm2), lin(b.ff[0]), lin(b.ff[2]), b.h, b.dh)
                       for b in model.blocks]
        self.norm, self.head = ln(model.norm), lin(model.head)

    CHUNK = 128  # tracks per pass: larger matrices make OpenBLAS start threads (seen 30x slower when busy)

    def __call__(self, feats: np.ndarray, age: np.ndarray, k: np.ndarray, v: np.ndarray, slots: np.ndarray,
                 pos: np.ndarray) -> np.ndarray:
        """-> logits (B,) float32."""
        B, c = len(slots), self.CHUNK
        if B > c:  # tracks are independent: score them a chunk at a time
            return np.concatenate([self(feats[i:i + c], age[i:i + c], k, v, slots[i:i + c], pos[i:i + c])
                                   for i in range(0, B, c)])
        z = _gelu(feats @ self.e0[0] + self.e0[1]) @ self.e1[0] + self.e1[1]
        t = np.minimum(age, self.cap)[:, None] * self.freq
        enc = np.concatenate([np.sin(t), np.cos(t)], axis=1)
        z[:, :enc.shape[1]] += enc
        ring = pos % self.W
        # 0 for the ring positions a track sees, -inf for those not yet written (added to the scores)
        bias = np.where(self._j > visible_limit(pos, self.W)[:, None], np.float32(-np.inf), np.float32(0))[:, None]
        for li, (n1, qkv, proj, n2, f0, f1, H, dh) in enumerate(self.layers):
            x = (_layer_norm(z, *n1) @ qkv[0] + qkv[1]).reshape(B, 3, H, dh)
            ck, cv = k[li], v[li]
            ck[slots, :, ring] = x[:, 1]
            cv[slots, :, ring] = x[:, 2]
            w = (ck.take(slots, axis=0) @ x[:, 0, :, :, None])[..., 0] * dh ** -0.5  # (B, H, W)
            w += bias
            w = np.exp(w - w.max(-1, keepdims=True))
            w /= w.sum(-1, keepdims=True)
            att = (w[:, :, None, :] @ cv.take(slots, axis=0))[:, :, 0, :].reshape(B, H * dh)
            z = z + (att @ proj[0] + proj[1])
            z = z + (_gelu(_layer_norm(z, *n2) @ f0[0] + f0[1]) @ f1[0] + f1[1])
        return (_layer_norm(z, *self.norm) @ self.head[0] + self.head[1])[:, 0]


class CpuStep(TorchStep):
    """TorchStep on the CPU, with NumpyStep for batches of up to `numpy_max` tracks (same cache)."""

    name = "cpu"

    def __init__(self, model: PersistenceTransformer, capacity: int = 64, numpy_max: int = NUMPY_MAX):
        super().__init__(model, "cpu", capacity)
        self.numpy_max = int(numpy_max)
        self._np = NumpyStep(self.model) if self.numpy_max > 0 else None
        self._on_new_cache()

    def _on_new_cache(self) -> None:
        self._k, self._v = self.k.numpy(), self.v.numpy()

    def step(self, feats, age, slots, pos):
        if len(slots) > self.numpy_max:
            return super().step(feats, age, slots, pos)
        logit = self._np(feats, age, self._k, self._v, slots, pos).astype(np.float64)
        return 1.0 / (1.0 + np.exp(-logit))


def bucket_of(n: int) -> int:
    for b in BUCKETS:
        if n <= b:
            return b
    return -(-n // BUCKETS[-1]) * BUCKETS[-1]


class _Graph:
    """One captured step for B tracks: its packed input (pinned on the host, a copy on the
    device), pinned output, graph."""

    def __init__(self, B: int, model: PersistenceTransformer, device: torch.device):
        c, pin = model.config, device.type == "cuda"
        self.p = Packed(B, c.n_features, c.d_model, device, pin)
        self.out_buf = torch.zeros(B, device=device)  # the fused step's output
        self.hout = torch.zeros(B, dtype=torch.float32, pin_memory=pin)
        self.hout_np = self.hout.numpy()
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.out: Optional[torch.Tensor] = None
        self.done = torch.cuda.Event() if pin else None


class CudaGraphStep(TorchStep):
    """The step captured in one CUDA graph per batch bucket (`graph_step.PackedStep`: few
    kernels, the mask built on the device); the cache lives on the GPU, keys and values stacked
    (layers, slots + 1, heads, 2, W, dh), with one extra scratch slot (the last) that padding
    rows use. `graphs=False` runs the same padded step eagerly (for tests on machines where
    capture is unavailable)."""

    name = "cuda"
    _extra = 1

    def __init__(self, model: PersistenceTransformer, device="cuda", capacity: int = 64, graphs: bool = True,
                 fused: Optional[bool] = None):
        self.graphs = graphs and torch.device(device).type == "cuda"
        self._g: dict[int, _Graph] = {}
        super().__init__(model, device, capacity)
        self._packed = PackedStep(self.model, self.device)
        # The step as one Triton kernel (fused_step): by default on a GPU where Triton imports;
        # fused=True asks for it anywhere (on the CPU: Triton's interpreter, for tests).
        if fused is None:
            fused = self.device.type == "cuda" and fused_step.available()
        self._fused = self._check_fused() if fused else None

    FUSED_TOL = 1e-4  # the self-check's largest accepted logit difference from PackedStep

    def _check_fused(self) -> Optional[fused_step.FusedStep]:
        """A FusedStep when it builds and agrees with PackedStep on random tracks in a scratch
        cache (two steps, so the second sees the first's keys), else None (logged)."""
        try:
            f = fused_step.FusedStep(self._packed)
            c = self.model.config
            rng = np.random.default_rng(0)
            scratch = 39  # a 40-slot cache: 29 tracks in scattered slots, padding rows on the last
            kv = torch.randn((c.n_layers, scratch + 1) + tuple(self.kv.shape[2:]),
                             generator=torch.Generator().manual_seed(0)).to(self.device)
            kv2 = kv.clone()
            p = Packed(fused_step.BT * 2, c.n_features, c.d_model, self.device, False)
            out = torch.zeros(p.B, device=self.device)
            worst = 0.0
            slots = rng.permutation(scratch)[:p.B - 3]
            pos = rng.integers(0, 3 * c.max_len, len(slots))
            for t in range(2):
                pos = pos + t
                self._packed.pack(p, rng.normal(0, 0.5, (len(slots), c.n_features)).astype(np.float32),
                                  rng.uniform(0, 3, len(slots)).astype(np.float32), slots, pos, scratch)
                p.dev.copy_(p.host)
                with torch.inference_mode():
                    ref = self._packed(p, kv)
                    f(p, kv2, out)
                worst = max(worst, float((ref - out)[:len(slots)].abs().max()),
                            float((kv[:, :scratch] - kv2[:, :scratch]).abs().max()))
            if not worst <= self.FUSED_TOL:
                log.warning("persistence gate: fused Triton step differs from the torch step by %.2g; not used", worst)
                return None
            log.info("persistence gate: fused Triton step on %s (agrees with the torch step to %.1g)",
                     self.device, worst)
            return f
        except Exception as e:  # noqa: BLE001  (any failure: the torch step stays)
            log.warning("persistence gate: fused Triton step unavailable (%s: %s); using the torch step",
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            return None

    @property
    def fused(self) -> bool:
        return self._fused is not None

    def _alloc(self, slots: int) -> None:
        c = self.model.config
        self.kv = torch.zeros((c.n_layers, slots, c.n_heads, 2, c.max_len, c.d_model // c.n_heads),
                              device=self.device)

    @property
    def k(self) -> torch.Tensor:  # (layers, slots + 1, heads, W, dh): a view
        return self.kv[:, :, :, 0]

    @property
    def v(self) -> torch.Tensor:
        return self.kv[:, :, :, 1]

    @property
    def capacity(self) -> int:
        return self.kv.shape[1] - 1

    def _on_new_cache(self) -> None:
        self._g = {}  # the graphs hold the old cache's addresses: capture again

    def _run(self, g: _Graph) -> torch.Tensor:
        """Logits (B,) of the step on g's packed device input."""
        if self._fused is not None:
            return self._fused(g.p, self.kv, g.out_buf)
        return self._packed(g.p, self.kv)

    def _graph(self, B: int) -> _Graph:
        g = self._g.get(B)
        if g is not None:
            return g
        g = _Graph(B, self.model, self.device)
        self._packed.pack(g.p, np.zeros((0, g.p.F), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64),
                          np.zeros(0, np.int64), self.capacity)  # all rows padding
        g.p.dev.copy_(g.p.host)
        if self.graphs:
            with torch.inference_mode():
                side = torch.cuda.Stream(self.device)
                side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side):  # warm up (cuBLAS handles, workspaces) off the capture
                    for _ in range(2):
                        self._run(g)
                torch.cuda.current_stream(self.device).wait_stream(side)
                g.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g.graph):  # a private memory pool per graph (a few MB)
                    g.out = self._run(g)
        self._g[B] = g
        return g

    def step(self, feats, age, slots, pos):
        n = len(slots)
        g = self._graph(bucket_of(n))
        self._packed.pack(g.p, feats, age, slots, pos, self.capacity)
        with torch.inference_mode():
            g.p.dev.copy_(g.p.host, non_blocking=True)
            if g.graph is not None:
                g.graph.replay()
                out = g.out
            else:
                out = self._run(g)
            g.hout.copy_(out, non_blocking=True)
            if g.done is not None:
                g.done.record()
        if g.done is not None:
            g.done.synchronize()
        return 1.0 / (1.0 + np.exp(-g.hout_np[:n].astype(np.float64)))


def time_step(stepper: TorchStep, n: int, reps: int = 7, seed: int = 0) -> float:
    """Median seconds of one step of `stepper` over n tracks (synthetic inputs, slots taken
    modulo its capacity; ring positions are overwritten before any track can see them)."""
    rng = np.random.default_rng(seed)
    F = stepper.model.config.n_features
    feats = rng.normal(0, 0.5, (n, F)).astype(np.float32)
    age = rng.uniform(0, 3, n).astype(np.float32)
    slots = np.arange(n, dtype=np.int64) % stepper.capacity
    pos = rng.integers(0, 200, n).astype(np.int64)
    stepper.step(feats, age, slots, pos)  # first-call costs (graph capture) stay out
    ts = []
    for _ in range(reps):
        c = time.perf_counter()
        stepper.step(feats, age, slots, pos)
        ts.append(time.perf_counter() - c)
    return float(np.median(ts))
