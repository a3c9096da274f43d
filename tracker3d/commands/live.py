"""`tracker3d live`: two cameras (or streams, or files paced in real time) -> 3D tracks on ZMQ."""
from __future__ import annotations

import argparse
import time

from calib import load_calibration
from streams import RecordingWriter, TrackPublisher, open_stereo
from streams.publisher import DEFAULT_ENDPOINT

from ..outputs.files import open_writer
from ..pipeline import StereoPipeline
from ..pipeline import run as run_pipeline
from ..progress import bar
from .common import (
    add_pipeline_args,
    add_view_arg,
    format_summary,
    pipeline_from_args,
    start_viewer,
)

HELP = "track two live cameras in 3D and publish the tracks on ZMQ"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("live", help=HELP, description=HELP + ". Ctrl-C stops and prints a summary.")
    p.add_argument("--cam0", required=True, help="SRC: camera index, URL, video file or image glob")
    p.add_argument("--cam1", required=True, help="SRC for camera 1")
    p.add_argument("--calib", required=True, help="stereo calibration file (.yaml/.xml/.json/.toml)")
    p.add_argument("--publish", default=DEFAULT_ENDPOINT, metavar="ENDPOINT", help="ZMQ endpoint to bind")
    p.add_argument("--allow-remote", action="store_true", help="allow binding to a non-loopback address")
    p.add_argument("--record", metavar="DIR", help="also record the pairs as a recording folder")
    p.add_argument("--out", help="also write the messages to this file: .jsonl, .csv or .mcap")
    p.add_argument("--seconds", type=float, help="stop after this many seconds")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate of file/folder sources")
    p.add_argument("--tolerance", type=float, help="max capture-time difference within a pair, seconds")
    add_pipeline_args(p)
    add_view_arg(p)
    p.add_argument("--curve-keys", metavar="DIR", help="encrypt the published tracks with CURVE and admit only "
                   "subscribers whose keys are in DIR/authorized (see tracker3d keys)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    calib = load_calibration(args.calib)
    src = open_stereo(args.cam0, args.cam1, tolerance=args.tolerance, realtime=True, fps=args.fps,
                      expected_size=(calib.cam0.image_size, calib.cam1.image_size))
    config, gate = pipeline_from_args(args)
    pipe = StereoPipeline(calib, config, gate=gate)
    pub = rec = out = None
    try:
        pub = TrackPublisher(args.publish, allow_remote=args.allow_remote, frame_id=pipe.frame_id,
                             curve_keys=args.curve_keys)
        rec = RecordingWriter(args.record, calib=calib, fps=args.fps,
                              meta={"source": "tracker3d live", "cam0": args.cam0, "cam1": args.cam1}) \
            if args.record else None
        out = open_writer(args.out, pipe.frame_id) if args.out else None
        if args.view:
            start_viewer(pub.endpoint, calib, args.curve_keys)
        print(f"tracking {args.cam0} + {args.cam1}; publishing on {pub.endpoint} (topic tracks3d); Ctrl-C stops")
        t_end = None if args.seconds is None else time.monotonic() + args.seconds
        stats = run_pipeline(src, pipe, publisher=pub, recorder=rec,
                             on_frame=(lambda f3: out.write(f3.index, f3.t, f3.tracks)) if out else None,
                             progress=bar("live", unit="pair"),
                             stop=(lambda: time.monotonic() >= t_end) if t_end else None)
    finally:
        src.close()
        pipe.close()
        for x in (pub, rec, out):
            if x is not None:
                x.close()
    print(format_summary(stats.summary(src.stats.as_dict(), pub)))
    return 0
