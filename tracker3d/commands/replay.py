"""`tracker3d replay`: the stereo pipeline over a recording (lossless), at full or recorded speed."""
from __future__ import annotations

import argparse
import time

from streams import RecordingReader, TrackPublisher
from streams.detections import DetectionFolder
from streams.publisher import DEFAULT_ENDPOINT

from ..errors import RunFailure, Tracker3DError
from ..outputs.files import open_writer
from ..outputs.overlay import OverlayWriter
from ..pipeline import StereoPipeline
from ..pipeline import run as run_pipeline
from ..progress import bar
from .common import (
    add_detection_input_args,
    add_pipeline_args,
    add_view_arg,
    check_fps,
    check_pipeline_args,
    finish_viewer,
    format_summary,
    open_input,
    pipeline_from_args,
    require_display,
    run_summary,
    start_viewer,
)
from .paths import (
    JSON_FILES,
    OVERLAY_FILES,
    PLOT_FILES,
    TRACK_FILES,
    Output,
    check_outputs,
    input_files,
    write_json,
)
from .signals import STOP

HELP = "track a recording folder in 3D (lossless; --smooth or --offline for offline RTS smoothing)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help=HELP, description=HELP)
    p.add_argument("dir", nargs="?", help="recording folder (frames.csv, cam0.*, cam1.*, calib.yaml) or detections "
                   "folder (frames.csv, det0.txt, det1.txt, calib.yaml or calib.toml)")
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--fast", action="store_true", help="as fast as possible (default)")
    speed.add_argument("--realtime", action="store_true", help="at the recorded speed")
    p.add_argument("--calib", help="calibration file (default: the folder's calib.yaml / calib.toml)")
    post = p.add_mutually_exclusive_group()
    post.add_argument("--smooth", action="store_true", help="RTS-smooth every 3D track (written to --out at the end)")
    post.add_argument("--offline", action="store_true", help="offline tracks (written to --out at the end): every "
                      "reported 3D track RTS-smoothed over its whole life, on the frames the live reporting rule "
                      "accepts, including those before it was confirmed")
    p.add_argument("--out", help="write the tracks3d messages here: .jsonl (the ZMQ messages), .csv (one row "
                   "per track) or .mcap (Foxglove)")
    p.add_argument("--publish", nargs="?", const=DEFAULT_ENDPOINT, metavar="ENDPOINT",
                   help=f"also publish on ZMQ (default endpoint {DEFAULT_ENDPOINT})")
    p.add_argument("--allow-remote", action="store_true", help="allow --publish on a non-loopback address")
    p.add_argument("--overlay", metavar="VIDEO", help="write both views side by side with the 2D tracks (box, ID, "
                   "persistence score; grey = not persistent) and the reprojected 3D tracks (.mp4 or .avi)")
    p.add_argument("--plot", metavar="PNG", help="draw the 3D trajectories (top and side views) to this image")
    p.add_argument("--summary-json", metavar="JSON", help="write the run summary (pairs, pairs/s, stage times) here; after a "
                   "detector process died, the summary up to it with 'failed': why")
    add_view_arg(p)
    p.add_argument("--curve-keys", metavar="DIR", help="encrypt the published tracks with CURVE and admit only "
                   "subscribers whose keys are in DIR/authorized (see tracker3d keys)")
    add_detection_input_args(p)
    add_pipeline_args(p)
    p.set_defaults(func=run)


class _LastPair:
    """Keeps the pair being processed (the run loop hands each pair to a recorder first)."""

    pair = None

    def write(self, pair) -> None:
        self.pair = pair


