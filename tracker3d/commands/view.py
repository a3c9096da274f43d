"""`tracker3d view`: the Open3D viewer of published 3D tracks (a window, or a PNG snapshot)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from streams.publisher import DEFAULT_ENDPOINT

from ..errors import Tracker3DError

HELP = "show published 3D tracks in an Open3D window, or render a snapshot PNG headless"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("view", help=HELP, description=HELP + ". Needs the viewer extra: pip install "
                       "'tracker3d[viewer]'.")
    p.add_argument("--connect", default=DEFAULT_ENDPOINT, metavar="ENDPOINT",
                   help=f"publisher to subscribe to (default {DEFAULT_ENDPOINT})")
    p.add_argument("--calib", help="calibration file: draws the two camera frusta")
    p.add_argument("--curve-keys", metavar="DIR", help="CURVE keys of this subscriber (client.key_secret, server.key)")
    p.add_argument("--calib-temp", action="store_true", help=argparse.SUPPRESS)  # delete --calib once read
    p.add_argument("--trail", type=float, default=2.0, help="seconds of trail behind each track")
    p.add_argument("--snapshot", metavar="PNG", help="render offscreen after --frames messages and exit")
    p.add_argument("--frames", type=int, default=30, help="messages to take before --snapshot")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for messages (snapshot mode)")
    p.add_argument("--size", default="960x540", help="snapshot size WxH pixels")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from calib import load_calibration
    from streams import subscribe

    from ..viewer import require_display, require_open3d, require_vulkan
    from ..viewer.state import ViewerState

    try:
        calib = load_calibration(args.calib) if args.calib else None
    finally:
        if args.calib_temp and args.calib:
            Path(args.calib).unlink(missing_ok=True)
    if args.snapshot:  # every check before waiting for messages
        try:
            w, h = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            raise Tracker3DError(f"--size {args.size}: expected WxH pixels, e.g. 960x540") from None
        folder = Path(args.snapshot).parent
        if not folder.is_dir():
            raise Tracker3DError(f"--snapshot {args.snapshot}: folder {folder} does not exist")
    else:
        require_display()
    require_open3d()
    if args.snapshot:
        require_vulkan()
    state = ViewerState(trail_s=args.trail)
    with subscribe(args.connect, curve_keys=args.curve_keys) as sub:
        if not args.snapshot:
            from ..viewer.window import run_window

            counts = run_window(sub, calib, state)
            print(f"viewer: {counts['applied']} messages drawn, {counts['replaced']} skipped for newer ones")
            return 0
        deadline = time.monotonic() + args.timeout
        while state.applied < args.frames:
            left = deadline - time.monotonic()
            msg = sub.recv(timeout=max(left, 0.0)) if left > 0 else None
            if msg is None:
                raise Tracker3DError(f"--connect {args.connect}: {state.applied} of {args.frames} messages "
                                     f"within {args.timeout:g} s ({sub.silence_hint()})")
            state.apply(msg)
    from ..viewer.snapshot import default_camera, render

    render(state, calib, args.snapshot, default_camera(state, calib, w, h))
    print(f"wrote {args.snapshot}: {len(state.tracks)} tracks after {state.applied} messages (t {state.t:.2f} s)")
    return 0
