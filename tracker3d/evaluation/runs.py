"""Evaluation of whole runs against ground truth (a sim recording's gt.csv, or a live sim)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from streams import RecordingReader

from ..pipeline import PipelineConfig, StereoPipeline, run
from ..progress import bar
from ..sim import read_gt
from ..track2d.mot import read_mot
from .eval2d import FrameObjects, evaluate_2d, mot_frames, sim_gt_frames
from .eval3d import FrameTracks, evaluate_3d
from .world import (
    WILDTRACK_RADIUS_M,
    evaluate_world,
    gt_kind,
    read_world_gt,
    world_gt_frames,
)

CENTROID_DIST_PX = 10.0  # 2D: similarity 1 - d/10 px, CLEAR/ID match within 5 px


class Collector:
    """Keeps what evaluation needs from each processed pair: 3D tracks in camera 0's frame (with
    the raw triangulation and the pixels behind them) and each camera's reported 2D tracks."""

    def __init__(self, pipeline: StereoPipeline):
        self.pipe = pipeline
        self.frames3d: dict[int, FrameTracks] = {}
        self.frames2d: tuple[dict, dict] = ({}, {})

    def __call__(self, f3) -> None:
        t3 = self.pipe.tracker3d
        rep = t3.reported()
        id_list = [tr.id for tr in rep]
        nan2, nan3 = [np.nan, np.nan], [np.nan] * 3
        self.frames3d[f3.index] = FrameTracks(
            np.array(id_list, int), t3.states(rep)[0] if rep else np.zeros((0, 3)),  # positions in one gather
            np.array([f3.raw.get(i, nan3) for i in id_list]).reshape(-1, 3),
            uv0=np.array([tr.uv0 if tr.uv0 is not None else nan2 for tr in rep]).reshape(-1, 2),
            uv1=np.array([tr.uv1 if tr.uv1 is not None else nan2 for tr in rep]).reshape(-1, 2))
        for c, trk in enumerate(self.pipe.trackers):
            m = trk.reported_mask()
            meas = trk.measured()[m]  # cx, cy, w, h: the box around the tracked centre
            boxes = np.column_stack([meas[:, :2] - meas[:, 2:] / 2, meas[:, :2] + meas[:, 2:] / 2])
            self.frames2d[c][f3.index] = FrameObjects(trk.ids[m], boxes=boxes, points=meas[:, :2])

    def world_tracks(self) -> dict[int, FrameObjects]:
        """Per processed frame: the reported 3D tracks as points (N,3) in the calibration's world
        frame (camera 0's when it has none), metres."""
        calib = self.pipe.calib
        return {f: FrameObjects(ft.ids, points=calib.to_world(ft.xyz) if len(ft.ids) else np.zeros((0, 3)))
                for f, ft in self.frames3d.items()}

    def add_smoothing(self, smoothed: dict) -> None:
        for f, ft in self.frames3d.items():
            ft.smooth = np.array([smoothed[(int(i), f)][0][:3] if (int(i), f) in smoothed else [np.nan] * 3
                                  for i in ft.ids]).reshape(-1, 3)

    def reported_ids(self) -> set[int]:
        return {int(i) for ft in self.frames3d.values() for i in ft.ids}

    def use_offline(self, states: dict) -> None:
        """Replace the reported 3D tracks by the offline ones ({(id, frame): (state, cov)}, camera
        0 frame; StereoPipeline.offline_states): each frame's tracks become the offline tracks on it,
        at their smoothed positions (the raw triangulation and pixels kept where the track had them)."""
        by_frame: dict[int, list] = {f: [] for f in self.frames3d}  # the states' frames are processed ones
        for (i, f), (x, _) in sorted(states.items()):
            by_frame[f].append((i, x[:3]))
        nan3, nan2 = [np.nan] * 3, [np.nan] * 2
        for f, rows in by_frame.items():
            old = self.frames3d[f]
            where = {int(i): k for k, i in enumerate(old.ids)}

            def of(arr, i, fill):
                k = where.get(i)
                return arr[k] if k is not None and len(arr) > k else fill

            ids = [i for i, _ in rows]
            xyz = np.array([x for _, x in rows]).reshape(-1, 3)
            self.frames3d[f] = FrameTracks(
                np.array(ids, int), xyz, np.array([of(old.raw, i, nan3) for i in ids]).reshape(-1, 3), smooth=xyz,
                uv0=np.array([of(old.uv0, i, nan2) for i in ids]).reshape(-1, 2),
                uv1=np.array([of(old.uv1, i, nan2) for i in ids]).reshape(-1, 2))

    def evaluate(self, gt: dict[str, np.ndarray], fps: float, skip_s: float) -> dict:
        res = {"3d": evaluate_3d(self.frames3d, gt, self.pipe.calib, fps, skip_s=skip_s)}
        first = int(round(skip_s * fps))
        for c in (0, 1):
            frames = sorted(f for f in self.frames2d[c] if f >= first)
            res[f"2d_cam{c}"] = evaluate_2d(sim_gt_frames(gt, c), self.frames2d[c], frames=frames, kind="centroid",
                                            dist_px=CENTROID_DIST_PX)
        return res


