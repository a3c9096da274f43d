"""The real-data section of `tracker3d bench`: WildTrack cameras C1-C2 (detections folders, see
../shared/data/wildtrack_c1c2/README.md), clean and noisy.

Rows per variant, all computed here against the folder's ground truth (trackeval):
- 3D, ground plane (x, y within 0.5 m, persons seen in either view; "dist" = mean distance of the
  matches): the stereo pipeline with the commands' defaults (`tracker3d eval DIR`), with `--ground`,
  and with `--ground --offline` (the offline tracks: smoothed, with the frames before confirmation), and an oracle
  (the annotated boxes of both views with their true cross-view match and IDs, triangulated frame
  by frame, at the box centre and at the bottom-edge middle: what perfect 2D tracking and
  association would give; its misses are persons seen by one camera only). The oracle uses only
  the ground truth, so it is printed once. Beside them a naive baseline on the same detections
  (`naive_3d`: per-frame cross-view matching on the epipolar distance, triangulation, IDs linked
  to the previous frame within 1 m).
- 2D, views 0 and 1 (IoU 0.5 against gt0.txt, gt1.txt): the stereo pipeline's tracks of that
  camera, the 2D tracker alone as `tracker3d track2d --det detC.txt --fps F` runs it (with the
  detection's box and with `--box filtered`), and, when roboflow `trackers` is installed, SORT
  (max_age 1, min_hits 3, IoU 0.3), ByteTrack and OC-SORT (defaults) on the same detC.txt.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from calib import triangulate
from streams.detections import (
    Boxes2D,
    DetectionFolder,
    is_detections_folder,
    read_det_file,
)

from ..errors import Tracker3DError
from ..evaluation.eval2d import FrameObjects, evaluate_2d, mot_frames
from ..evaluation.runs import evaluate_source, view_gt_frames
from ..evaluation.world import evaluate_world, read_world_gt, world_gt_frames
from ..track2d.mot import read_mot
from .peers import ROBOFLOW_KINDS, have_trackers, track_boxes

VARIANTS = ("clean", "noisy")
SORT_PARAMS = {"lost_track_buffer": 1, "minimum_consecutive_frames": 3, "minimum_iou_threshold": 0.3}


def variant_dirs(root: str | Path) -> list[tuple[str, Path]]:
    """(name, folder) for each detections folder: root itself, or its clean/ and noisy/."""
    root = Path(root)
    if is_detections_folder(root):
        return [(root.name, root)]
    found = [(v, root / v) for v in VARIANTS if is_detections_folder(root / v)]
    if not found:
        raise Tracker3DError(f"{root}: not a detections folder (det0.txt, det1.txt, frames.csv, calib) and no "
                             f"{'/'.join(VARIANTS)} subfolders holding one")
    return found


def _command_defaults(options: Sequence[str] = ()):
    """The pipeline configuration and gate that `tracker3d eval DIR [options]` uses."""
    from ..commands.common import add_pipeline_args, pipeline_from_args

    p = argparse.ArgumentParser()
    add_pipeline_args(p)
    return pipeline_from_args(p.parse_args(list(options)))


def ours_3d(d: Path, options: Sequence[str] = (), offline: bool = False) -> dict:
    """`tracker3d eval DIR [options] [--offline]`."""
    config, gate = _command_defaults(options)
    src = DetectionFolder.open_folder(d)
    views = [d / f"gt{c}.txt" for c in (0, 1)]
    return evaluate_source(src, src.calib, d / "gt.csv", config, gate, show_progress=False,
                           view_gt=[v if v.is_file() else None for v in views], offline=offline)


def oracle_3d(d: Path, anchor: str = "center") -> dict:
    """Annotated boxes in both views with their true IDs, box centres (or bottom-edge middles,
    anchor 'bottom') triangulated per frame."""
    src = DetectionFolder.open_folder(d)
    calib = src.calib
    g0, g1 = read_mot(d / "gt0.txt"), read_mot(d / "gt1.txt")
    f0, f1 = mot_frames(g0), mot_frames(g1)
    tracks = {}
    frames = [row[0] for row in src.rows]
    for idx in frames:
        a, b = f0.get(idx + 1), f1.get(idx + 1)
        if a is None or b is None:
            tracks[idx] = FrameObjects(np.zeros(0, int), points=np.zeros((0, 3)))
            continue
        common = np.intersect1d(a.ids, b.ids)
        ia = [int(np.flatnonzero(a.ids == i)[0]) for i in common]
        ib = [int(np.flatnonzero(b.ids == i)[0]) for i in common]
        if not len(common):
            tracks[idx] = FrameObjects(np.zeros(0, int), points=np.zeros((0, 3)))
            continue
        pa, pb = a.points[ia], b.points[ib]
        if anchor == "bottom":
            pa = pa + np.column_stack([np.zeros(len(ia)), (a.boxes[ia, 3] - a.boxes[ia, 1]) / 2])
            pb = pb + np.column_stack([np.zeros(len(ib)), (b.boxes[ib, 3] - b.boxes[ib, 1]) / 2])
        tri = triangulate(calib, pa, pb)
        ok = tri.valid
        tracks[idx] = FrameObjects(common[ok], points=calib.to_world(tri.xyz[ok]))
    gt = world_gt_frames(read_world_gt(d / "gt.csv"), "either")
    return evaluate_world(tracks, gt, frames)


NAIVE_EPIPOLAR_PX = 10.0  # naive baseline: largest Sampson distance of a cross-view match, pixels
NAIVE_LINK_M = 1.0  # naive baseline: largest step between frames that keeps an ID, metres


def naive_3d(d: Path, max_px: float = NAIVE_EPIPOLAR_PX, link_m: float = NAIVE_LINK_M) -> dict:
    """A per-frame baseline on the detections: Hungarian matching of box centres across the views
    on the Sampson distance (< max_px), triangulation, and IDs linked to the previous frame's
    points (Hungarian on the ground-plane distance, < link_m metres). No 2D tracking, no filter."""
    src = DetectionFolder.open_folder(d)
    calib = src.calib
    tracks: dict[int, FrameObjects] = {}
    prev_ids, prev_xy = np.zeros(0, int), np.zeros((0, 2))
    next_id = 0
    frames = []
    for pair in src:
        frames.append(pair.index)
        pts = np.zeros((0, 3))
        if pair.boxes0 is not None and pair.boxes1 is not None and len(pair.boxes0) and len(pair.boxes1):
            c0 = (pair.boxes0.boxes[:, :2] + pair.boxes0.boxes[:, 2:]) / 2
            c1 = (pair.boxes1.boxes[:, :2] + pair.boxes1.boxes[:, 2:]) / 2
            cost = calib.sampson_matrix(c0, c1)
            r, c = linear_sum_assignment(np.where(np.isfinite(cost), cost, 1e9))
            ok = cost[r, c] < max_px
            if ok.any():
                tri = triangulate(calib, c0[r[ok]], c1[c[ok]])
                pts = calib.to_world(tri.xyz[tri.valid])
        ids = np.full(len(pts), -1, int)
        if len(pts) and len(prev_ids):
            dist = np.linalg.norm(pts[:, None, :2] - prev_xy[None, :, :], axis=2)
            r, c = linear_sum_assignment(dist)
            keep = dist[r, c] < link_m
            ids[r[keep]] = prev_ids[c[keep]]
        for k in np.flatnonzero(ids < 0):
            ids[k] = next_id
            next_id += 1
        tracks[pair.index] = FrameObjects(ids, points=pts)
        prev_ids, prev_xy = ids, pts[:, :2]
    gt = world_gt_frames(read_world_gt(d / "gt.csv"), "either")
    return evaluate_world(tracks, gt, frames)


def track2d_alone(d: Path, fps: float, cam: int = 0, box: str = "detection") -> dict:
    """`tracker3d track2d --det detC.txt --fps F --box BOX` (its defaults), scored against gtC.txt."""
    from ..commands import track2d as cmd

    p = argparse.ArgumentParser()
    cmd.add_parser(p.add_subparsers())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "tracks.txt"
        args = p.parse_args(["track2d", "--det", str(d / f"det{cam}.txt"), "--fps", str(fps), "--out", str(out),
                             "--box", box])
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            args.func(args)
        tracks = {f - 1: o for f, o in mot_frames(read_mot(out)).items()}
    return _score_view(d, tracks, cam)


def _score_view(d: Path, tracks: dict[int, FrameObjects], cam: int = 0) -> dict:
    frames = [row[0] for row in DetectionFolder.open_folder(d).rows]
    return evaluate_2d(view_gt_frames(d / f"gt{cam}.txt"), tracks, frames=frames, kind="iou")


def peer_view(d: Path, cam: int, kind: str, fps: float) -> dict:
    """A roboflow tracker on detC.txt, frame by frame (they know no time): SORT with the paper's
    settings at frame_rate 30 (its buffer: 1 frame), ByteTrack and OC-SORT with their defaults at
    the data's rate."""
    dets = read_det_file(d / f"det{cam}.txt")
    idx = [row[0] for row in DetectionFolder.open_folder(d).rows]
    empty = Boxes2D.empty()
    frames = [(dets.get(i + 1, empty).boxes, dets.get(i + 1, empty).scores) for i in idx]
    out = track_boxes(kind, frames, 30.0 if kind == "SORT" else fps, **(SORT_PARAMS if kind == "SORT" else {}))
    return _score_view(d, dict(zip(idx, out)), cam)


