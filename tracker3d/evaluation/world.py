"""Scoring 3D tracks in the calibration's world frame against a world ground truth (gt.csv with
header `frame,t,id,x,y,z,vis0,vis1`, metres, e.g. WildTrack's annotated ground positions).

- Ground plane: x, y only, a match within `radius` metres (WildTrack's standard: 0.5 m). MOTA,
  IDF1, HOTA, MODA, precision and recall from trackeval (CLEAR/Identity/HOTA, similarity
  1 - d / (2 radius), so CLEAR and Identity match at d <= radius; HOTA averages its 19 thresholds,
  i.e. radii 0.05..0.95 x 2 radius). MODP is WildTrack's: 1 - mean(d) / radius over the matches,
  converted from trackeval's MOTP (the mean similarity): MODP = 2 MOTP - 1.
- 3D: x, y, z within the same radius, against the ground truth raised by `gt_height` metres along
  world z (the tracked point is not the annotated one: a box centre sits about 0.9 m above a
  person's ground position). gt_height "auto" takes the median height of the tracks above their
  ground-plane matches and reports it, so 3D adds a height-consistency check to the ground plane.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..errors import Tracker3DError
from .eval2d import FrameObjects, evaluate_2d

WORLD_GT_HEADER = ["frame", "t", "id", "x", "y", "z", "vis0", "vis1"]
WILDTRACK_RADIUS_M = 0.5


def gt_kind(path: Union[str, os.PathLike]) -> str:
    """'world' (frame,t,id,x,y,z,vis0,vis1) or 'sim' (our simulator's gt.csv, camera 0 frame, with
    kind and pixel columns; docs/DESIGN.md "Recording"), told apart by the header line."""
    from ..sim.world import GT_HEADER

    path = Path(path)
    if not path.is_file():
        raise Tracker3DError(f"{path}: ground truth file not found")
    with open(path, encoding="utf-8") as f:
        head = f.readline().strip().replace(" ", "").split(",")
    if head == WORLD_GT_HEADER:
        return "world"
    if head == GT_HEADER:
        return "sim"
    raise Tracker3DError(f"{path}: unknown ground truth header; expected '{','.join(WORLD_GT_HEADER)}' (world, "
                         f"metres) or the simulator's '{','.join(GT_HEADER)}'")


def read_world_gt(path: Union[str, os.PathLike]) -> dict[str, np.ndarray]:
    """World gt.csv as columns: frame, id, vis0, vis1 (int); t, x, y, z (float, metres)."""
    path = Path(path)
    if gt_kind(path) != "world":
        raise Tracker3DError(f"{path}: expected the header '{','.join(WORLD_GT_HEADER)}'")
    cols: dict[str, list] = {k: [] for k in WORLD_GT_HEADER}
    with open(path, encoding="utf-8") as f:
        f.readline()
        for n, line in enumerate(f, start=2):
            if not line.strip():
                continue
            parts = line.strip().split(",")
            if len(parts) != len(WORLD_GT_HEADER):
                raise Tracker3DError(f"{path}:{n}: expected {len(WORLD_GT_HEADER)} fields, got {len(parts)}")
            for k, v in zip(WORLD_GT_HEADER, parts):
                try:
                    x = int(v) if k in ("frame", "id", "vis0", "vis1") else float(v)
                except ValueError:
                    raise Tracker3DError(f"{path}:{n}: field '{k}': expected a number, got {v!r}") from None
                if isinstance(x, float) and not math.isfinite(x):
                    raise Tracker3DError(f"{path}:{n}: field '{k}': expected a finite number, got {v!r}")
                cols[k].append(x)
    out = {k: np.asarray(v, dtype=np.int64 if k in ("frame", "id", "vis0", "vis1") else np.float64)
           for k, v in cols.items()}
    return out


def world_gt_frames(gt: dict[str, np.ndarray], visible: str = "either") -> dict[int, FrameObjects]:
    """Per frame: the persons to find (points (N,3) world metres). visible: 'either' (seen by at
    least one camera: WildTrack's setting for a pair), 'both', 'cam0' or 'cam1'."""
    m = {"either": (gt["vis0"] == 1) | (gt["vis1"] == 1), "both": (gt["vis0"] == 1) & (gt["vis1"] == 1),
         "cam0": gt["vis0"] == 1, "cam1": gt["vis1"] == 1}.get(visible)
    if m is None:
        raise Tracker3DError(f"visible {visible!r}: expected either, both, cam0 or cam1")
    xyz = np.column_stack([gt["x"], gt["y"], gt["z"]])
    out = {}
    for f in np.unique(gt["frame"][m]):
        k = m & (gt["frame"] == f)
        out[int(f)] = FrameObjects(gt["id"][k], points=xyz[k])
    return out


def _take(frames: dict[int, FrameObjects], dims: slice, lift: float = 0.0) -> dict[int, FrameObjects]:
    out = {}
    for f, o in frames.items():
        p = o.points[:, dims].copy()
        if lift and p.shape[1] == 3:
            p[:, 2] += lift
        out[f] = FrameObjects(o.ids, points=p)
    return out


def track_height_above_gt(gt: dict[int, FrameObjects], tracks: dict[int, FrameObjects], radius: float) -> float:
    """Median world-z of tracks minus that of the ground truth they match on the ground plane
    (one-to-one by x, y distance, within radius); NaN when nothing matches."""
    dz = []
    for f, t in tracks.items():
        g = gt.get(f)
        if g is None or not len(g.ids) or not len(t.ids):
            continue
        d = np.linalg.norm(g.points[:, None, :2] - t.points[None, :, :2], axis=2)
        r, c = linear_sum_assignment(d)
        ok = d[r, c] <= radius
        dz.extend(t.points[c[ok], 2] - g.points[r[ok], 2])
    return float(np.median(dz)) if dz else float("nan")


def evaluate_world(tracks: dict[int, FrameObjects], gt: dict[int, FrameObjects], frames: list[int],
                   radius: float = WILDTRACK_RADIUS_M, gt_height: Optional[float] = None) -> dict:
    """tracks, gt: per frame points (N,3) in world metres. Returns {'ground': ..., '3d': ...}
    metric dicts (trackeval), over `frames`. gt_height None = auto (see the module doc)."""
    if not radius > 0:
        raise Tracker3DError(f"--radius {radius}: expected a positive distance in metres")
    ground = evaluate_2d(_take(gt, slice(0, 2)), _take(tracks, slice(0, 2)), frames=frames, kind="centroid",
                         dist_px=2 * radius)
    ground.update(_detection_scores(ground, radius), radius_m=radius)
    auto = gt_height is None
    h = track_height_above_gt(gt, tracks, radius) if auto else float(gt_height)
    measured = math.isfinite(h)
    h = h if measured else 0.0
    d3 = evaluate_2d(_take(gt, slice(0, 3), lift=h), tracks, frames=frames, kind="centroid", dist_px=2 * radius)
    d3.update(_detection_scores(d3, radius), radius_m=radius, gt_height_m=h, gt_height_auto=auto and measured)
    return {"ground": ground, "3d": d3}


def _detection_scores(m: dict, radius: float) -> dict:
    """WildTrack's MODP and the mean match distance (metres), from trackeval's MOTP."""
    if m["gt_dets"] - m["FN"] <= 0:  # no matches: no localisation to score
        return {"MODP": float("nan"), "mean_dist_m": float("nan")}
    motp = m["MOTP"]
    return {"MODP": 2 * motp - 1, "mean_dist_m": 2 * radius * (1 - motp)}


def format_world(name: str, m: dict) -> str:
    return (f"{name}: MOTA {m['MOTA']:.3f}  IDF1 {m['IDF1']:.3f}  HOTA {m['HOTA']:.3f}  MODA {m['MODA']:.3f}  "
            f"MODP {m['MODP']:.3f}  precision {m['precision']:.3f}  recall {m['recall']:.3f}  IDSW {m['IDSW']}  "
            f"FP {m['FP']}  FN {m['FN']}  (mean distance {m['mean_dist_m'] * 100:.1f} cm)")
