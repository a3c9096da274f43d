"""The transformer's incremental step as one Triton kernel (GPU): the whole model, both layers,
for 16 tracks per program, instead of PackedStep's ~40 kernels (issue 17: at 10-1000 tracks the
captured step was bound by kernel count, not arithmetic).

Same arithmetic as `graph_step.PackedStep` (its rearranged weights: qkv rows per head, q scaled)
up to float32 rounding order: matrix products in IEEE float32 (no TF32), the attention's softmax
online over chunks of the window (as flash attention does), the new key and value used from
registers (each track's program writes them to the cache and never reads them back), exact
erf GELU. Used by `steppers.CudaGraphStep` when Triton imports and a self-check against
PackedStep agrees (else PackedStep, logged). Needs power-of-two d_model, d_ff, head size and
window; the features are padded to the next power of two.
"""
from __future__ import annotations

import contextlib
import logging

import torch

log = logging.getLogger(__name__)

BT = 16  # tracks per program (tl.dot's smallest tile); every CudaGraphStep bucket is a multiple
WC = 16  # window positions per chunk of the online softmax

try:  # Triton is optional (GPU images ship it with torch; the CPU build and CI have none)
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001  (any import failure means: no fused step)
    triton = None


def available() -> bool:
    return triton is not None


def _pow2(n: int) -> bool:
    return n >= 16 and n & (n - 1) == 0