def wildtrack_rows(root: str | Path, progress: Optional[Callable] = None) -> list[dict]:
    """Rows {variant, what, method, metrics...} for each variant folder under root."""
    rows = []
    todo = variant_dirs(root)
    peers = ROBOFLOW_KINDS if have_trackers() else ()
    for name, d in (progress(todo) if progress else todo):
        res = ours_3d(d)
        fps = float(DetectionFolder.open_folder(d).fps)
        rows.append({"variant": name, "what": "3D ground plane", "method": "tracker3d", **res["ground"]})
        rows.append({"variant": name, "what": "3D ground plane", "method": "tracker3d --ground",
                     **ours_3d(d, ["--ground"])["ground"]})
        rows.append({"variant": name, "what": "3D ground plane", "method": "tracker3d --ground --offline",
                     **ours_3d(d, ["--ground"], offline=True)["ground"]})
        rows.append({"variant": name, "what": "3D ground plane", "method": "naive per-frame matching",
                     **naive_3d(d)["ground"]})
        if name == todo[0][0]:  # the oracle uses only the ground truth: the same for every variant
            for anchor in ("center", "bottom"):
                rows.append({"variant": "gt", "what": "3D ground plane", "method": f"oracle, box {anchor}s",
                             **oracle_3d(d, anchor)["ground"]})
        for cam in (0, 1):
            if f"2d_cam{cam}" not in res:
                continue
            what = f"2D view {cam}"
            rows.append({"variant": name, "what": what, "method": "tracker3d (stereo pipeline)", **res[f"2d_cam{cam}"]})
            rows.append({"variant": name, "what": what, "method": f"tracker3d track2d --fps {fps:g}",
                         **track2d_alone(d, fps, cam)})
            rows.append({"variant": name, "what": what, "method": "track2d --box filtered",
                         **track2d_alone(d, fps, cam, "filtered")})
            for kind in peers:
                method = "SORT (max_age 1, min_hits 3)" if kind == "SORT" else f"{kind} (default)"
                rows.append({"variant": name, "what": what, "method": method, **peer_view(d, cam, kind, fps)})
    return rows


def _cm(metres: float) -> str:
    return f"{100 * metres:7.1f}" if np.isfinite(metres) else f"{'-':>7s}"


def format_rows(rows: list[dict]) -> str:
    head = (f"{'data':7s} {'score':16s} {'method':30s} {'MOTA':>6s} {'IDF1':>6s} {'HOTA':>6s} {'MODA':>6s} "
            f"{'prec':>6s} {'recall':>6s} {'IDSW':>5s} {'FP':>6s} {'FN':>6s} {'dist cm':>7s}")
    lines = [head]
    for r in rows:
        lines.append(f"{r['variant']:7s} {r['what']:16s} {r['method']:30s} {100 * r['MOTA']:6.1f} "
                     f"{100 * r['IDF1']:6.1f} {100 * r['HOTA']:6.1f} {100 * r['MODA']:6.1f} "
                     f"{100 * r['precision']:6.1f} {100 * r['recall']:6.1f} {r['IDSW']:5d} {r['FP']:6d} {r['FN']:6d} "
                     + _cm(r.get("mean_dist_m", float("nan"))))
    return "\n".join(lines)
