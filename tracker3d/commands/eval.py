"""`tracker3d eval`: tracking accuracy against ground truth."""
from __future__ import annotations

import argparse
import json

from streams.recording import recording_files

from ..errors import Tracker3DError
from ..evaluation.eval2d import evaluate_2d, mot_frames
from ..evaluation.eval3d import format_3d
from ..evaluation.runs import evaluate_recording, format_table
from ..track2d.mot import MotRows, read_mot
from .common import add_pipeline_args, pipeline_from_args
from .paths import JSON_FILES, Output, check_outputs

HELP = "evaluate tracking against ground truth (a sim recording's gt.csv, or MOTChallenge gt.txt)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help=HELP, description=HELP + ". On a recording: 3D metrics (match within "
                       "0.3 m) and 2D metrics per camera, after the detector's warm-up.")
    p.add_argument("dir", nargs="?", help="recording folder with gt.csv: runs the whole pipeline on it")
    p.add_argument("--gt", help="MOTChallenge gt.txt (with --tracks)")
    p.add_argument("--tracks", help="tracker output in MOTChallenge format (with --gt)")
    p.add_argument("--centroid", type=float, metavar="PX",
                   help="match by centroid distance (similarity 1 - d/PX) instead of box IoU (with --gt)")
    add_pipeline_args(p)
    p.add_argument("--json", help="write the metrics here as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_outputs([Output("--json", args.json, JSON_FILES)],
                  [*(recording_files(args.dir) if args.dir else []), args.gt, args.tracks, args.weights])
    if args.gt or args.tracks:
        if not (args.gt and args.tracks):
            raise Tracker3DError("--gt and --tracks go together")
        gt, tr = read_mot(args.gt), read_mot(args.tracks)
        keep = (gt.conf != 0) & ((gt.cls == -1) | (gt.cls == 1))
        gt = MotRows(gt.frame[keep], gt.id[keep], gt.boxes[keep], gt.conf[keep], gt.cls[keep])
        kind = "centroid" if args.centroid else "iou"
        res = {"2d": evaluate_2d(mot_frames(gt), mot_frames(tr), kind=kind, dist_px=args.centroid or 10.0)}
        print(format_table({"tracks": res["2d"]}))
    elif args.dir:
        config, gate = pipeline_from_args(args)
        res = evaluate_recording(args.dir, config, gate)
        print(format_3d("3D", res["3d"]))
        print(format_table({"2D cam0": res["2d_cam0"], "2D cam1": res["2d_cam1"]}))
        r = res["run"]
        print(f"{r['processed']} pairs, {r['pairs_per_s']:.0f} pairs/s; latency median "
              f"{r.get('latency_ms_median', float('nan')):.1f} ms, p99 {r.get('latency_ms_p99', float('nan')):.1f} ms")
    else:
        raise Tracker3DError("give a recording DIR, or --gt gt.txt --tracks tracks.txt")
    if args.json:
        res.get("3d", {}).pop("false_list", None)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=2, default=float)
    return 0
