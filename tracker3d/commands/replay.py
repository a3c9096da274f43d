"""`tracker3d replay`: the stereo pipeline over a recording (lossless), at full or recorded speed."""
from __future__ import annotations

import argparse
import time

from calib import load_calibration
from streams import RecordingReader, TrackPublisher
from streams.publisher import DEFAULT_ENDPOINT

from ..outputs.files import open_writer
from ..outputs.overlay import OverlayWriter
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

HELP = "track a recording folder in 3D (lossless; --smooth for offline RTS smoothing)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help=HELP, description=HELP)
    p.add_argument("dir", help="recording folder (frames.csv, cam0.*, cam1.*, calib.yaml)")
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--fast", action="store_true", help="as fast as possible (default)")
    speed.add_argument("--realtime", action="store_true", help="at the recorded speed")
    p.add_argument("--calib", help="calibration file (default: the recording's calib.yaml)")
    p.add_argument("--smooth", action="store_true", help="RTS-smooth every 3D track (written to --out at the end)")
    p.add_argument("--out", help="write the tracks3d messages here: .jsonl (the ZMQ messages), .csv (one row "
                   "per track) or .mcap (Foxglove)")
    p.add_argument("--publish", nargs="?", const=DEFAULT_ENDPOINT, metavar="ENDPOINT",
                   help=f"also publish on ZMQ (default endpoint {DEFAULT_ENDPOINT})")
    p.add_argument("--allow-remote", action="store_true", help="allow --publish on a non-loopback address")
    p.add_argument("--overlay", metavar="VIDEO", help="write both views side by side with the 2D tracks (box, ID, "
                   "persistence score; grey = not persistent) and the reprojected 3D tracks (.mp4 or .avi)")
    p.add_argument("--plot", metavar="PNG", help="draw the 3D trajectories (top and side views) to this image")
    add_view_arg(p)
    p.add_argument("--curve-keys", metavar="DIR", help="encrypt the published tracks with CURVE and admit only "
                   "subscribers whose keys are in DIR/authorized (see tracker3d keys)")
    add_pipeline_args(p)
    p.set_defaults(func=run)


class _LastPair:
    """Keeps the pair being processed (the run loop hands each pair to a recorder first)."""

    pair = None

    def write(self, pair) -> None:
        self.pair = pair


def run(args: argparse.Namespace) -> int:
    rec = RecordingReader(args.dir, realtime=args.realtime, require_calib=not args.calib)
    calib = load_calibration(args.calib) if args.calib else rec.calib
    config, gate = pipeline_from_args(args)
    pipe = StereoPipeline(calib, config, gate=gate, keep_log=args.smooth)
    if args.view and not args.publish:
        args.publish = DEFAULT_ENDPOINT
    pub = TrackPublisher(args.publish, allow_remote=args.allow_remote, frame_id=pipe.frame_id,
                         curve_keys=args.curve_keys) if args.publish else None
    frames: list = []
    messages: list = []
    out = open_writer(args.out, pipe.frame_id) if args.out and not args.smooth else None
    overlay = OverlayWriter(args.overlay, calib, rec.fps) if args.overlay else None
    if pub is not None:
        print(f"publishing on {pub.endpoint} (topic tracks3d)")
    viewer = start_viewer(pub.endpoint, calib, args.curve_keys) if args.view else None
    if viewer is not None:
        time.sleep(2.0)  # let the viewer connect before the first messages
    last_pair = _LastPair()
    try:
        def on_frame(f3):
            if out is not None:
                out.write(f3.index, f3.t, f3.tracks)
            elif args.smooth:
                frames.append(f3)
            if overlay is not None:
                overlay.write(last_pair.pair, pipe)
            if args.plot:
                messages.append({"frame_id": pipe.frame_id, "tracks": f3.tracks})

        stats = run_pipeline(rec, pipe, publisher=pub, on_frame=on_frame, recorder=last_pair,
                             progress=bar("replay", total=len(rec), unit="pair"))
    finally:
        if overlay is not None:
            overlay.close()
        rec.close()
        pipe.close()
        if pub is not None:
            pub.close()
        if out is not None:
            out.close()
    if args.smooth:
        smoothed = pipe.smoothed_states()
        if args.out:
            with open_writer(args.out, pipe.frame_id) as w:
                for f3 in frames:
                    for tr in f3.tracks:
                        s = smoothed.get((tr["id"], f3.index))
                        if s is not None:
                            tr.update(pipe.state_fields(s[0][:3], s[0][3:6], s[1][:3, :3]))
                    w.write(f3.index, f3.t, f3.tracks)
    summary = stats.summary(rec.stats.as_dict(), pub)
    print(format_summary(summary))
    if rec.truncated:
        print(f"{rec.truncated} listed pairs missing from the videos (recording cut off)")
    if args.out:
        print(f"wrote {args.out}" + (" (RTS-smoothed)" if args.smooth else ""))
    if overlay is not None:
        print(f"wrote {args.overlay}: {overlay.frames} overlay frames")
    if args.plot:
        from ..outputs.plot import plot_trajectories

        n = plot_trajectories(messages, args.plot, title=f"{args.dir}: {len(messages)} pairs")
        print(f"wrote {args.plot}: {n} 3D trajectories")
    if viewer is not None:
        print("the viewer stays open; close its window to end it")
    return 0
