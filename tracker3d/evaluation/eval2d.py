"""2D tracking metrics (HOTA, DetA, AssA, MOTA, IDF1, IDSW) computed with the PyPI `trackeval`
package, against MOTChallenge boxes (IoU similarity) or point targets (centroid distance)."""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field

import numpy as np

from ..errors import Tracker3DError
from ..track2d.tracker import iou_matrix


def _trackeval():
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints about optional datasets on import
            from trackeval.metrics import CLEAR, HOTA, Identity
    except ImportError:
        raise Tracker3DError("2D evaluation needs the trackeval package: pip install --no-deps trackeval "
                             "(make install does this)") from None
    return HOTA, CLEAR, Identity


@dataclass
class FrameObjects:
    """Objects in one frame: ids (N,), and boxes (N,4 xyxy) or points (N,2) in pixels."""

    ids: np.ndarray
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))


def similarity(gt: FrameObjects, tr: FrameObjects, kind: str, dist_px: float) -> np.ndarray:
    """(n_gt, n_tr) similarity: IoU of boxes, or max(0, 1 - d / dist_px) for centroids."""
    if kind == "iou":
        return iou_matrix(gt.boxes, tr.boxes)
    d = np.linalg.norm(gt.points[:, None, :] - tr.points[None, :, :], axis=2) if len(gt.ids) and len(tr.ids) \
        else np.zeros((len(gt.ids), len(tr.ids)))
    return np.clip(1.0 - d / dist_px, 0.0, 1.0)


def evaluate_2d(gt: dict[int, FrameObjects], tracks: dict[int, FrameObjects], frames: list[int] | None = None,
                kind: str = "centroid", dist_px: float = 10.0) -> dict[str, float]:
    """Metrics over `frames` (default: every frame in either input). kind 'iou' or 'centroid'
    (similarity 1 - d/dist_px, so CLEAR and Identity match within dist_px/2 pixels)."""
    HOTA, CLEAR, Identity = _trackeval()
    frames = sorted(set(gt) | set(tracks)) if frames is None else list(frames)
    empty = FrameObjects(np.zeros(0, int))
    gmap: dict[int, int] = {}
    tmap: dict[int, int] = {}
    data = {"gt_ids": [], "tracker_ids": [], "similarity_scores": []}
    n_gt = n_tr = 0
    for f in frames:
        g, t = gt.get(f, empty), tracks.get(f, empty)
        data["gt_ids"].append(np.array([gmap.setdefault(int(i), len(gmap)) for i in g.ids], dtype=int))
        data["tracker_ids"].append(np.array([tmap.setdefault(int(i), len(tmap)) for i in t.ids], dtype=int))
        data["similarity_scores"].append(similarity(g, t, kind, dist_px))
        n_gt += len(g.ids)
        n_tr += len(t.ids)
    data.update(num_timesteps=len(frames), num_gt_ids=len(gmap), num_tracker_ids=len(tmap), num_gt_dets=n_gt,
                num_tracker_dets=n_tr)
    quiet = {"PRINT_CONFIG": False}
    hota = HOTA(quiet).eval_sequence(data)
    clear = CLEAR({**quiet, "THRESHOLD": 0.5}).eval_sequence(data)
    ident = Identity({**quiet, "THRESHOLD": 0.5}).eval_sequence(data)
    return {
        "HOTA": float(np.mean(hota["HOTA"])), "DetA": float(np.mean(hota["DetA"])),
        "AssA": float(np.mean(hota["AssA"])), "MOTA": float(clear["MOTA"]), "IDF1": float(ident["IDF1"]),
        "IDSW": int(clear["IDSW"]), "FP": int(clear["CLR_FP"]), "FN": int(clear["CLR_FN"]),
        "MODA": float(clear["MODA"]), "MOTP": float(clear["MOTP"]), "precision": float(clear["CLR_Pr"]),
        "recall": float(clear["CLR_Re"]), "gt_dets": n_gt, "tracker_dets": n_tr, "gt_ids": len(gmap), "tracker_ids": len(tmap),
    }


def sim_gt_frames(gt_cols: dict[str, np.ndarray], camera: int) -> dict[int, FrameObjects]:
    """Per-frame ground truth of one camera from gt.csv columns: real objects whose centre that
    camera saw (vis=1). Distractors are not targets: a track on one counts as a false positive."""
    m = (gt_cols["kind"] == "object") & (gt_cols[f"vis{camera}"] == 1)
    out: dict[int, FrameObjects] = {}
    fr, ids = gt_cols["frame"][m], gt_cols["id"][m]
    pts = np.column_stack([gt_cols[f"u{camera}"][m], gt_cols[f"v{camera}"][m]])
    for f in np.unique(fr):
        k = fr == f
        out[int(f)] = FrameObjects(ids[k], points=pts[k])
    return out


def mot_frames(rows, use_points: bool = False) -> dict[int, FrameObjects]:
    """FrameObjects per 1-based frame from MotRows (boxes; box centres as points)."""
    out = {}
    for f, idx in rows.frames().items():
        b = rows.boxes[idx]
        xyxy = np.column_stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]])
        out[f] = FrameObjects(rows.id[idx], boxes=xyxy,
                              points=np.column_stack([b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2]))
    return out
