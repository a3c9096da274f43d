"""Options shared by the commands that run the stereo pipeline, and its run summary."""
from __future__ import annotations

import argparse
import math
import re
import subprocess
from typing import Optional

from persistence import HitCountGate

from ..errors import Tracker3DError
from ..pipeline import STAGES, PipelineConfig
from ..stereo.track3d import Track3DConfig

DEFAULT_GATE = "persistence"  # beats min_hits 1..6 end to end: tracker3d persistence tradeoff


def add_pipeline_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("pipeline")
    g.add_argument("--detector", default="bg", help="bg | knn | marker | onnx:MODEL.onnx (default bg)")
    g.add_argument("--gate", default=DEFAULT_GATE, choices=["hits", "persistence"],
                   help=f"which gate confirms 2D tracks: persistence = the learned TrackPersistenceFilter, "
                   f"hits = HitCountGate (default {DEFAULT_GATE})")
    g.add_argument("--min-hits", type=int, default=3, help="hits gate: detections needed within --window")
    g.add_argument("--window", type=float, default=1.0, help="hits gate window, seconds")
    g.add_argument("--weights", help="persistence gate: weights file (default: the shipped model)")
    g.add_argument("--gate-on", type=float, help="persistence gate: score to become persistent (default: the model's)")
    g.add_argument("--gate-off", type=float, help="persistence gate: score below which a track stops being "
                   "persistent (default: the model's)")
    g.add_argument("--gate-device", default="auto", help="persistence gate: auto | cpu | cuda")
    g.add_argument("--gate-latch", type=float, default=0.5, metavar="SECONDS",
                   help="persistence gate: a track persistent this long stays persistent (0: never latch)")
    g.add_argument("--model", default="cv", choices=["cv", "ca"], help="3D motion model: constant velocity "
                   "or constant acceleration")
    g.add_argument("--pixel-sigma", type=float, default=0.25, help="2D centroid noise for triangulation, px")
    g.add_argument("--max-coast", type=float, default=0.5, help="seconds a 3D track survives unseen")


def _bad(option: str, value, expected: str) -> Tracker3DError:
    return Tracker3DError(f"{option} {value}: expected {expected}")


def check_pipeline_args(args: argparse.Namespace) -> None:
    """The pipeline options' values, checked before anything runs: Tracker3DError (one line)
    naming the option. NaN is never a valid value."""
    def number(option: str, v, ok, expected: str) -> None:
        if v is not None and not (math.isfinite(v) and ok(v)):
            raise _bad(option, v, expected)

    number("--window", args.window, lambda v: v > 0, "seconds > 0")
    if args.min_hits < 1:
        raise _bad("--min-hits", args.min_hits, "a count >= 1")
    number("--gate-on", args.gate_on, lambda v: 0 < v <= 1, "a score in (0, 1]")
    number("--gate-off", args.gate_off, lambda v: 0 <= v < 1, "a score in [0, 1)")
    if args.gate_on is not None and args.gate_off is not None and args.gate_off >= args.gate_on:
        raise _bad("--gate-off", args.gate_off, f"a score below --gate-on {args.gate_on}")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(args.gate_device)):
        raise _bad("--gate-device", args.gate_device, "auto, cpu, cuda or cuda:N")
    number("--gate-latch", getattr(args, "gate_latch", 0.5), lambda v: v >= 0, "seconds >= 0")
    number("--pixel-sigma", getattr(args, "pixel_sigma", None), lambda v: v > 0, "pixels > 0")
    number("--max-coast", getattr(args, "max_coast", None), lambda v: v >= 0, "seconds >= 0")


def pipeline_from_args(args: argparse.Namespace):
    check_pipeline_args(args)
    cfg = PipelineConfig(detector=args.detector, pixel_sigma=args.pixel_sigma,
                         track3d=Track3DConfig(model=args.model, max_coast_s=args.max_coast))
    return cfg, make_gate(args)


def make_gate(args: argparse.Namespace):
    check_pipeline_args(args)
    if args.gate == "persistence":
        from persistence.filter import TrackPersistenceFilter

        return TrackPersistenceFilter(args.weights, on=args.gate_on, off=args.gate_off, device=args.gate_device,
                                      latch_s=getattr(args, "gate_latch", 0.5))
    return HitCountGate(args.min_hits, args.window)


def format_summary(summary: dict) -> str:
    lines = [f"pairs in {summary['pairs_in']}, processed {summary['processed']} "
             f"({summary['pairs_per_s']:.1f} pairs/s over {summary['wall_s']:.1f} s), published "
             f"{summary['published']}, most tracks at once {summary['tracks_max']}"]
    src = summary.get("source")
    if src:
        lines.append("source: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                            for k, v in src.items()))
    z = summary.get("zmq")
    if z:
        lines.append(f"zmq: sent {z['sent']}" + (f", refused {z['refused']}" if z["refused"] else "")
                     + f", subscribers connected {z['peers']} ({z['subscriptions']} subscriptions)"
                     + (f", foreign subscriptions ignored {z['ignored_subscriptions']}"
                        if z["ignored_subscriptions"] else "")
                     + ", lost at subscribers unknown (a PUB socket cannot see it; subscribers see gaps in seq)")
    stage = [f"{s} {summary[f'{s}_ms_median']:.2f}/{summary[f'{s}_ms_p99']:.2f}"
             for s in STAGES + ("latency",) if f"{s}_ms_median" in summary]
    lines.append("ms median/p99: " + ", ".join(stage))
    lines.extend(f"warning: {w}" for w in summary.get("warnings", []))
    return "\n".join(lines)


def add_view_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--view", action="store_true", help="open the Open3D viewer (tracker3d view) on the published "
                   "tracks, as a separate process")


def start_viewer(endpoint: str, calib, curve_keys: Optional[str] = None) -> subprocess.Popen:
    """Start `tracker3d view` in its own process, subscribed to `endpoint`, with the rig drawn.
    A slow viewer never slows the tracker: it takes only the newest message."""
    import sys
    import tempfile

    from calib import save_calibration

    tmp = tempfile.NamedTemporaryFile(prefix="tracker3d-view-", suffix=".yaml", delete=False)
    tmp.close()
    save_calibration(calib, tmp.name)
    connect = endpoint.replace("://*:", "://127.0.0.1:").replace("://0.0.0.0:", "://127.0.0.1:")
    cmd = [sys.executable, "-m", "tracker3d.cli", "view", "--connect", connect, "--calib", tmp.name]
    if curve_keys:
        cmd += ["--curve-keys", curve_keys]
    return subprocess.Popen(cmd)
