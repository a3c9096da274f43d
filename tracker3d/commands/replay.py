"""`tracker3d replay`: read a recording back (lossless), at full or recorded speed."""
from __future__ import annotations

import argparse
import time

from streams import RecordingReader

from ..progress import progress

HELP = "replay a recording folder"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help=HELP, description=HELP)
    p.add_argument("dir", help="recording folder (frames.csv, cam0.*, cam1.*, calib.yaml)")
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--fast", action="store_true", help="as fast as possible (default)")
    speed.add_argument("--realtime", action="store_true", help="at the recorded speed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rec = RecordingReader(args.dir, realtime=args.realtime)
    t = time.perf_counter()
    n = 0
    with rec:
        for _ in progress(rec, "replay", total=len(rec), unit="pair"):
            n += 1
    dt = max(time.perf_counter() - t, 1e-9)
    extra = f"; {rec.truncated} listed pairs missing from the videos" if rec.truncated else ""
    print(f"{args.dir}: {n} pairs in {dt:.2f}s ({n / dt:.0f} pairs/s){extra}")
    return 0
