"""The transformer's incremental step in the form CudaGraphStep captures: few kernels, inputs in
one packed float32 buffer, the attention mask built on the device.

`PackedStep` holds the model's weights rearranged (same arithmetic as
`PersistenceTransformer.step`, up to float32 rounding order):

- the qkv projection's output rows reordered per head (q, k, v of head 0, then head 1, ...) and
  q's rows scaled by 1/sqrt(head size) (exact for head size 16: a power of two), so q, k and v
  are views of one matrix and the new keys and values are written with one index_put per layer
  into a cache that stacks them: (layers, slots, heads, 2, W, head size);
- the visible cache entries from one integer per track, lim = min(step since birth, W - 1):
  ring positions j > lim are hidden (one comparison for all layers, a masked_fill per layer);
- the time encoding's age clamped on the host; sin and cos written into one buffer (no cat);
- the sigmoid left to the host (float64, as the CPU steppers do).

40 torch ops a step for 2 layers, about one kernel each (the model's `step_bias` form: 50, plus
einsum's copies; `python -m tracker3d.bench.gate_device` counts both, and the CUDA kernels).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .model import PersistenceTransformer

N_INT = 3  # int64 fields per track: cache slot, ring position, lim


def visible_limit(pos: np.ndarray, W: int) -> np.ndarray:
    """Step index since birth -> the last ring position a track's query sees (positions above
    it are not yet written): pos while its window fills, W - 1 once full."""
    return np.minimum(pos, W - 1)


def _linear(x: torch.Tensor, bw: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """x @ W^T + b in one addmm, bw = (b, W^T)."""
    return torch.addmm(bw[0], x, bw[1])


class Packed:
    """One bucket's packed input (B tracks) as contiguous segments of one float32 buffer:
    [slot, ring, lim] int64 (B each), features (B, F) float32, clamped age (B,) float32, and
    views of it on the host (numpy) and on the device (torch), plus the step's work buffers."""

    def __init__(self, B: int, n_features: int, d_model: int, device: torch.device, pin: bool):
        self.B, self.F = B, n_features
        n = 2 * N_INT * B + B * n_features + B
        self.host = torch.zeros(n, dtype=torch.float32, pin_memory=pin)
        h = self.host.numpy()
        i64 = h[:2 * N_INT * B].view(np.int64)
        self.slot, self.ring, self.lim = (i64[k * B:(k + 1) * B] for k in range(N_INT))
        o = 2 * N_INT * B
        self.feats = h[o:o + B * n_features].reshape(B, n_features)
        self.age = h[o + B * n_features:]
        self.dev = self.host.to(device)
        d64 = self.dev[:2 * N_INT * B].view(torch.int64)
        self.d_slot, self.d_ring, self.d_lim = (d64[k * B:(k + 1) * B] for k in range(N_INT))
        self.d_feats = self.dev[o:o + B * n_features].view(B, n_features)
        self.d_age = self.dev[o + B * n_features:]
        self.enc = torch.zeros(B, d_model, device=device)  # the time encoding: sin and cos written here
        self.n = B  # rows from the last packed count on are padding rows (all of them at first)


