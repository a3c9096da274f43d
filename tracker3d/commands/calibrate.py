"""`tracker3d calibrate`: stereo calibration from board image pairs."""
from __future__ import annotations

import argparse
import json

from calib import Board, calibrate_stereo, save_calibration
from calib.calibrate import expand_glob
from calib.io import check_writable_suffix

from ..progress import progress
from .paths import CALIB_FILES, JSON_FILES, Output, check_outputs

HELP = "calibrate a stereo rig from chessboard or ChArUco image pairs"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help=HELP, description=HELP)
    p.add_argument("--left", required=True, help="glob of camera 0 images, e.g. 'calib/left*.jpg'")
    p.add_argument("--right", required=True, help="glob of camera 1 images (same order as --left)")
    p.add_argument("--board", required=True, help="COLSxROWS: inner corners (chessboard) or squares (charuco)")
    p.add_argument("--square", type=float, required=True, help="square size; T comes out in this unit (metres)")
    p.add_argument("--board-type", choices=["chessboard", "charuco"], default="chessboard")
    p.add_argument("--marker", type=float, default=0.0, help="ChArUco marker size (default 0.7 x square)")
    p.add_argument("--dictionary", default="DICT_5X5_100", help="ChArUco ArUco dictionary name")
    p.add_argument("--fix-intrinsics", action="store_true",
                   help="keep each camera's own intrinsics in the stereo step")
    p.add_argument("--out", required=True, help="output calibration file (.yaml/.xml/.json)")
    p.add_argument("--report", help="also write the report as JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_writable_suffix(args.out)  # before minutes of board detection
    board = Board.parse(args.board, args.square, args.board_type, args.marker, args.dictionary)
    left = expand_glob(args.left, "--left")
    right = expand_glob(args.right, "--right")
    check_outputs([Output("--out", args.out, CALIB_FILES), Output("--report", args.report, JSON_FILES)],
                  [*left, *right])
    calib, report = calibrate_stereo(
        left, right, board, fix_intrinsics=args.fix_intrinsics,
        progress=lambda it: progress(it, "detecting boards", unit="pair"))
    save_calibration(calib, args.out)
    print(report.format())
    print(f"wrote {args.out}")
    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            json.dump(report.to_dict(), f, indent=2)
    return 0
