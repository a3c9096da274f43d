"""`tracker3d eval`: tracking accuracy against ground truth."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import Tracker3DError
from ..evaluation.eval2d import evaluate_2d, mot_frames
from ..evaluation.eval3d import format_3d
from ..evaluation.runs import evaluate_source, format_table
from ..evaluation.world import WILDTRACK_RADIUS_M, format_world, gt_kind
from ..track2d.mot import MotRows, read_mot
from .common import (
    add_detection_input_args,
    add_pipeline_args,
    open_input,
    pipeline_from_args,
)
from .paths import JSON_FILES, Output, check_outputs, input_files, write_json

HELP = "evaluate tracking against ground truth (a folder's gt.csv: sim or world; or MOTChallenge gt.txt)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help=HELP, description=HELP + ". On a sim recording: 3D metrics in camera 0's "
                       "frame (match within 0.3 m) and 2D metrics per camera, after the detector's warm-up. With a "
                       "world gt.csv (frame,t,id,x,y,z,vis0,vis1; e.g. a detections folder from WildTrack): ground-"
                       "plane (x, y) and 3D scores in the calibration's world frame within --radius, and per-view 2D "
                       "scores (IoU 0.5) when the folder has gt0.txt/gt1.txt.")
    p.add_argument("dir", nargs="?", help="recording or detections folder with gt.csv: runs the whole pipeline on it")
    p.add_argument("--calib", help="calibration file (default: the folder's calib.yaml / calib.toml)")
    p.add_argument("--gt-csv", metavar="CSV", help="ground truth gt.csv (default: DIR/gt.csv; needed with --det0/--det1)")
    p.add_argument("--radius", type=float, default=WILDTRACK_RADIUS_M,
                   help=f"world gt: match radius in metres (default {WILDTRACK_RADIUS_M}, WildTrack's)")
    p.add_argument("--gt-height", type=float, metavar="M", help="world gt, 3D score: the tracked point's height "
                   "above the annotated point, metres (default: the median measured on ground-plane matches)")
    p.add_argument("--visible", default="either", choices=["either", "both", "cam0", "cam1"],
                   help="world gt: which persons count, by the views that see them (default either)")
    add_detection_input_args(p)
    p.add_argument("--gt", help="MOTChallenge gt.txt (with --tracks)")
    p.add_argument("--tracks", help="tracker output in MOTChallenge format (with --gt)")
    p.add_argument("--centroid", type=float, metavar="PX",
                   help="match by centroid distance (similarity 1 - d/PX) instead of box IoU (with --gt)")
    p.add_argument("--offline", action="store_true",
                   help="score the offline 3D tracks (as replay --offline writes them): every reported track "
                   "RTS-smoothed over its whole life, its frames before confirmation included")
    add_pipeline_args(p)
    p.add_argument("--json", help="write the metrics here as JSON")
    p.set_defaults(func=run)


def format_result(res: dict) -> str:
    """The printed report of one evaluated run (sim or world ground truth)."""
    lines = []
    if res["gt"] == "sim":
        lines.append(format_3d("3D", res["3d"]))
    else:
        r = res["ground"]["radius_m"]
        d3 = res["3d"]
        lines.append(f"world frame: {res['frame_id']}; persons seen by {res['visible']} view(s); match within {r} m")
        lines.append(format_world("ground plane (x, y)", res["ground"]))
        lines.append(format_world(f"3D (x, y, z; ground truth raised {d3['gt_height_m']:.2f} m"
                                  f"{', measured' if d3['gt_height_auto'] else ''})", d3))
    views = {f"2D cam{c}": res[f"2d_cam{c}"] for c in (0, 1) if f"2d_cam{c}" in res}
    if views:
        lines.append(format_table(views))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    check_outputs([Output("--json", args.json, JSON_FILES)], input_files(args))
    if args.gt or args.tracks:
        if not (args.gt and args.tracks):
            raise Tracker3DError("--gt and --tracks go together")
        gt, tr = read_mot(args.gt), read_mot(args.tracks)
        keep = (gt.conf != 0) & ((gt.cls == -1) | (gt.cls == 1))
        gt = MotRows(gt.frame[keep], gt.id[keep], gt.boxes[keep], gt.conf[keep], gt.cls[keep])
        kind = "centroid" if args.centroid else "iou"
        res = {"2d": evaluate_2d(mot_frames(gt), mot_frames(tr), kind=kind, dist_px=args.centroid or 10.0)}
        print(format_table({"tracks": res["2d"]}))
    elif args.dir or args.det0 or args.det1:
        gt_path = Path(args.gt_csv) if args.gt_csv else (Path(args.dir) / "gt.csv" if args.dir else None)
        if gt_path is None:
            raise Tracker3DError("detection files: give the ground truth with --gt-csv gt.csv")
        if not gt_path.is_file():
            raise Tracker3DError(f"{gt_path}: ground truth file not found (eval scores tracks against ground truth, "
                                 "e.g. a sim recording's gt.csv or --gt-csv FILE; to see your own cameras' tracks "
                                 "use replay --out/--plot/--overlay or view)")
        gt_kind(gt_path)  # a wrong or missing gt.csv fails before the run
        src, calib = open_input(args)
        views = [Path(args.dir) / f"gt{c}.txt" if args.dir else None for c in (0, 1)]
        config, gate = pipeline_from_args(args)
        res = evaluate_source(src, calib, gt_path, config, gate, radius=args.radius, gt_height=args.gt_height,
                              visible=args.visible, view_gt=[v if v is not None and v.is_file() else None
                                                             for v in views], offline=args.offline)
        print(format_result(res))
        r = res["run"]
        print(f"{r['processed']} pairs, {r['pairs_per_s']:.0f} pairs/s; latency median "
              f"{r.get('latency_ms_median', float('nan')):.1f} ms, p99 {r.get('latency_ms_p99', float('nan')):.1f} ms")
    else:
        raise Tracker3DError("give a recording DIR (or a detections folder), --det0/--det1/--calib with "
                             "--gt-csv, or --gt gt.txt --tracks tracks.txt")
    if args.json:
        res.get("3d", {}).pop("false_list", None)
        write_json(args.json, res, default=float)
    return 0
