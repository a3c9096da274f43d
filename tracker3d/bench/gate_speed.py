"""Cost of the persistence gates per frame for many live tracks (64-step histories)."""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from persistence import HitCountGate


def _histories(n: int, steps: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(steps) / 30.0
    hist = np.zeros((n, steps, 7))
    hist[:, :, 0] = t
    hist[:, :, 1:3] = rng.uniform(50, 500, (n, 1, 2)) + rng.normal(0, 40, (n, 1, 2)) * t[None, :, None]
    hist[:, :, 3:5] = rng.uniform(5, 30, (n, 1, 2))
    hist[:, :, 5] = 0.9
    hist[:, :, 6] = (rng.random((n, steps)) > 0.1).astype(float)
    return hist


def gate_speed(n_tracks: int, device: str = "cpu", steps: int = 64, frames: int = 30,
               weights: Optional[str] = None, cuda_graphs: bool = True, scores: Optional[list] = None,
               fused: Optional[bool] = None) -> dict:
    """ms per frame (median, p99) of the learned gate scoring n_tracks live tracks whose caches
    already hold `steps` steps (each frame adds one row per track), on one CPU thread or a GPU
    (CUDA graphs, or eager torch with cuda_graphs=False); plus one full forward pass over
    n_tracks x steps, and the hit-count rule for comparison. `scores`, if given, receives each
    frame's scores (to compare devices). No latch: every track is scored every frame (in the
    pipeline a track latched persistent is not scored again, so this is the cost of n_tracks
    undecided tracks, the worst case)."""
    import torch

    from persistence.filter import TrackPersistenceFilter

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CPU side of the GPU gate runs on one thread too
    try:
        gate = TrackPersistenceFilter(weights, device=device, image_size=(640, 480), cuda_graphs=cuda_graphs,
                                      latch_s=0.0, fused=fused)
        total = steps + frames
        hist = _histories(n_tracks, total)
        ids = np.arange(n_tracks)
        cuda = gate.device.type == "cuda"
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        times = []
        for k in range(1, total + 1):
            lens = np.full(n_tracks, k)
            c = time.perf_counter()
            s = gate(ids, hist, lens)[1]
            sync()
            if k > steps:
                times.append(time.perf_counter() - c)
            if scores is not None:
                scores.append(s)
        from persistence.features import features

        model = gate._step.model
        f = torch.from_numpy(features(hist[:, :steps], np.full(n_tracks, steps), (640, 480))).to(gate.device)
        age = torch.from_numpy(hist[:, :steps, 0].astype(np.float32)).to(gate.device)
        full = []
        with torch.inference_mode():
            for _ in range(5):
                c = time.perf_counter()
                model(f, age)
                sync()
                full.append(time.perf_counter() - c)
        hits = HitCountGate(3, 1.0)
        ht = []
        for _ in range(20):
            c = time.perf_counter()
            hits(ids, hist[:, :steps], np.full(n_tracks, steps))
            ht.append(time.perf_counter() - c)
        if cuda:
            name = torch.cuda.get_device_name(gate.device) + (
                (" graphs, fused" if gate._step.fused else " graphs") if cuda_graphs else " eager")
        else:
            name = "cpu, 1 thread"
        return {"tracks": n_tracks, "device": name, "ms_median": float(np.median(times) * 1e3),
                "ms_p99": float(np.percentile(times, 99) * 1e3), "full_pass_ms": float(np.median(full) * 1e3),
                "hits_ms": float(np.median(ht) * 1e3)}
    finally:
        torch.set_num_threads(threads)


def auto_picks(counts, weights: Optional[str] = None) -> dict[int, str]:
    """The device `--gate-device auto` measures as faster for each track count (one CPU thread)."""
    import torch

    from persistence.filter import TrackPersistenceFilter

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gate = TrackPersistenceFilter(weights, device="auto", image_size=(640, 480))
        return {int(n): gate._preferred(int(n)) for n in counts}
    finally:
        torch.set_num_threads(threads)


def format_rows(rows: list[dict]) -> str:
    w = max([len("device")] + [len(r["device"]) for r in rows])  # whole names: a GPU's runs to 35 characters
    lines = [f"{'tracks':>7s}  {'device':<{w}s}{'per frame ms median':>21s}{'p99':>8s}"
             f"{'full 64-step pass ms':>22s}{'hit-count ms':>14s}"]
    for r in rows:
        lines.append(f"{r['tracks']:>7d}  {r['device']:<{w}s}{r['ms_median']:>21.2f}{r['ms_p99']:>8.2f}"
                     f"{r['full_pass_ms']:>22.1f}{r['hits_ms']:>14.3f}")
    return "\n".join(lines)
