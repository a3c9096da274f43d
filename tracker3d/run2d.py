"""Detector + tracker over one camera's frames; MOT rows out."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import numpy as np

from .detect import Detector
from .detect.detections import Detections
from .track2d.tracker import ByteTracker


@dataclass
class Run2D:
    rows: list[tuple] = field(default_factory=list)  # MOT rows (frame 1-based, id, x, y, w, h, conf)
    points: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # frame0 -> (ids, centroids)
    detect_ms: list[float] = field(default_factory=list)
    track_ms: list[float] = field(default_factory=list)
    detections: dict[int, Detections] = field(default_factory=dict)
    backfill: bool = False  # a newly confirmed track also gets rows for its earlier detections
    backfilled: int = 0  # rows added that way
    _reported: set = field(default_factory=set, repr=False)
    _frame_at: dict = field(default_factory=dict, repr=False)  # t (s) -> 0-based frame, for back-fill


def record_frame(out: Run2D, frame0: int, tracker: ByteTracker) -> None:
    """Append the tracker's reported tracks for 0-based frame `frame0` to `out`: points are the
    tracked centroids; MOT rows are the matched detection's own box (a blob's box is not centred
    on its contrast-weighted centroid)."""
    rep = tracker.reported_mask()
    ids = tracker.ids[rep]
    meas = tracker.measured()[rep]
    out.points[frame0] = (ids, meas[:, :2])
    dets = tracker.last_detections
    if dets is not None and len(dets) and len(ids):
        b = dets.boxes[tracker.det_index[rep]]
        xywh = np.column_stack([b[:, :2], b[:, 2:] - b[:, :2]])
    else:
        xywh = np.column_stack([meas[:, :2] - meas[:, 2:] / 2, meas[:, 2:]])
    for tid, (x, y, w, h), s in zip(ids, xywh, tracker.gate_score[rep]):
        out.rows.append((frame0 + 1, int(tid), x, y, w, h, float(s)))
    if out.backfill:
        _backfill(out, frame0, tracker, rep)


def _backfill(out: Run2D, frame0: int, tracker: ByteTracker, rep: np.ndarray) -> None:
    """Offline, a track confirmed now was already there: give it rows (measured box, centred on
    the centroid) and points for the earlier frames in which it was detected (observed history
    rows), so the frames before confirmation are not empty."""
    out._frame_at[tracker.t] = frame0
    for i in np.flatnonzero(rep):
        tid = int(tracker.ids[i])
        if tid in out._reported:
            continue
        out._reported.add(tid)
        for t, cx, cy, w, h, score, observed in tracker.history(int(i))[:-1]:
            f = out._frame_at.get(t)
            if not observed or f is None or f >= frame0:
                continue
            out.rows.append((f + 1, tid, cx - w / 2, cy - h / 2, w, h, float(tracker.gate_score[i])))
            ids, pts = out.points.get(f, (np.zeros(0, np.int64), np.zeros((0, 2))))
            out.points[f] = (np.append(ids, tid), np.vstack([pts, [[cx, cy]]]))
            out.backfilled += 1


def _finish(out: Run2D) -> Run2D:
    if out.backfilled:
        out.rows.sort(key=lambda r: (r[0], r[1]))
    return out


def run_mot(dets_by_frame: Callable[[int], Detections], last: int, fps: float, tracker: ByteTracker,
            progress: Optional[Callable] = None, backfill: bool = False) -> Run2D:
    """Track detections of 1-based frames 1..last, frame f at t = (f - 1) / fps seconds
    (backfill: see Run2D)."""
    out = Run2D(backfill=backfill)
    frames = range(1, last + 1)
    for f in (progress(frames) if progress else frames):
        tracker.update(dets_by_frame(f), (f - 1) / fps)
        record_frame(out, f - 1, tracker)
    return _finish(out)


def run_2d(frames: Iterable[tuple[int, float, Optional[np.ndarray]]], detector: Detector, tracker: ByteTracker,
           keep_detections: bool = False, progress: Optional[Callable] = None, backfill: bool = False) -> Run2D:
    """frames: (frame index 0-based, t seconds, image or None for a missing frame); backfill: see
    Run2D."""
    out = Run2D(backfill=backfill)
    it = progress(frames) if progress else frames
    for k, t, img in it:
        if img is None:
            dets = Detections.empty()
            out.detect_ms.append(0.0)
        else:
            if tracker.image_size is None:  # the gate and border checks need it
                tracker.image_size = (img.shape[1], img.shape[0])
            t0 = time.perf_counter()
            dets = detector.detect(img, t)
            out.detect_ms.append((time.perf_counter() - t0) * 1000)
        if keep_detections:
            out.detections[k] = dets
        t0 = time.perf_counter()
        tracker.update(dets, t)
        out.track_ms.append((time.perf_counter() - t0) * 1000)
        record_frame(out, k, tracker)
    return _finish(out)
