"""`tracker3d record`: record two sources into a recording folder."""
from __future__ import annotations

import argparse
import math
import sys
import time

from calib import load_calibration
from streams import RecordingWriter, open_stereo
from streams.errors import OutputError

from ..progress import progress
from .common import check_fps, check_seconds
from .paths import Output, check_outputs, source_files
from .signals import STOP

HELP = "record two cameras (or files) as a stereo recording folder"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("record", help=HELP, description=HELP)
    p.add_argument("--cam0", required=True, help="SRC: camera index, video file, URL or image glob")
    p.add_argument("--cam1", required=True, help="SRC for camera 1")
    p.add_argument("--out", required=True, help="output folder (must be new or empty)")
    p.add_argument("--calib", help="calibration file to store with the recording (sizes are checked)")
    p.add_argument("--seconds", type=float, help="stop after this many seconds (default: until Ctrl-C or end)")
    p.add_argument("--fps", type=float, help="frame rate of video files and image folders, and written into the "
                   "recording (default: a tracker3d recording's own frames.csv times, else the video's rate, else 30)")
    p.add_argument("--tolerance", type=float, help="max capture-time difference of a pair, seconds")
    p.add_argument("--codec", default="MJPEG", choices=["MJPEG", "MJPG", "FFV1", "HFYU"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_outputs([Output("--out", args.out, folder=True)],
                  [args.calib, *source_files(args.cam0), *source_files(args.cam1)])
    check_fps(args.fps)
    check_seconds(args.seconds)
    calib = load_calibration(args.calib) if args.calib else None
    if calib is None:
        print(f"tracker3d record: warning: no --calib: {args.out} will have no calib.yaml, and replay refuses it; "
              f"copy your calibration to {args.out}/calib.yaml later (tracker3d calibrate makes one), or pass replay --calib FILE",
              file=sys.stderr)
    size = (calib.cam0.image_size, calib.cam1.image_size) if calib else None
    src = open_stereo(args.cam0, args.cam1, tolerance=args.tolerance, fps=args.fps, expected_size=size)
    if hasattr(src, "rate_note"):
        print(src.rate_note())
    t_start = time.monotonic()
    t_first = None  # files: --seconds counts their frame time (they are read as fast as they decode)
    rec = None
    try:
        rec = RecordingWriter(args.out, calib=calib, fps=args.fps or getattr(src, "fps", 30.0), codec=args.codec,
                              meta={"source": "tracker3d record", "cam0": args.cam0, "cam1": args.cam1})
        with STOP.soft():
            for _ in progress(iter(int, 1), "recording", unit="pair"):
                if STOP.requested() or (args.seconds is not None and src.live
                                        and time.monotonic() - t_start >= args.seconds):
                    break
                pair = src.read(timeout=1.0)
                if pair is None:
                    if src.live:
                        continue
                    break
                if args.seconds is not None and not src.live:
                    t = pair.t0 if math.isfinite(pair.t0) else pair.t1
                    t_first = t if t_first is None else t_first
                    if t - t_first >= args.seconds - 1e-9:
                        break
                rec.write(pair)
    except OutputError:
        pass  # rec.error says why; reported below with the readable count
    finally:
        src.close()
        if rec is not None:
            rec.close()
    if rec.error is not None:
        print(f"tracker3d record: error: {args.out}: recording stopped: {rec.error.strerror or rec.error}; "
              f"{rec.readable} of {rec.count} pairs readable", file=sys.stderr)
    st = src.stats.as_dict()
    print(f"{'wrote' if rec.error is None else 'STOPPED early:'} {args.out}: {rec.readable} readable pairs; "
          f"dropped cam0 {st['dropped0']}, cam1 {st['dropped1']}; skew median {st['skew_ms_median']:.2f} ms, max {st['skew_ms_max']:.2f} ms")
    return 1 if rec.error is not None else 0