if triton is not None:
    @triton.jit
    def _ln(x, w_ptr, b_ptr, D: tl.constexpr, eps):
        c = tl.arange(0, D)
        mean = tl.sum(x, axis=1) / D
        xc = x - mean[:, None]
        var = tl.sum(xc * xc, axis=1) / D
        return xc / tl.sqrt(var + eps)[:, None] * tl.load(w_ptr + c)[None, :] + tl.load(b_ptr + c)[None, :]

    @triton.jit
    def _gelu(x):
        return 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))

    @triton.jit
    def _mat(x, w_ptr, row0, col0, ld, K: tl.constexpr, N: tl.constexpr):
        """x (BT, K) @ W[row0:row0+K, col0:col0+N] of a row-major matrix with ld columns."""
        r = tl.arange(0, K)
        c = tl.arange(0, N)
        w = tl.load(w_ptr + (row0 + r)[:, None] * ld + (col0 + c)[None, :])
        return tl.dot(x, w, input_precision="ieee")

    @triton.jit
    def _vec(ptr, off, N: tl.constexpr):
        return tl.load(ptr + off + tl.arange(0, N))

    @triton.jit
    def _step_kernel(slot_ptr, ring_ptr, lim_ptr, feats_ptr, age_ptr, kv_ptr, out_ptr,
                     e0w, e0b, e1w, e1b, freq2_ptr,
                     n1w, n1b, qkvw, qkvb, projw, projb, n2w, n2b, f0w, f0b, f1w, f1b,
                     nw, nb, hw, hb, n_slots, eps,
                     F: tl.constexpr, FP: tl.constexpr, D: tl.constexpr, DFF: tl.constexpr, H: tl.constexpr,
                     DH: tl.constexpr, W: tl.constexpr, L: tl.constexpr, BT: tl.constexpr, WC: tl.constexpr):
        rows = tl.program_id(0) * BT + tl.arange(0, BT)
        slot = tl.load(slot_ptr + rows)  # int64
        ring = tl.load(ring_ptr + rows)
        lim = tl.load(lim_ptr + rows)
        age = tl.load(age_ptr + rows)
        cf = tl.arange(0, FP)
        cd = tl.arange(0, D)
        ce = tl.arange(0, DH)
        # embedding: gelu(feats @ We0 + b) @ We1 + b + [sin, cos](age * freq)
        x = tl.load(feats_ptr + rows[:, None] * F + cf[None, :], mask=(cf < F)[None, :], other=0.0)
        w0 = tl.load(e0w + cf[:, None] * D + cd[None, :], mask=(cf < F)[:, None], other=0.0)
        h0 = _gelu(tl.dot(x, w0, input_precision="ieee") + _vec(e0b, 0, D)[None, :])
        a = age[:, None] * tl.load(freq2_ptr + cd)[None, :]
        enc = tl.where((cd < D // 2)[None, :], tl.sin(a), tl.cos(a))
        z = _mat(h0, e1w, 0, 0, D, D, D) + _vec(e1b, 0, D)[None, :] + enc
        for li in tl.static_range(L):
            xn = _ln(z, n1w + li * D, n1b + li * D, D, eps)
            upd = tl.zeros((BT, D), dtype=tl.float32)
            for h in tl.static_range(H):
                q = _mat(xn, qkvw + li * D * 3 * D, 0, (3 * h) * DH, 3 * D, D, DH) \
                    + _vec(qkvb, li * 3 * D + (3 * h) * DH, DH)[None, :]
                k = _mat(xn, qkvw + li * D * 3 * D, 0, (3 * h + 1) * DH, 3 * D, D, DH) \
                    + _vec(qkvb, li * 3 * D + (3 * h + 1) * DH, DH)[None, :]
                v = _mat(xn, qkvw + li * D * 3 * D, 0, (3 * h + 2) * DH, 3 * D, D, DH) \
                    + _vec(qkvb, li * 3 * D + (3 * h + 2) * DH, DH)[None, :]
                # cache (layers, slots, heads, 2, W, dh): this track's keys of head h start at kbase
                kbase = (((li * n_slots + slot) * H + h) * 2) * W * DH
                tl.store(kv_ptr + (kbase + ring * DH)[:, None] + ce[None, :], k)
                tl.store(kv_ptr + (kbase + W * DH + ring * DH)[:, None] + ce[None, :], v)
                m = tl.full((BT,), float("-inf"), tl.float32)
                s_sum = tl.zeros((BT,), dtype=tl.float32)
                acc = tl.zeros((BT, DH), dtype=tl.float32)
                for c0 in tl.static_range(0, W, WC):
                    j = c0 + tl.arange(0, WC)
                    at = kbase[:, None, None] + j[None, :, None] * DH + ce[None, None, :]  # (BT, WC, DH)
                    new = (j[None, :] == ring[:, None])[:, :, None]
                    kc = tl.where(new, k[:, None, :], tl.load(kv_ptr + at))
                    s = tl.sum(q[:, None, :] * kc, axis=2)  # (BT, WC)
                    s = tl.where(j[None, :] > lim[:, None], float("-inf"), s)
                    m_new = tl.maximum(m, tl.max(s, axis=1))
                    alpha = tl.exp(m - m_new)
                    p = tl.exp(s - m_new[:, None])
                    vc = tl.where(new, v[:, None, :], tl.load(kv_ptr + at + W * DH))
                    s_sum = s_sum * alpha + tl.sum(p, axis=1)
                    acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * vc, axis=1)
                    m = m_new
                att = acc / s_sum[:, None]
                upd += _mat(att, projw + li * D * D, h * DH, 0, D, DH, D)
            z = z + (upd + _vec(projb, li * D, D)[None, :])
            hn = _ln(z, n2w + li * D, n2b + li * D, D, eps)
            g = _gelu(_mat(hn, f0w + li * D * DFF, 0, 0, DFF, D, DFF) + _vec(f0b, li * DFF, DFF)[None, :])
            z = z + (_mat(g, f1w + li * DFF * D, 0, 0, D, DFF, D) + _vec(f1b, li * D, D)[None, :])
        zn = _ln(z, nw, nb, D, eps)
        logit = tl.sum(zn * tl.load(hw + cd)[None, :], axis=1) + tl.load(hb)
        tl.store(out_ptr + rows, logit)


class FusedStep:
    """PackedStep's step as one Triton kernel: (Packed p, stacked cache kv, out (B,)) -> out
    holds the logits. Built from a PackedStep (its rearranged weights, stacked per layer)."""

    def __init__(self, packed) -> None:
        if triton is None:
            raise RuntimeError("Triton is not installed")
        P = packed
        L0 = P.layers[0]
        D, DH, H = P.d_model, P.dh, P.n_heads
        DFF = L0["f0"][1].shape[1]
        F = P.e0[1].shape[0]
        if not all(_pow2(n) for n in (D, DFF, DH, P.W)):
            raise ValueError(f"fused step needs powers of two >= 16: d_model {D}, d_ff {DFF}, head {DH}, "
                             f"window {P.W}")
        eps = {float(L[k][2]) for L in P.layers for k in ("n1", "n2")} | {float(P.norm[2])}
        if len(eps) != 1:
            raise ValueError(f"fused step needs one LayerNorm eps, got {sorted(eps)}")

        def st(key: str, i: int) -> torch.Tensor:
            return torch.stack([L[key][i] for L in P.layers]).contiguous()

        self.eps = eps.pop()
        self.dims = dict(F=F, FP=max(16, 1 << (F - 1).bit_length()), D=D, DFF=DFF, H=H, DH=DH, W=P.W,
                         L=len(P.layers), BT=BT, WC=min(WC, P.W))
        self.w = (P.e0[1].contiguous(), P.e0[0], P.e1[1].contiguous(), P.e1[0], torch.cat([P.freq, P.freq]),
                  st("n1", 0), st("n1", 1), st("qkv", 1), st("qkv", 0), st("proj", 1), st("proj", 0),
                  st("n2", 0), st("n2", 1), st("f0", 1), st("f0", 0), st("f1", 1), st("f1", 0),
                  P.norm[0], P.norm[1], P.head[1][:, 0].contiguous(), P.head[0])

    def __call__(self, p, kv: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        B = p.B
        if B % BT:
            raise ValueError(f"fused step: batch {B} is not a multiple of {BT}")
        # Triton launches on the current device: make it the cache's (nothing to do on the CPU).
        with torch.cuda.device(kv.device) if kv.device.type == "cuda" else contextlib.nullcontext():
            _step_kernel[(B // BT,)](p.d_slot, p.d_ring, p.d_lim, p.d_feats, p.d_age, kv, out, *self.w,
                                     kv.shape[1], self.eps, **self.dims, num_warps=4)
        return out
