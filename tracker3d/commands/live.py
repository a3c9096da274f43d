"""`tracker3d live`: two cameras (or streams, or files paced in real time) -> 3D tracks on ZMQ."""
from __future__ import annotations

import argparse
import time

from calib import load_calibration
from streams import RecordingWriter, open_stereo
from streams.detstream import DetectionStream
from streams.publisher import DEFAULT_ENDPOINT

from ..errors import Tracker3DError
from ..outputs.files import open_writer
from ..pipeline import StereoPipeline
from ..pipeline import run as run_pipeline
from ..progress import bar
from .common import (
    StopOnWriteError,
    add_pipeline_args,
    add_view_arg,
    check_fps,
    check_pipeline_args,
    check_seconds,
    finish_viewer,
    format_summary,
    open_publisher,
    pipeline_from_args,
    require_display,
    run_summary,
    start_viewer,
)
from .paths import TRACK_FILES, Output, check_outputs, source_files
from .signals import STOP

HELP = "track two live cameras (or a live detections stream) in 3D and publish the tracks on ZMQ"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("live", help=HELP, description=HELP + ". Ctrl-C stops and prints a summary.")
    p.add_argument("--cam0", help="SRC: camera index, URL, video file or image glob")
    p.add_argument("--cam1", help="SRC for camera 1")
    p.add_argument("--det-source", action="append", metavar="ENDPOINT",
                   help="instead of cameras: subscribe to detections2d messages (schema tracker3d/detections2d@1, "
                   "topic detections2d) that your detector publishes here, e.g. tcp://127.0.0.1:5557; repeat for "
                   "one endpoint per camera. The two cameras' messages are paired by capture time (--tolerance)")
    p.add_argument("--calib", required=True, help="stereo calibration file (.yaml/.xml/.json/.toml)")
    p.add_argument("--publish", default=DEFAULT_ENDPOINT, metavar="ENDPOINT", help="ZMQ endpoint to bind")
    p.add_argument("--allow-remote", action="store_true", help="allow binding to a non-loopback address")
    p.add_argument("--no-publish", action="store_true", help="do not open a ZMQ socket (e.g. with --out or --record, "
                   "or to run two lives at once)")
    p.add_argument("--record", metavar="DIR", help="also record the pairs as a recording folder")
    p.add_argument("--out", help="also write the messages to this file: .jsonl, .csv or .mcap")
    p.add_argument("--seconds", type=float, help="stop after this many seconds")
    p.add_argument("--fps", type=float, help="frame rate of video files and image folders (default: a tracker3d "
                   "recording's own frames.csv times, else the video's rate, else 30); cameras: written to --record")
    p.add_argument("--tolerance", type=float, help="max capture-time difference within a pair, seconds "
                   "(--det-source default 0.010)")
    add_pipeline_args(p)
    add_view_arg(p)
    p.add_argument("--curve-keys", metavar="DIR", help="encrypt the published tracks with CURVE and admit only "
                   "subscribers whose keys are in DIR/authorized (see tracker3d keys)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.det_source:
        if args.cam0 or args.cam1:
            raise Tracker3DError("give --cam0/--cam1 or --det-source, not both")
        if args.record:
            raise Tracker3DError("--record saves camera images: a detections stream has none (use --out)")
    elif not (args.cam0 and args.cam1):
        raise Tracker3DError("give --cam0 SRC and --cam1 SRC (two cameras), or --det-source ENDPOINT (detections)")
    check_outputs([Output("--out", args.out, TRACK_FILES), Output("--record", args.record, folder=True)],
                  [args.calib, args.weights, *source_files(args.cam0), *source_files(args.cam1)])
    if args.view and args.no_publish:
        raise Tracker3DError("--view needs the published tracks: drop --no-publish")
    if args.view:
        require_display()
    check_pipeline_args(args)
    check_fps(args.fps)
    check_seconds(args.seconds)
    calib = load_calibration(args.calib)
    # The socket first: a taken port is said at once, before cameras open and the gate loads.
    pub = open_publisher(args)
    src = pipe = rec = out = viewer = None
    try:
        # The gate loads before the sources open: files are paced from their first frame on.
        config, gate = pipeline_from_args(args)
        pipe = StereoPipeline(calib, config, gate=gate)
        if pub is not None:
            pub.frame_id = pipe.frame_id
        if args.det_source:
            src = DetectionStream(args.det_source, tolerance=0.010 if args.tolerance is None else args.tolerance)
            what = "detections from " + ", ".join(args.det_source)
        else:
            src = open_stereo(args.cam0, args.cam1, tolerance=args.tolerance, realtime=True, fps=args.fps,
                              expected_size=(calib.cam0.image_size, calib.cam1.image_size))
            what = f"{args.cam0} + {args.cam1}"
            if hasattr(src, "rate_note"):
                print(src.rate_note())
        rec = StopOnWriteError("--record", RecordingWriter(
            args.record, calib=calib, fps=args.fps or getattr(src, "fps", 30.0),
            meta={"source": "tracker3d live", "cam0": args.cam0, "cam1": args.cam1})) if args.record else None
        out = StopOnWriteError("--out", open_writer(args.out, pipe.frame_id)) if args.out else None
        if args.view:
            viewer = start_viewer(pub.endpoint, calib, args.curve_keys)
        print(f"tracking {what}; " + ("not publishing (--no-publish)" if pub is None else
                                       f"publishing on {pub.endpoint} (topic tracks3d)") + "; Ctrl-C stops")
        t_end = None if args.seconds is None else time.monotonic() + args.seconds
        with STOP.soft():
            stats = run_pipeline(src, pipe, publisher=pub, recorder=rec,
                                 on_frame=(lambda f3: out.write(f3.index, f3.t, f3.tracks, f3.latency_ms))
                                 if out else None,
                                 progress=bar("live", unit="pair"),
                                 stop=lambda: STOP.requested() or (t_end is not None and time.monotonic() >= t_end))
    finally:
        for x in (src, pipe, pub, rec, out):
            if x is not None:
                x.close()
    print(format_summary(run_summary(stats, src.stats.as_dict(), pub, pipe)))
    failed = [x for x in (rec, out) if x is not None and x.error]
    for x in (rec, out):
        if x is not None:
            print(x.report())
    finish_viewer(viewer)
    return 1 if failed else 0
