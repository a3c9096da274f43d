"""3D tracking accuracy against a sim's ground truth: MOTA/IDF1/HOTA (trackeval, Euclidean
distance), ID switches, position RMSE against the triangulation bound, false 3D tracks, and
time from an object's appearance in both views to its first 3D track."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from calib import StereoCalibration, triangulate

from .eval2d import _trackeval

MATCH_M = 0.3  # a 3D track within 0.3 m of an object matches it (CLEAR and Identity) ...
MATCH_SIGMAS = 3.0  # ... or within 3 sigma of the triangulation error at that object, if larger
MATCH_PIXEL_SIGMA = 0.25  # the 2D noise (px) that sigma is computed for


@dataclass
class FrameTracks:
    """Reported 3D tracks of one frame: ids (n,), xyz (n,3) camera 0 frame; raw (n,3) triangulated
    (NaN where the frame had no stereo measurement); smooth (n,3) RTS-smoothed, if any."""

    ids: np.ndarray
    xyz: np.ndarray
    raw: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    smooth: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    uv0: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # pixels behind each track (NaN if none)
    uv1: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))


def _gt_by_frame(gt: dict[str, np.ndarray]):
    """Objects visible in both views per frame -> (ids, xyz, uv0, uv1); distractor xyz per frame."""
    objs, distr = {}, {}
    both = (gt["kind"] == "object") & (gt["vis0"] == 1) & (gt["vis1"] == 1)
    xyz = np.column_stack([gt["x"], gt["y"], gt["z"]])
    for f in np.unique(gt["frame"]):
        m = gt["frame"] == f
        k = m & both
        objs[int(f)] = (gt["id"][k], xyz[k], np.column_stack([gt["u0"][k], gt["v0"][k]]),
                        np.column_stack([gt["u1"][k], gt["v1"][k]]))
        dk = m & (gt["kind"] != "object") & np.isfinite(gt["x"])
        distr[int(f)] = (gt["kind"][dk], xyz[dk])
    return objs, distr


def match_radius(calib: StereoCalibration, xyz: np.ndarray, match_m: float = MATCH_M) -> np.ndarray:
    """Per object position: max(match_m, 3 sigma of its triangulation error at 0.25 px noise).
    Depth error grows with distance squared, so a fixed radius would count the geometric limit of
    far objects as tracking errors."""
    if len(xyz) == 0:
        return np.zeros(0)
    uv0, uv1 = calib.project(xyz)
    tri = triangulate(calib, uv0, uv1, pixel_sigma=MATCH_PIXEL_SIGMA)
    sig = np.sqrt(np.trace(tri.cov, axis1=1, axis2=2))
    return np.maximum(match_m, MATCH_SIGMAS * np.nan_to_num(sig, nan=0.0))


def evaluate_3d(frames: dict[int, FrameTracks], gt: dict[str, np.ndarray], calib: StereoCalibration, fps: float,
                match_m: float = MATCH_M, pixel_sigma: float | None = None, skip_s: float = 0.0) -> dict:
    """Metrics over the frames the tracker processed, from skip_s seconds on (the detector's
    background warm-up, during which nothing can be tracked). pixel_sigma: the 2D centroid noise
    for the triangulation bound (None: measured from the reported tracks' pixels against the
    ground truth)."""
    HOTA, CLEAR, Identity = _trackeval()
    objs, distr = _gt_by_frame(gt)
    first = int(round(skip_s * fps))
    order = sorted(f for f in frames if f >= first)
    gmap, tmap = {}, {}
    data = {"gt_ids": [], "tracker_ids": [], "similarity_scores": []}
    n_gt = n_tr = 0
    err_f, err_raw, err_s, err_all = [], [], [], []
    bound_terms = []  # per matched stereo measurement: trace(cov at 1 px) x its mean squared pixel error
    track_frames: dict[int, list[tuple[int, bool, str]]] = {}
    first_seen: dict[int, int] = {}
    first_tracked: dict[int, int] = {}
    empty = (np.zeros(0, int), np.zeros((0, 3)), np.zeros((0, 2)), np.zeros((0, 2)))
    for f in order:
        gid, gxyz, guv0, guv1 = objs.get(f, empty)
        ft = frames[f]
        for g in gid:
            first_seen.setdefault(int(g), f)
        d = np.linalg.norm(gxyz[:, None, :] - ft.xyz[None, :, :], axis=2) if len(gid) and len(ft.ids) else \
            np.zeros((len(gid), len(ft.ids)))
        radius = match_radius(calib, gxyz, match_m)
        data["gt_ids"].append(np.array([gmap.setdefault(int(i), len(gmap)) for i in gid], int))
        data["tracker_ids"].append(np.array([tmap.setdefault(int(i), len(tmap)) for i in ft.ids], int))
        data["similarity_scores"].append(np.clip(1.0 - d / (2 * radius[:, None]), 0.0, 1.0))
        n_gt += len(gid)
        n_tr += len(ft.ids)
        matched_tr = set()
        if d.size:
            r, c = linear_sum_assignment(d)
            for i, j in zip(r, c):
                if d[i, j] < radius[i]:
                    matched_tr.add(j)
                    first_tracked.setdefault(int(gid[i]), f)
                    err_all.append(ft.xyz[j] - gxyz[i])
                    if len(ft.raw) and np.all(np.isfinite(ft.raw[j])):
                        # Filtered, raw and smoothed errors on the same frames: those with a stereo
                        # measurement (coasting frames are in rmse_all_m).
                        err_f.append(ft.xyz[j] - gxyz[i])
                        err_raw.append(ft.raw[j] - gxyz[i])
                        if len(ft.uv0) and np.all(np.isfinite(ft.uv0[j])) and np.all(np.isfinite(ft.uv1[j])):
                            e0, e1 = ft.uv0[j] - guv0[i], ft.uv1[j] - guv1[i]
                            # Only the part of the 2D error that differs between the views moves a
                            # triangulated point off the object (a shared bias shifts both rays alike),
                            # so the per-axis noise is estimated from e0 - e1: var = 2 sigma^2.
                            bound_terms.append((gxyz[i], float(np.mean((e0 - e1) ** 2) / 2)))
                        if len(ft.smooth) and np.all(np.isfinite(ft.smooth[j])):
                            err_s.append(ft.smooth[j] - gxyz[i])
        kinds, dxyz = distr.get(f, (np.zeros(0, str), np.zeros((0, 3))))
        for j, tid in enumerate(ft.ids):
            kind = ""
            if j not in matched_tr and len(dxyz):
                dd = np.linalg.norm(dxyz - ft.xyz[j], axis=1)
                if dd.min() < match_m:
                    kind = str(kinds[int(np.argmin(dd))])
            track_frames.setdefault(int(tid), []).append((f, j in matched_tr, kind))
    data.update(num_timesteps=len(order), num_gt_ids=len(gmap), num_tracker_ids=len(tmap), num_gt_dets=n_gt,
                num_tracker_dets=n_tr)
    quiet = {"PRINT_CONFIG": False}
    clear = CLEAR({**quiet, "THRESHOLD": 0.5}).eval_sequence(data)
    ident = Identity({**quiet, "THRESHOLD": 0.5}).eval_sequence(data)
    hota = HOTA(quiet).eval_sequence(data)
    # False 3D tracks: matched to a real object in under half of their reported frames.
    false_tracks, false_s, by_kind = 0, 0.0, {}
    false_list = []
    for tid, rows in track_frames.items():
        if sum(m for _, m, _ in rows) < 0.5 * len(rows):
            false_list.append((tid, rows[0][0], len(rows), sum(m for _, m, _ in rows)))
            false_tracks += 1
            false_s += len(rows) / fps
            kinds = [k for _, _, k in rows if k]
            k = max(set(kinds), key=kinds.count) if kinds else "other"
            by_kind[k] = by_kind.get(k, 0) + 1
    delays = [(first_tracked[g] - first_seen[g]) / fps for g in first_tracked]
    never = sum(1 for g in first_seen if g not in first_tracked)
    rmse = lambda e: float(np.sqrt(np.mean(np.sum(np.square(e), axis=1)))) if len(e) else float("nan")
    # The bound: first-order triangulation error at the very positions where raw errors were
    # measured, for the 2D centroid noise the detector had there (or pixel_sigma if given).
    bound, sigma = float("nan"), float("nan")
    if bound_terms:
        pts = np.array([b[0] for b in bound_terms])
        s2 = np.array([b[1] for b in bound_terms]) if pixel_sigma is None else np.full(len(pts), pixel_sigma ** 2)
        uv0, uv1 = calib.project(pts)
        tri = triangulate(calib, uv0, uv1, pixel_sigma=1.0)
        ok = tri.valid
        c1 = np.trace(tri.cov[ok], axis1=1, axis2=2)
        bound = float(np.sqrt(np.mean(c1 * s2[ok])))
        sigma = float(np.sqrt(np.mean(s2)))
    return {
        "MOTA": float(clear["MOTA"]), "IDF1": float(ident["IDF1"]), "HOTA": float(np.mean(hota["HOTA"])),
        "IDSW": int(clear["IDSW"]), "FP": int(clear["CLR_FP"]), "FN": int(clear["CLR_FN"]),
        "rmse_m": rmse(err_f), "rmse_raw_m": rmse(err_raw), "rmse_smooth_m": rmse(err_s), "rmse_all_m": rmse(err_all),
        "bound_m": bound, "pixel_sigma": sigma,
        "false_tracks": false_tracks, "false_track_s": round(false_s, 3), "false_by_kind": by_kind,
        "false_list": false_list,
        "time_to_track_s_median": float(np.median(delays)) if delays else float("nan"),
        "time_to_track_s_p90": float(np.percentile(delays, 90)) if delays else float("nan"),
        "delays": [float(d) for d in delays],
        "objects": len(first_seen), "objects_never_tracked": never, "match_m": match_m, "skip_s": skip_s,
        "frames": len(order), "gt_dets": n_gt, "tracker_dets": n_tr,
    }


# What each kind of false 3D track was near (the sim's ground-truth `kind` column).
FALSE_KINDS = {
    "flash": "on a brief light flash seen by both cameras",
    "clutter": "on a blinking clutter spot",
    "noise": "on a moving noise spot",
    "other": "near no simulated thing: two cameras' 2D tracks of different things paired into a ghost, "
             "or a short duplicate of a real object's track",
}


def describe_false_kinds(by_kind: dict) -> str:
    """`false_by_kind` in words: "2 other (near no simulated thing: ...)"; "" when there are none."""
    return "; ".join(f"{n} {k} ({FALSE_KINDS.get(k, 'a ground-truth ' + k)})" for k, n in sorted(by_kind.items()))


def _or_none(v: float, scale: float, fmt: str, why: str) -> str:
    """v * scale formatted, or "none (why)" where there was nothing to measure (never a bare nan)."""
    v = float(v)
    return format(v * scale, fmt) if np.isfinite(v) else f"none ({why})"


def format_3d(name: str, m: dict) -> str:
    nomatch, nosmooth, notrack = "no 3D track matched an object", "not smoothed", "no object tracked"
    if not m["objects"]:  # MOTA/IDF1 0.000 would read as a failed run
        return (f"{name}: scored nothing: no ground-truth object in the frames scored (after the detector's "
                f"warm-up); false tracks {m['false_tracks']}")
    if np.isfinite(float(m["rmse_m"])):
        rmse = (f"RMSE {m['rmse_m'] * 100:.1f} cm (raw {_or_none(m['rmse_raw_m'], 100, '.1f', nomatch)}, smoothed "
                f"{_or_none(m['rmse_smooth_m'], 100, '.1f', nosmooth)}, bound {_or_none(m['bound_m'], 100, '.1f', nomatch)} "
                f"cm for {_or_none(m['pixel_sigma'], 1, '.2f', nomatch)} px rms)")
    else:
        rmse = f"RMSE none ({nomatch})"
    return (f"{name}: MOTA {m['MOTA']:.3f}  IDF1 {m['IDF1']:.3f}  HOTA {m['HOTA']:.3f}  IDSW {m['IDSW']}  "
            f"{rmse}  "
            f"false tracks {m['false_tracks']} ({m['false_track_s']:.1f} track-s"
            f"{'; ' + describe_false_kinds(m['false_by_kind']) if m['false_by_kind'] else ''})  "
            f"time-to-track median {_or_none(m['time_to_track_s_median'], 1000, '.0f', notrack)} ms, "
            f"p90 {_or_none(m['time_to_track_s_p90'], 1000, '.0f', notrack)} ms  (objects {m['objects']}, never tracked "
            f"{m['objects_never_tracked']})")
