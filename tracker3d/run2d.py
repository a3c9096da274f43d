"""Detector + tracker over one camera's frames; MOT rows out."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import numpy as np

from .detect import Detector
from .detect.detections import Detections
from .errors import Tracker3DError
from .track2d.boxfilter import BoxFilterConfig, TrackBoxes
from .track2d.tracker import ByteTracker

BOX_KINDS = ("detection", "filtered")


@dataclass
class Run2D:
    rows: list[tuple] = field(default_factory=list)  # MOT rows (frame 1-based, id, x, y, w, h, conf)
    points: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # frame0 -> (ids, centroids)
    detect_ms: list[float] = field(default_factory=list)
    track_ms: list[float] = field(default_factory=list)
    detections: dict[int, Detections] = field(default_factory=dict)
    backfill: bool = False  # a newly confirmed track also gets rows for its earlier detections
    backfilled: int = 0  # rows added that way
    box: str = "detection"  # rows: the matched detection's box, or the SORT-style filtered box (track2d.boxfilter)
    box_filter: Optional[BoxFilterConfig] = None  # its noise (None: the defaults)
    _boxes: Optional[TrackBoxes] = field(default=None, repr=False)
    _reported: set = field(default_factory=set, repr=False)
    _past: dict = field(default_factory=dict, repr=False)  # t (s) -> (0-based frame, {id: row box}), for back-fill

    def __post_init__(self) -> None:
        if self.box not in BOX_KINDS:
            raise Tracker3DError(f"box {self.box!r}: expected one of {', '.join(BOX_KINDS)}")


def record_frame(out: Run2D, frame0: int, tracker: ByteTracker) -> None:
    """Append the tracker's reported tracks for 0-based frame `frame0` to `out`: points are the
    tracked centroids; MOT rows are boxes, not centred on the centroid (a blob's box is not
    centred on its contrast-weighted centroid): by default the matched detection's own box,
    with out.box 'filtered' the track's SORT-style filtered box (centre, scale and aspect ratio
    filtered, see track2d.boxfilter). Call once per tracker update."""
    rep = tracker.reported_mask()
    ids = tracker.ids[rep]
    meas = tracker.measured()[rep]
    out.points[frame0] = (ids, meas[:, :2])
    dets = tracker.last_detections
    matched = np.flatnonzero(tracker.matched & (tracker.det_index >= 0)) if len(dets) else np.zeros(0, np.int64)
    xyxy = np.column_stack([meas[:, :2] - meas[:, 2:] / 2, meas[:, :2] + meas[:, 2:] / 2])
    if out.box == "filtered":
        if out._boxes is None:
            out._boxes = TrackBoxes(out.box_filter)
        out._boxes.step(tracker)
        all_boxes = out._boxes.boxes(tracker)
        xyxy = all_boxes[rep]
    else:
        all_boxes = np.zeros((len(tracker.ids), 4))
        all_boxes[matched] = dets.boxes[tracker.det_index[matched]]
        if len(ids) and len(dets):
            xyxy = all_boxes[rep]
    xywh = np.column_stack([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]])
    for tid, (x, y, w, h), s in zip(ids, xywh, tracker.gate_score[rep]):
        out.rows.append((frame0 + 1, int(tid), x, y, w, h, float(s)))
    if out.backfill:
        b = all_boxes[matched]
        out._past[tracker.t] = (frame0, dict(zip(tracker.ids[matched].tolist(),
                                                 np.column_stack([b[:, :2], b[:, 2:] - b[:, :2]]))))
        while len(out._past) > tracker.cfg.max_history:  # older rows are out of every history
            del out._past[next(iter(out._past))]
        _backfill(out, frame0, tracker, rep)


def _backfill(out: Run2D, frame0: int, tracker: ByteTracker, rep: np.ndarray) -> None:
    """Offline, a track confirmed now was already there: give it rows (the box it would have been
    reported with) and points for the earlier frames in which it was detected (observed history
    rows), so the frames before confirmation are not empty."""
    for i in np.flatnonzero(rep):
        tid = int(tracker.ids[i])
        if tid in out._reported:
            continue
        out._reported.add(tid)
        for t, cx, cy, w, h, score, observed in tracker.history(int(i))[:-1]:
            past = out._past.get(t)
            if not observed or past is None or past[0] >= frame0:
                continue
            f, boxes = past
            x, y, bw, bh = boxes.get(tid, (cx - w / 2, cy - h / 2, w, h))
            out.rows.append((f + 1, tid, x, y, bw, bh, float(tracker.gate_score[i])))
            ids, pts = out.points.get(f, (np.zeros(0, np.int64), np.zeros((0, 2))))
            out.points[f] = (np.append(ids, tid), np.vstack([pts, [[cx, cy]]]))
            out.backfilled += 1


def _finish(out: Run2D) -> Run2D:
    if out.backfilled:
        out.rows.sort(key=lambda r: (r[0], r[1]))
    return out


def run_mot(dets_by_frame: Callable[[int], Detections], last: int, fps: float, tracker: ByteTracker,
            progress: Optional[Callable] = None, backfill: bool = False, box: str = "detection",
            box_filter: Optional[BoxFilterConfig] = None) -> Run2D:
    """Track detections of 1-based frames 1..last, frame f at t = (f - 1) / fps seconds
    (backfill, box, box_filter: see Run2D)."""
    out = Run2D(backfill=backfill, box=box, box_filter=box_filter)
    frames = range(1, last + 1)
    for f in (progress(frames) if progress else frames):
        tracker.update(dets_by_frame(f), (f - 1) / fps)
        record_frame(out, f - 1, tracker)
    return _finish(out)


def run_2d(frames: Iterable[tuple[int, float, Optional[np.ndarray]]], detector: Detector, tracker: ByteTracker,
           keep_detections: bool = False, progress: Optional[Callable] = None, backfill: bool = False,
           box: str = "detection", box_filter: Optional[BoxFilterConfig] = None) -> Run2D:
    """frames: (frame index 0-based, t seconds, image or None for a missing frame); backfill,
    box, box_filter: see Run2D."""
    out = Run2D(backfill=backfill, box=box, box_filter=box_filter)
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
