"""Labelled track histories for training and evaluating persistence gates.

`TrackSet` holds N histories (rows [t, cx, cy, w, h, score, observed], seconds and pixels) with a
label (1 = follows a real, persistent object) and a kind (index into KINDS). `synthetic_tracks`
makes purely synthetic histories (steady movers, brief detections, noise-only, mixed) that add
variety to what the sim and our tracker produce.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

KINDS = ("object", "flash", "clutter", "noise", "other")


@dataclass
class TrackSet:
    """hist (N, L, 7) padded at the end, lengths (N,), label (N,) 1 = persistent, kind (N,) index
    into KINDS, seed (N,) (the scene a track came from: splits by seed never share a scene),
    camera (N,), image_size (N, 2) pixels [W, H]."""

    hist: np.ndarray
    lengths: np.ndarray
    label: np.ndarray
    kind: np.ndarray
    seed: np.ndarray
    camera: np.ndarray
    image_size: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.label)
        self.image_size = np.broadcast_to(np.asarray(self.image_size, np.int64).reshape(-1, 2), (n, 2)).copy()

    def __len__(self) -> int:
        return len(self.label)

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, hist=self.hist.astype(np.float32), lengths=self.lengths, label=self.label,
                            kind=self.kind, seed=self.seed, camera=self.camera, image_size=self.image_size)

    @classmethod
    def load(cls, path: str | Path) -> "TrackSet":
        names = ("hist", "lengths", "label", "kind", "seed", "camera", "image_size")
        try:
            z = np.load(path, allow_pickle=False)
        except (OSError, EOFError, ValueError) as e:
            raise ValueError(f"{path}: cannot read track set (expected a .npz from TrackSet.save: {e})") from None
        with z:
            missing = [k for k in names if k not in getattr(z, "files", ())]
            if missing:
                raise ValueError(f"{path}: not a track set (missing {', '.join(missing)})")
            return cls(z["hist"].astype(np.float64), *(z[k] for k in names[1:]))

    def subset(self, keep: np.ndarray) -> "TrackSet":
        return TrackSet(self.hist[keep], self.lengths[keep], self.label[keep], self.kind[keep], self.seed[keep],
                        self.camera[keep], self.image_size[keep])

    @classmethod
    def concat(cls, sets: list["TrackSet"]) -> "TrackSet":
        sets = [s for s in sets if len(s)]
        if not sets:
            return cls(np.zeros((0, 1, 7)), *(np.zeros(0, np.int64) for _ in range(5)), np.zeros((0, 2), np.int64))
        L = max(s.hist.shape[1] for s in sets)
        hist = np.concatenate([np.pad(s.hist, ((0, 0), (0, L - s.hist.shape[1]), (0, 0))) for s in sets])
        return cls(hist, *(np.concatenate([getattr(s, k) for s in sets]) for k in
                           ("lengths", "label", "kind", "seed", "camera", "image_size")))


def synthetic_tracks(n: int, seed: int, max_len: int = 64, image_size: tuple[int, int] = (640, 480)) -> TrackSet:
    """n seed-style histories at a random frame rate (15-60 fps): half persistent movers (smooth
    velocity with some acceleration, occasional missed detections), the rest brief detections
    (1-3 observed rows, then coasted rows until deletion), noise tracks (observed rows that jump
    about) and mixed ones (a brief real-looking start that turns into jumps)."""
    rng = np.random.default_rng(seed)
    W, H = image_size
    hist = np.zeros((n, max_len, 7))
    lengths = np.zeros(n, np.int64)
    label = np.zeros(n, np.int64)
    kind = np.zeros(n, np.int64)
    for i in range(n):
        fps = rng.choice([15.0, 25.0, 30.0, 60.0])
        dt = 1.0 / fps
        r = rng.random()
        size = rng.uniform(4, 40)
        score = rng.uniform(0.3, 1.0)
        p = np.array([rng.uniform(0.05, 0.95) * W, rng.uniform(0.05, 0.95) * H])
        if r < 0.5:  # persistent mover
            m = int(rng.integers(2, max_len + 1))
            v = rng.normal(0, rng.choice([5.0, 40.0, 150.0]), 2)
            acc = rng.normal(0, 30.0, 2)
            obs = rng.random(m) > rng.uniform(0.0, 0.15)
            obs[0] = True
            noise = rng.uniform(0.1, 1.0)
            lab, kd = 1, 0
        else:
            m = int(rng.integers(2, 40))
            v = rng.normal(0, 20.0, 2) if rng.random() < 0.5 else np.zeros(2)
            acc = np.zeros(2)
            noise = rng.uniform(0.1, 1.0)
            obs = np.zeros(m, bool)
            if r < 0.7:  # brief detection (flash / clutter blink) then coasting
                obs[:int(rng.integers(1, 4))] = True
                kd = 1 if r < 0.6 else 2
            elif r < 0.9:  # noise track: detections that jump about
                obs[:] = rng.random(m) < 0.6
                obs[0] = True
                noise = rng.uniform(3.0, 15.0)
                kd = 3
            else:  # mixed: a few steady rows, then jumps
                k = min(int(rng.integers(2, 5)), m)
                obs[:] = rng.random(m) < 0.5
                obs[:k] = True
                noise = np.r_[np.full(k, 0.5), np.full(m - k, rng.uniform(4.0, 15.0))][:, None]
                kd = 4
            lab = 0
        tt = np.arange(m) * dt * (1 + rng.normal(0, 0.02, m).cumsum() * 0.01)
        tt = np.maximum.accumulate(tt)
        pos = p + v * tt[:, None] + 0.5 * acc * tt[:, None] ** 2 + rng.normal(0, 1, (m, 2)) * noise
        # Coasted rows carry the predicted position (as a tracker would): constant velocity.
        last = 0
        for k in range(m):
            if obs[k]:
                last = k
            else:
                pos[k] = pos[last] + (v * (tt[k] - tt[last]) if lab else 0.0)
        wh = size * np.exp(rng.normal(0, 0.05, (m, 2)))
        hist[i, :m] = np.column_stack([tt, pos, wh, np.where(obs, np.clip(score + rng.normal(0, 0.05, m), 0, 1), 0),
                                       obs.astype(float)])
        lengths[i], label[i], kind[i] = m, lab, kd
    return TrackSet(hist, lengths, label, kind, np.full(n, -seed - 1, np.int64), np.zeros(n, np.int64),
                    np.array(image_size))
