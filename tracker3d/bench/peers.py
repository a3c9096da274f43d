"""2D tracking side by side with roboflow `trackers` (ByteTrack, SORT) on the same detections.

Detections come from our background-subtraction detector on sim scenes (both cameras); every
tracker sees exactly the same detection stream. Accuracy is HOTA/MOTA/IDF1 (trackeval, centroid
similarity 1 - d/10 px) against the sim's ground truth; time is the tracker's update alone
(median ms per frame). ByteTrack is given the best of a parameter sweep made on *tuning* seeds,
which are not the reported ones (ours was tuned on those tuning seeds too).
"""
from __future__ import annotations

import contextlib
import io
import itertools
import logging
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from persistence import HitCountGate

from ..detect import make_detector
from ..detect.detections import Detections
from ..evaluation.eval2d import FrameObjects, evaluate_2d, sim_gt_frames
from ..sim import SimWorld, get_scene, gt_columns
from ..track2d.tracker import ByteTracker

log = logging.getLogger(__name__)

REPORT_SEEDS = (0, 1)
TUNING_SEEDS = (100, 101)
SCENES = ("default", "walkers", "throws", "swarm", "crowd")


@dataclass
class Stream:
    """One camera's detections over a scene, with its ground truth."""

    scene: str
    seed: int
    camera: int
    times: list[float]
    dets: list[Detections]
    image_size: tuple[int, int]
    gt: dict[int, FrameObjects]
    n_objects: int


def make_streams(scene: str, seed: int, seconds: float = 10.0, objects: Optional[int] = None) -> list[Stream]:
    cfg = get_scene(scene).with_(seconds=seconds)
    if objects is not None:
        cfg = cfg.with_(n_objects=objects)
    world = SimWorld(cfg, seed=seed)
    detectors = [make_detector("bg"), make_detector("bg")]
    times, dets, gts = ([], []), ([], []), []
    for _ in range(cfg.n_frames):
        pair, gt = world.step()
        gts.extend(gt)
        for c, (img, t) in enumerate(((pair.img0, pair.t0), (pair.img1, pair.t1))):
            if img is None:
                continue
            times[c].append(t)
            dets[c].append(detectors[c].detect(img, t))
    cols = gt_columns(gts)
    return [Stream(scene, seed, c, times[c], dets[c], (cfg.width, cfg.height), sim_gt_frames(cols, c),
                   cfg.n_objects) for c in (0, 1)]


def have_trackers() -> bool:
    """Whether roboflow `trackers` (and supervision) are installed (make install-bench)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            import supervision  # noqa: F401
            import trackers  # noqa: F401
        return True
    except ImportError:
        return False


def run_ours(stream: Stream, **cfg) -> tuple[dict[int, FrameObjects], list[float]]:
    from ..track2d.tracker import TrackerConfig

    tr = ByteTracker(TrackerConfig(**cfg), HitCountGate(3, 1.0), image_size=stream.image_size)
    out, ms = {}, []
    for k, (t, d) in enumerate(zip(stream.times, stream.dets)):
        t0 = time.perf_counter()
        tr.update(d, t)
        ms.append((time.perf_counter() - t0) * 1000)
        rep = tr.reported_mask()
        out[k] = FrameObjects(tr.ids[rep], points=tr.measured()[rep, :2])
    return out, ms


def _roboflow(kind: str, params: dict):
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        import supervision as sv
        from trackers import ByteTrackTracker, SORTTracker
        from trackers.utils import iou as iou_mod
    p = dict(params)
    if "iou" in p:
        name = p.pop("iou")
        p["iou"] = iou_mod.BIoU(0.3) if name == "BIoU" else getattr(iou_mod, name)()
    cls = ByteTrackTracker if kind == "bytetrack" else SORTTracker
    return sv, cls(frame_rate=30.0, **p)


def run_roboflow(stream: Stream, kind: str, params: dict) -> tuple[dict[int, FrameObjects], list[float]]:
    sv, tracker = _roboflow(kind, params)
    out, ms = {}, []
    for k, (t, d) in enumerate(zip(stream.times, stream.dets)):
        det = sv.Detections(xyxy=d.boxes.astype(np.float32), confidence=d.scores.astype(np.float32),
                            data={"cx": d.centroids[:, 0], "cy": d.centroids[:, 1]})
        t0 = time.perf_counter()
        res = tracker.update(det)
        ms.append((time.perf_counter() - t0) * 1000)
        keep = res.tracker_id >= 0
        pts = np.column_stack([res.data["cx"][keep], res.data["cy"][keep]]) if keep.any() else np.zeros((0, 2))
        out[k] = FrameObjects(res.tracker_id[keep].astype(int), points=pts)
    return out, ms


ROBOFLOW_KINDS = ("SORT", "ByteTrack", "OC-SORT")


def track_boxes(kind: str, frames: list[tuple[np.ndarray, np.ndarray]], frame_rate: float,
                **params) -> list[FrameObjects]:
    """Roboflow `trackers`' SORT, ByteTrack or OC-SORT (`kind`, ROBOFLOW_KINDS; `params` to its
    constructor) frame by frame over (xyxy boxes, confidences) per frame: per frame the tracks it
    reports (tracker_id >= 0) with their boxes."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        import supervision as sv
        from trackers import ByteTrackTracker, OCSORTTracker, SORTTracker
    cls = {"SORT": SORTTracker, "ByteTrack": ByteTrackTracker, "OC-SORT": OCSORTTracker}[kind]
    tracker = cls(frame_rate=frame_rate, **params)
    out = []
    for boxes, conf in frames:
        res = tracker.update(sv.Detections(xyxy=np.asarray(boxes, np.float32).reshape(-1, 4),
                                           confidence=np.asarray(conf, np.float32).reshape(-1)))
        keep = res.tracker_id >= 0 if len(res) else np.zeros(0, bool)
        out.append(FrameObjects(res.tracker_id[keep].astype(int) if len(res) else np.zeros(0, int),
                                boxes=res.xyxy[keep] if len(res) else np.zeros((0, 4))))
    return out