def warmup_s(config: PipelineConfig, fps: float) -> float:
    """Seconds at the start in which the detector learns its background and reports nothing."""
    if config.detector in ("bg", "mog2", "knn"):
        from ..detect.background import BackgroundSubtractionDetector

        return BackgroundSubtractionDetector().warmup_frames_at(fps) / fps
    return 0.0


def evaluate_recording(path: str, config: Optional[PipelineConfig] = None, gate=None,
                       show_progress: bool = True) -> dict:
    """Run the pipeline over a sim recording (lossless) and score it against its gt.csv."""
    rec_dir = Path(path)
    rec = RecordingReader(rec_dir, require_calib=True)
    return evaluate_source(rec, rec.calib, rec_dir / "gt.csv", config, gate, show_progress=show_progress)


def evaluate_source(src, calib, gt_path, config: Optional[PipelineConfig] = None, gate=None,
                    show_progress: bool = True, radius: float = WILDTRACK_RADIUS_M,
                    gt_height: Optional[float] = None, visible: str = "either",
                    view_gt: Sequence[Optional[Path]] = (None, None), offline: bool = False) -> dict:
    """Run the pipeline over a lossless stereo source (a recording, or a detections folder) and
    score it against gt_path: a sim gt.csv (camera 0 frame: '3d', '2d_cam0', '2d_cam1'), or a
    world gt.csv ('ground' and '3d' in the world frame at `radius` metres, see evaluation.world;
    '2d_cam0'/'2d_cam1' at IoU 0.5 against view_gt MOT files when given). offline: score the offline
    3D tracks (StereoPipeline.offline_states: smoothed, with the frames before confirmation) instead of the causal ones. Closes src."""
    kind = gt_kind(gt_path)
    gt = read_gt(gt_path) if kind == "sim" else read_world_gt(gt_path)
    fps = float(getattr(src, "fps", 30.0))
    config = config or PipelineConfig()
    try:
        pipe = StereoPipeline(calib, config, gate=gate, keep_log=True)
    except BaseException:
        src.close()
        raise
    col = Collector(pipe)
    prog = bar("eval", total=len(src), unit="pair") if show_progress else None
    try:
        stats = run(src, pipe, on_frame=col, progress=prog, images_needed=False)
    finally:
        src.close()
        pipe.close()
    if offline:
        col.use_offline(pipe.offline_states(col.reported_ids()))
    if kind == "sim":
        if not offline:
            col.add_smoothing(pipe.smoothed_states())
        res = col.evaluate(gt, fps, warmup_s(config, fps) if isinstance(src, RecordingReader) else 0.0)
    else:
        frames = sorted(col.frames3d)
        res = evaluate_world(col.world_tracks(), world_gt_frames(gt, visible), frames, radius, gt_height)
        res["frame_id"] = "world" if calib.has_world else "cam0"
        res["visible"] = visible
        for c, path in enumerate(view_gt):
            if path is not None:
                res[f"2d_cam{c}"] = evaluate_2d(view_gt_frames(path), col.frames2d[c], frames=frames, kind="iou")
    res["gt"] = kind
    res["offline"] = offline
    res["run"] = stats.summary()
    return res


def view_gt_frames(path) -> dict[int, FrameObjects]:
    """A view's MOTChallenge gt.txt as boxes per 0-based frame index (gt.txt frames are 1-based)."""
    return {f - 1: o for f, o in mot_frames(read_mot(path)).items()}


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
