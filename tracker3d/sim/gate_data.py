"""Training data for the persistence filter: what our own detector and 2D tracker produce on
seeded sim scenes, each 2D track labelled by the sim's ground truth.

A track is *persistent* (label 1) when most of its observed rows sit on one real object
(within `match_px`); otherwise it is not (0), and its `kind` says what it mostly sat on
(flash, clutter, noise) or `other` (nothing: a ghost, a merge, sensor noise).
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable, Optional

import numpy as np

from persistence import HitCountGate
from persistence.data import KINDS, TrackSet

from ..batch.engine import EngineSpec, run_tasks
from ..detect import make_detector
from ..detect.detections import Detections
from ..errors import Tracker3DError
from ..track2d.tracker import ByteTracker
from . import SimWorld, get_scene
from .scene import SceneConfig

log = logging.getLogger(__name__)

__all__ = ["KINDS", "TrackSet", "build", "collect", "recipe_frame_rates"]


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
            t = t if img is not None and np.isfinite(t) else pair.t
            if not np.isfinite(t):
                continue  # neither camera delivered this pair
            d = dets[cam].detect(img, t) if img is not None else Detections.empty()
            trks[cam].update(d, t)
            finished[cam].extend((h, int(n)) for h, n in zip(trks[cam].removed_hist, trks[cam].removed_hlen))
    for cam in (0, 1):  # tracks alive at the end
        finished[cam].extend((h, int(n)) for h, n in zip(trks[cam].hist, trks[cam].hlen))
    hist, lengths, label, kind, camera = [], [], [], [], []
    for cam in (0, 1):
        for h, n in finished[cam]:
            lab, kd = _label(h, n, cam, gt_by_frame, cfg.frame_rate, cfg.time_offset, match_px)
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
                    np.array(kind, np.int64), np.full(n, seed, np.int64), np.array(camera, np.int64), np.array(size))


# The shipped model's training scenes: every preset kind, plus other frame rates, a larger image,
# heavier noise and longer-blinking clutter, so one model serves them all.
RECIPE: tuple[tuple[str, dict], ...] = (
    ("default", {}), ("cluttered", {}), ("swarm", {}), ("walkers", {}), ("throws", {}), ("sparse", {}),
    ("faults", {}), ("default", {"fps": 15.0}), ("walkers", {"fps": 60.0}),
    ("cluttered", {"width": 1280, "height": 720}), ("default", {"noise_sigma": 8.0, "flicker": 0.06}),
    ("throws", {"clutter_count": 10, "clutter_on_frames": (2, 8), "flash_rate": 4.0}),
)
SPLIT_SEEDS = {"train": range(1000, 1032), "val": range(2000, 2003), "test": range(3000, 3004)}


def recipe_frame_rates(recipe: Iterable = RECIPE) -> tuple[float, float]:
    """(lowest, highest) frame rate of a recipe's scenes, Hz: what a model trained on it has seen
    (it goes into the model card as `frame_rates_hz`)."""
    rates = [get_scene(sc).frame_rate if isinstance(sc, str) else get_scene(sc[0]).with_(**sc[1]).frame_rate
             for sc in recipe]
    return float(min(rates)), float(max(rates))


def _collect_job(job) -> TrackSet:
    scene, over, seed, seconds, kw = job
    return collect(get_scene(scene).with_(seconds=seconds, **over), seed, **kw)


def build(scenes: Iterable, seeds: Iterable[int], seconds: float = 10.0,
          progress: Optional[Callable] = None, engine: Optional[EngineSpec] = None, **kw) -> TrackSet:
    """Tracks from every (scene, seed); a scene is a preset name or (name, overrides). Seeds
    identify scenes, so splits by seed never share one. Scenes run as tasks on `engine` (local
    processes by default, or Ray); the result is the same, in the same order, on any engine."""
    specs = [(sc, {}) if isinstance(sc, str) else (sc[0], dict(sc[1])) for sc in scenes]
    work = [(sc, over, sd, seconds, kw) for sc, over in specs for sd in seeds]
    sets: list[Optional[TrackSet]] = [None] * len(work)
    outcomes = run_tasks(_collect_job, work, engine or EngineSpec("serial"))
    for outcome in (progress(outcomes, total=len(work)) if progress else outcomes):
        if not outcome.ok:
            sc, over, sd = work[outcome.index][:3]
            raise Tracker3DError(f"gate data: scene {sc} {over or ''} seed {sd} failed: {outcome.error}")
        sets[outcome.index] = outcome.value
    return TrackSet.concat(sets)