BYTETRACK_SWEEP = {
    "track_activation_threshold": (0.3, 0.5, 0.7),
    "minimum_iou_threshold": (0.05, 0.1, 0.3),
    "lost_track_buffer": (30, 60),
    "iou": ("IoU", "BIoU"),
}


WARMUP_FRAMES = 60  # the detector learns its background first and reports nothing


def _score(gt, out, frames) -> dict:
    """Metrics over the frames after the detector's warm-up (same for every tracker)."""
    return evaluate_2d(gt, out, frames=[f for f in frames if f >= WARMUP_FRAMES], kind="centroid", dist_px=10.0)


def sweep_bytetrack(streams: list[Stream], progress: Optional[Callable] = None) -> tuple[dict, float]:
    """Best ByteTrack parameters (mean HOTA) over the given (tuning) streams."""
    keys = list(BYTETRACK_SWEEP)
    combos = [dict(zip(keys, vals)) for vals in itertools.product(*BYTETRACK_SWEEP.values())]
    best, best_hota = {}, -1.0
    for params in (progress(combos) if progress else combos):
        h = np.mean([_score(s.gt, run_roboflow(s, "bytetrack", params)[0], range(len(s.times)))["HOTA"]
                     for s in streams])
        if h > best_hota:
            best, best_hota = params, float(h)
    return best, best_hota


def compare(scenes=SCENES, seeds=REPORT_SEEDS, seconds: float = 10.0, bytetrack_params: Optional[dict] = None,
            progress: Optional[Callable] = None) -> list[dict]:
    """Rows (scene, tracker, HOTA, MOTA, IDF1, IDSW, ms/frame) over both cameras of each seed."""
    rows = []
    todo = [(sc, sd) for sc in scenes for sd in seeds]
    for scene, seed in (progress(todo) if progress else todo):
        streams = make_streams(scene, seed, seconds)
        trackers_ = [("tracker3d", lambda s: run_ours(s))]
        trackers_.append(("ByteTrack (default)", lambda s: run_roboflow(s, "bytetrack", {})))
        if bytetrack_params:
            trackers_.append(("ByteTrack (swept)", lambda s: run_roboflow(s, "bytetrack", bytetrack_params)))
        trackers_.append(("SORT (default)", lambda s: run_roboflow(s, "sort", {})))
        for name, fn in trackers_:
            ms_all, mets = [], []
            for s in streams:
                out, ms = fn(s)
                ms_all.extend(ms[WARMUP_FRAMES:])  # the detector's warm-up frames are empty
                mets.append(_score(s.gt, out, range(len(s.times))))
            rows.append({"scene": scene, "seed": seed, "objects": streams[0].n_objects, "tracker": name,
                         **{k: float(np.mean([m[k] for m in mets])) for k in ("HOTA", "MOTA", "IDF1")},
                         "IDSW": int(sum(m["IDSW"] for m in mets)), "ms_per_frame": float(np.median(ms_all))})
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'scene':10s} {'seed':>4s} {'obj':>4s} {'tracker':22s} {'HOTA':>6s} {'MOTA':>6s} {'IDF1':>6s} "
             f"{'IDSW':>5s} {'ms/frame':>9s}"]
    for r in rows:
        lines.append(f"{r['scene']:10s} {r['seed']:4d} {r['objects']:4d} {r['tracker']:22s} {r['HOTA']:6.3f} "
                     f"{r['MOTA']:6.3f} {r['IDF1']:6.3f} {r['IDSW']:5d} {r['ms_per_frame']:9.3f}")
    return "\n".join(lines)