class PackedStep:
    """PersistenceTransformer.step on a Packed input and a stacked cache kv (layers, slots,
    heads, 2, W, head size) -> logits (B,) on the device. Every input a tensor at a fixed
    address, nothing read on the host: the form a CUDA graph captures."""

    def __init__(self, model: PersistenceTransformer, device: torch.device):
        c = model.config
        self.W, self.cap = c.max_len, float(c.age_cap_s)
        self.d_model = c.d_model
        self.n_heads, self.dh = c.n_heads, c.d_model // c.n_heads
        H, dh, d = self.n_heads, self.dh, c.d_model

        def t(x: torch.Tensor) -> torch.Tensor:
            return x.detach().to(device=device, dtype=torch.float32).contiguous()

        def lin(m: torch.nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
            return t(m.bias), t(m.weight.T)

        e0, e1 = model.embed[0], model.embed[2]
        self.e0, self.e1 = lin(e0), lin(e1)
        self.freq = t(model.time.freq)
        n_enc = self.freq.numel()
        if 2 * n_enc != d:
            raise ValueError(f"d_model {d}: the packed step needs the time encoding to fill it (2 x {n_enc})")
        # qkv output rows reordered to (head, q/k/v, dh); q's rows scaled by dh ** -0.5.
        order = torch.arange(3 * d).view(3, H, dh).permute(1, 0, 2).reshape(-1)
        scale = torch.ones(3, H, dh)
        scale[0] = dh ** -0.5
        scale = scale.permute(1, 0, 2).reshape(-1)
        self.layers = []
        for b in model.blocks:
            w = b.qkv.weight.detach().cpu()[order] * scale[:, None]  # reordered on the CPU, then moved by t()
            bias = b.qkv.bias.detach().cpu()[order] * scale
            self.layers.append(dict(
                n1=(t(b.norm1.weight), t(b.norm1.bias), float(b.norm1.eps)),
                qkv=(t(bias), t(w.T)),
                proj=lin(b.proj),
                n2=(t(b.norm2.weight), t(b.norm2.bias), float(b.norm2.eps)),
                f0=lin(b.ff[0]), f1=lin(b.ff[2])))
        self.norm = (t(model.norm.weight), t(model.norm.bias), float(model.norm.eps))
        self.head = lin(model.head)
        self.j = torch.arange(self.W, device=device)

    def __call__(self, p: Packed, kv: torch.Tensor) -> torch.Tensor:
        B, d, H, dh, W = p.B, self.d_model, self.n_heads, self.dh, self.W
        hidden = (self.j > p.d_lim[:, None])[:, None, :]  # (B, 1, W): ring positions not yet written
        a = p.d_age[:, None] * self.freq
        n = self.freq.numel()
        torch.sin(a, out=p.enc[:, :n])
        torch.cos(a, out=p.enc[:, n:])
        z = _linear(F.gelu(_linear(p.d_feats, self.e0)), self.e1) + p.enc
        slot, ring = p.d_slot, p.d_ring
        for li, L in enumerate(self.layers):
            x = _linear(F.layer_norm(z, (d,), *L["n1"]), L["qkv"]).view(B, H, 3, dh)
            cache = kv[li]  # (slots, heads, 2, W, dh)
            cache[slot, :, :, ring] = x[:, :, 1:]  # the new key and value of every head at once
            kvb = cache.index_select(0, slot)  # (B, H, 2, W, dh)
            w = torch.bmm(x[:, :, :1].reshape(B * H, 1, dh), kvb[:, :, 0].reshape(B * H, W, dh).transpose(1, 2))
            w = w.view(B, H, W).masked_fill_(hidden, float("-inf")).softmax(-1)
            att = torch.bmm(w.view(B * H, 1, W), kvb[:, :, 1].reshape(B * H, W, dh)).view(B, d)
            z = z + _linear(att, L["proj"])
            z = z + _linear(F.gelu(_linear(F.layer_norm(z, (d,), *L["n2"]), L["f0"])), L["f1"])
        return _linear(F.layer_norm(z, (d,), *self.norm), self.head)[:, 0]

    def pack(self, p: Packed, feats: np.ndarray, age: np.ndarray, slots: np.ndarray, pos: np.ndarray,
             scratch: int) -> None:
        """Write n tracks' inputs into p's host buffer; rows from n on that held tracks of a
        larger batch become padding rows: the scratch slot at ring position 0, seeing only it."""
        n, W, n_before = len(slots), self.W, p.n
        p.n = n
        p.slot[:n] = slots
        p.ring[:n] = pos % W
        p.lim[:n] = visible_limit(pos, W)
        p.feats[:n] = feats
        np.minimum(age, self.cap, out=p.age[:n])
        if n_before > n:
            p.slot[n:n_before] = scratch
            p.ring[n:n_before] = 0
            p.lim[n:n_before] = 0
            p.feats[n:n_before] = 0.0
            p.age[n:n_before] = 0.0
