"""`tracker3d eval`: tracking accuracy against ground truth."""
from __future__ import annotations

import argparse
import json

from ..errors import Tracker3DError
from ..evaluate import evaluate_recording_2d, format_table
from ..eval2d import evaluate_2d, mot_frames
from ..mot import read_mot

HELP = "evaluate tracking against ground truth (a sim recording's gt.csv, or MOTChallenge gt.txt)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help=HELP, description=HELP)
    p.add_argument("dir", nargs="?", help="recording folder with gt.csv: runs detection and 2D tracking per camera")
    p.add_argument("--gt", help="MOTChallenge gt.txt (with --tracks)")
    p.add_argument("--tracks", help="tracker output in MOTChallenge format (with --gt)")
    p.add_argument("--centroid", type=float, metavar="PX",
                   help="match by centroid distance (similarity 1 - d/PX) instead of box IoU (with --gt)")
    p.add_argument("--detector", default="bg", help="detector for DIR: bg | knn | marker | onnx:MODEL")
    p.add_argument("--min-hits", type=int, default=3)
    p.add_argument("--json", help="write the metrics here as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.gt or args.tracks:
        if not (args.gt and args.tracks):
            raise Tracker3DError("--gt and --tracks go together")
        gt, tr = read_mot(args.gt), read_mot(args.tracks)
        keep = (gt.conf != 0) & ((gt.cls == -1) | (gt.cls == 1))
        from ..mot import MotRows
        gt = MotRows(gt.frame[keep], gt.id[keep], gt.boxes[keep], gt.conf[keep], gt.cls[keep])
        kind = "centroid" if args.centroid else "iou"
        res = {"2d": evaluate_2d(mot_frames(gt), mot_frames(tr), kind=kind, dist_px=args.centroid or 10.0)}
        print(format_table({"tracks": res["2d"]}))
    elif args.dir:
        res = {"2d": evaluate_recording_2d(args.dir, detector=args.detector, min_hits=args.min_hits)}
        print(format_table(res["2d"]))
    else:
        raise Tracker3DError("give a recording DIR, or --gt gt.txt --tracks tracks.txt")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=2)
    return 0
