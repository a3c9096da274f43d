"""Evaluation of whole recordings against their ground truth (gt.csv)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from persistence import HitCountGate
from streams import RecordingReader, StreamError

from .detect import make_detector
from .eval2d import FrameObjects, evaluate_2d, sim_gt_frames
from .progress import progress
from .run2d import run_2d
from .sim import read_gt
from .track2d import ByteTracker

CENTROID_DIST_PX = 10.0  # similarity 1 - d/10 px: CLEAR/ID match within 5 px


def evaluate_recording_2d(path: str, detector: str = "bg", min_hits: int = 3) -> dict[str, dict]:
    """Detect and track each camera of a sim recording; metrics per camera vs gt.csv."""
    rec_dir = Path(path)
    gt = read_gt(rec_dir / "gt.csv")
    out = {}
    for cam in (0, 1):
        rec = RecordingReader(rec_dir)
        size = rec.calib.cam0.image_size if rec.calib else None
        frames = ((p.index, p.t0 if cam == 0 else p.t1, p.img0 if cam == 0 else p.img1) for p in rec)
        run = run_2d(frames, make_detector(detector), ByteTracker(gate=HitCountGate(min_hits, 1.0), image_size=size),
                     progress=lambda it: progress(it, f"cam{cam}", total=len(rec), unit="pair"))
        rec.close()
        tracks = {f: FrameObjects(ids, points=pts) for f, (ids, pts) in run.points.items()}
        m = evaluate_2d(sim_gt_frames(gt, cam), tracks, frames=sorted(run.points), kind="centroid",
                        dist_px=CENTROID_DIST_PX)
        m["detect_ms"] = float(np.median(run.detect_ms))
        m["track_ms"] = float(np.median(run.track_ms))
        out[f"cam{cam}"] = m
    return out


def format_table(rows: dict[str, dict], cols=("HOTA", "DetA", "AssA", "MOTA", "IDF1", "IDSW", "FP", "FN")) -> str:
    head = f"{'':12s}" + "".join(f"{c:>8s}" for c in cols)
    lines = [head]
    for name, m in rows.items():
        cells = []
        for c in cols:
            v = m.get(c, float("nan"))
            cells.append(f"{v:8d}" if isinstance(v, (int, np.integer)) else f"{v:8.3f}")
        lines.append(f"{name:12s}" + "".join(cells))
    return "\n".join(lines)
