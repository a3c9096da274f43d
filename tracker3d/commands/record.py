"""`tracker3d record`: record two sources into a recording folder."""
from __future__ import annotations

import argparse
import time

from calib import load_calibration
from streams import RecordingWriter, open_stereo

from ..progress import progress

HELP = "record two cameras (or files) as a stereo recording folder"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("record", help=HELP, description=HELP)
    p.add_argument("--cam0", required=True, help="SRC: camera index, video file, URL or image glob")
    p.add_argument("--cam1", required=True, help="SRC for camera 1")
    p.add_argument("--out", required=True, help="output folder (must be new or empty)")
    p.add_argument("--calib", help="calibration file to store with the recording (sizes are checked)")
    p.add_argument("--seconds", type=float, help="stop after this many seconds (default: until Ctrl-C or end)")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate written into the videos")
    p.add_argument("--tolerance", type=float, help="max capture-time difference of a pair, seconds")
    p.add_argument("--codec", default="MJPEG", choices=["MJPEG", "MJPG", "FFV1", "HFYU"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    calib = load_calibration(args.calib) if args.calib else None
    size = (calib.cam0.image_size, calib.cam1.image_size) if calib else None
    src = open_stereo(args.cam0, args.cam1, tolerance=args.tolerance, fps=args.fps, expected_size=size)
    n = 0
    t_start = time.monotonic()
    try:
        with RecordingWriter(args.out, calib=calib, fps=args.fps, codec=args.codec,
                             meta={"source": "tracker3d record", "cam0": args.cam0, "cam1": args.cam1}) as rec:
            bar = progress(iter(int, 1), "recording", unit="pair")
            for _ in bar:
                if args.seconds is not None and time.monotonic() - t_start >= args.seconds:
                    break
                pair = src.read(timeout=1.0)
                if pair is None:
                    if src.live:
                        continue
                    break
                rec.write(pair)
                n += 1
    except KeyboardInterrupt:
        pass
    finally:
        src.close()
    st = src.stats.as_dict()
    print(f"wrote {args.out}: {n} pairs; dropped cam0 {st['dropped0']}, cam1 {st['dropped1']}; "
          f"skew median {st['skew_ms_median']:.2f} ms, max {st['skew_ms_max']:.2f} ms")
    return 0