def run(args: argparse.Namespace) -> int:
    check_outputs([Output("--out", args.out, TRACK_FILES), Output("--overlay", args.overlay, OVERLAY_FILES),
                   Output("--plot", args.plot, PLOT_FILES), Output("--summary-json", args.summary_json, JSON_FILES)],
                  input_files(args))
    if args.view:
        require_display()
    check_pipeline_args(args)
    check_fps(getattr(args, "fps", None))  # (used with detection files only; never valid <= 0)
    if (args.smooth or args.offline) and not args.out:
        raise Tracker3DError(f"{'--smooth' if args.smooth else '--offline'}: give --out FILE (the tracks are written "
                             "there at the end of the input, .jsonl, .csv or .mcap)")
    if args.view and not args.publish:
        args.publish = DEFAULT_ENDPOINT
    # The socket first: a taken port is said at once, before the gate loads.
    pub = TrackPublisher(args.publish, allow_remote=args.allow_remote,
                         curve_keys=args.curve_keys) if args.publish else None
    rec = pipe = out = overlay = viewer = None
    frames: list = []
    messages: list = []
    try:
        rec, calib = open_input(args, realtime=args.realtime)
        if args.overlay and isinstance(rec, DetectionFolder):
            raise Tracker3DError("--overlay draws on the videos: a detections folder has none")
        config, gate = pipeline_from_args(args)
        pipe = StereoPipeline(calib, config, gate=gate, keep_log=args.smooth or args.offline)
        if pub is not None:
            pub.frame_id = pipe.frame_id
        out = open_writer(args.out, pipe.frame_id) if args.out else None  # --smooth: written at the end
        overlay = OverlayWriter(args.overlay, calib, rec.fps) if args.overlay else None
        if pub is not None:
            print(f"publishing on {pub.endpoint} (topic tracks3d)")
        viewer = start_viewer(pub.endpoint, calib, args.curve_keys) if args.view else None
        if viewer is not None:
            time.sleep(2.0)  # let the viewer connect before the first messages
        last_pair = _LastPair()

        def summarize(st) -> dict:
            """The run summary (a recording's: with what frames.csv listed and the videos could not give)."""
            out = run_summary(st, rec.stats.as_dict(), pub, pipe)
            if isinstance(rec, RecordingReader):
                out["pairs_listed"], out["pairs_missing"] = len(rec), rec.truncated
            # Whether the outputs hold the whole input: not after Ctrl-C / SIGTERM (stopped_by) or a
            # recording whose videos lack listed pairs (a failed run says "failed" besides).
            out["stopped_by"] = STOP.name if STOP.requested() else None
            out["complete"] = out["stopped_by"] is None and not out.get("pairs_missing")
            return out

        def on_frame(f3):
            if args.smooth or args.offline:
                frames.append(f3)
            elif out is not None:
                out.write(f3.index, f3.t, f3.tracks, f3.latency_ms)
            if overlay is not None:
                overlay.write(last_pair.pair, pipe)
            if args.plot:
                messages.append({"frame_id": pipe.frame_id, "tracks": f3.tracks})

        with STOP.soft():
            try:
                stats = run_pipeline(rec, pipe, publisher=pub, on_frame=on_frame, recorder=last_pair,
                                     progress=bar("replay", total=len(rec), unit="pair"), stop=STOP.requested,
                                     images_needed=overlay is not None)
            except RunFailure as exc:  # a detector process died: the summary of the pairs before it, then the error
                if args.summary_json and exc.stats is not None:
                    write_json(args.summary_json, {**summarize(exc.stats), "failed": str(exc), "complete": False},
                               default=float)
                raise
        if args.offline and out is not None:
            pipe.offline_frames(frames)
            for f3 in frames:
                out.write(f3.index, f3.t, f3.tracks, f3.latency_ms)
        elif args.smooth and out is not None:
            smoothed = pipe.smoothed_states()
            for f3 in frames:
                for tr in f3.tracks:
                    s = smoothed.get((tr["id"], f3.index))
                    if s is not None:
                        tr.update(pipe.state_fields(s[0][:3], s[0][3:6], s[1][:3, :3]))
                out.write(f3.index, f3.t, f3.tracks, f3.latency_ms)
    finally:
        for x in (overlay, rec, pipe, pub, out):
            if x is not None:
                x.close()
    summary = summarize(stats)
    print(format_summary(summary))
    if args.summary_json:
        write_json(args.summary_json, summary, default=float)
    if rec.truncated:
        print(f"{rec.truncated} listed pairs missing from the videos (recording cut off)")
    if args.out:
        print(f"wrote {args.out}: {out.seq} messages" + (" (RTS-smoothed)" if args.smooth else " (offline)" if args.offline else ""))
    if overlay is not None:
        print(f"wrote {args.overlay}: {overlay.frames} overlay frames")
    if args.plot:
        from ..outputs.plot import plot_trajectories

        n = plot_trajectories(messages, args.plot, title=f"{args.dir or args.det0}: {len(messages)} pairs")
        print(f"wrote {args.plot}: {n} 3D trajectories" if n else f"wrote {args.plot}: no 3D tracks to draw")
    finish_viewer(viewer)
    return 0
