"""Training data for the persistence filter: what our own detector and 2D tracker produce on
seeded sim scenes, each 2D track labelled by the sim's ground truth.

A track is *persistent* (label 1) when most of its observed rows sit on one real object
(within `match_px`); otherwise it is not (0), and its `kind` says what it mostly sat on
(flash, clutter, noise) or `other` (nothing: a ghost, a merge, sensor noise).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

from persistence import HitCountGate

from .detect import make_detector
from .detections import Detections
from .sim import SimWorld, get_scene
from .sim.scene import SceneConfig
from .track2d import ByteTracker

log = logging.getLogger(__name__)

KINDS = ("object", "flash", "clutter", "noise", "other")


@dataclass
class TrackSet:
    """N labelled track histories: hist (N, L, 7) padded at the end, lengths (N,), label (N,)
    1 = persistent, kind (N,) index into KINDS, seed/camera (N,), image size per set."""

    hist: np.ndarray
    lengths: np.ndarray
    label: np.ndarray
    kind: np.ndarray
    seed: np.ndarray
    camera: np.ndarray
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.label)

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, hist=self.hist.astype(np.float32), lengths=self.lengths, label=self.label,
                            kind=self.kind, seed=self.seed, camera=self.camera, image_size=np.array(self.image_size))

    @classmethod
    def load(cls, path: str | Path) -> "TrackSet":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["hist"].astype(np.float64), z["lengths"], z["label"], z["kind"], z["seed"], z["camera"],
                       tuple(int(v) for v in z["image_size"]))

    @classmethod
    def concat(cls, sets: list["TrackSet"]) -> "TrackSet":
        L = max(s.hist.shape[1] for s in sets)
        hist = np.concatenate([np.pad(s.hist, ((0, 0), (0, L - s.hist.shape[1]), (0, 0))) for s in sets])
        return cls(hist, *(np.concatenate([getattr(s, k) for s in sets]) for k in
                           ("lengths", "label", "kind", "seed", "camera")), sets[0].image_size)


def _label(hist: np.ndarray, n: int, cam: int, gt_by_frame: dict, fps: float, offset: float,
           match_px: float) -> tuple[int, int]:
    """(label, kind index) of one track's first n rows."""
    votes: dict[tuple[int, str], int] = {}
    observed = 0
    for row in hist[:n]:
        if row[6] <= 0:
            continue
        observed += 1
        k = int(round((row[0] - (offset if cam == 1 else 0.0)) * fps))
        ids, kinds, uv = gt_by_frame.get((k, cam), (None, None, None))
        if ids is None:
            continue
        d = np.hypot(uv[:, 0] - row[1], uv[:, 1] - row[2])
        j = int(np.argmin(d))
        if d[j] < match_px:
            key = (int(ids[j]), str(kinds[j]))
            votes[key] = votes.get(key, 0) + 1
    if not votes or observed == 0:
        return 0, KINDS.index("other")
    (oid, kind), count = max(votes.items(), key=lambda kv: kv[1])
    if count < 0.5 * observed:
        return 0, KINDS.index("other")
    return (1 if kind == "object" else 0), KINDS.index(kind)


def collect(cfg: SceneConfig, seed: int, max_len: int = 64, match_px: float = 3.0, detector: str = "bg",
            min_hits: int = 3) -> TrackSet:
    """Run detection + 2D tracking on both cameras of one sim scene; label every track that ended
    (or was alive at the end) by the ground truth; keep each track's first max_len rows."""
    world = SimWorld(cfg, seed=seed)
    size = (cfg.width, cfg.height)
    dets = [make_detector(detector), make_detector(detector)]
    trks = [ByteTracker(gate=HitCountGate(min_hits, 1.0), image_size=size) for _ in (0, 1)]
    gt_by_frame: dict = {}
    finished: list[list[tuple[np.ndarray, int]]] = [[], []]
    for _ in range(cfg.n_frames):
        pair, gt = world.step()
        for cam in (0, 1):
            rows = [r for r in gt if (r.vis0 if cam == 0 else r.vis1)]
            if rows:
                uv = np.array([r.uv0 if cam == 0 else r.uv1 for r in rows])
                gt_by_frame[(pair.index, cam)] = (np.array([r.id for r in rows]), np.array([r.kind for r in rows]), uv)
            img, t = (pair.img0, pair.t0) if cam == 0 else (pair.img1, pair.t1)
            t = t if img is not None else pair.t
            d = dets[cam].detect(img, t) if img is not None else Detections.empty()
            trks[cam].update(d, t)
            finished[cam].extend((h, int(n)) for h, n in zip(trks[cam].removed_hist, trks[cam].removed_hlen))
    for cam in (0, 1):  # tracks alive at the end
        finished[cam].extend((h, int(n)) for h, n in zip(trks[cam].hist, trks[cam].hlen))
    hist, lengths, label, kind, camera = [], [], [], [], []
    for cam in (0, 1):
        for h, n in finished[cam]:
            lab, kd = _label(h, n, cam, gt_by_frame, cfg.fps, cfg.time_offset, match_px)
            m = min(n, max_len)
            padded = np.zeros((max_len, 7))
            padded[:m] = h[:m]
            hist.append(padded)
            lengths.append(m)
            label.append(lab)
            kind.append(kd)
            camera.append(cam)
    n = len(label)
    return TrackSet(np.array(hist).reshape(n, max_len, 7), np.array(lengths, np.int64), np.array(label, np.int64),
                    np.array(kind, np.int64), np.full(n, seed, np.int64), np.array(camera, np.int64), size)


def build(scenes: Iterable[str], seeds: Iterable[int], seconds: float = 10.0,
          progress: Optional[Callable] = None, **kw) -> TrackSet:
    """Tracks from every (scene, seed); seeds identify scenes, so splits by seed never share one."""
    jobs = [(sc, sd) for sc in scenes for sd in seeds]
    sets = [collect(get_scene(sc).with_(seconds=seconds), sd, **kw) for sc, sd in (progress(jobs) if progress else jobs)]
    return TrackSet.concat(sets)
