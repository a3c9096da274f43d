"""`tracker3d demo`: a synthetic stereo scene through the live loop, published on ZMQ, scored."""
from __future__ import annotations

import argparse
import math
import time

from streams.publisher import DEFAULT_ENDPOINT

from ..errors import Tracker3DError
from ..evaluation.eval3d import describe_false_kinds
from ..evaluation.runs import Collector, warmup_s
from ..pipeline import StereoPipeline
from ..pipeline import run as run_pipeline
from ..progress import bar
from ..sim import SCENES, SimStereoSource, SimWorld, gt_columns
from .common import (
    add_pipeline_args,
    add_view_arg,
    check_pipeline_args,
    finish_viewer,
    format_summary,
    open_publisher,
    pipeline_from_args,
    require_display,
    run_summary,
    start_viewer,
)
from .signals import STOP
from .sim import scene_from_args

HELP = "run a synthetic stereo scene through the live loop, publish it, and score it"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help=HELP, description=HELP)
    p.add_argument("--scene", default="default", choices=list(SCENES))
    p.add_argument("--seconds", type=float, default=12.0, help="scene length (the first 2 s learn the background)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=float, help="frame rate (default: the scene's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any scene parameter, as in tracker3d sim (e.g. --set fps=2 --set stride=6)")
    p.add_argument("--fast", action="store_true", help="as fast as possible instead of at the scene's frame rate")
    p.add_argument("--publish", default=DEFAULT_ENDPOINT, metavar="ENDPOINT", help="ZMQ endpoint to bind")
    p.add_argument("--no-publish", action="store_true", help="do not open a ZMQ socket")
    p.add_argument("--allow-remote", action="store_true", help="allow --publish on a non-loopback address")
    add_pipeline_args(p)
    add_view_arg(p)
    p.add_argument("--curve-keys", metavar="DIR", help="encrypt the published tracks with CURVE and admit only "
                   "subscribers whose keys are in DIR/authorized (see tracker3d keys)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.view and args.no_publish:
        raise Tracker3DError("--view needs the published tracks: drop --no-publish")
    if args.view:
        require_display()
    cfg = scene_from_args(argparse.Namespace(scene=args.scene, seconds=args.seconds, objects=None, fps=args.fps,
                                             set=args.set))
    world = SimWorld(cfg, seed=args.seed)
    src = SimStereoSource(world, realtime=not args.fast)
    check_pipeline_args(args)
    # The socket first: a taken port is said at once, not after the gate has loaded.
    pub = open_publisher(args)
    try:
        config, gate = pipeline_from_args(args)
        pipe = StereoPipeline(world.calib, config, gate=gate)
        if pub is not None:
            pub.frame_id = pipe.frame_id
    except BaseException:
        if pub is not None:
            pub.close()
        raise
    col = Collector(pipe)
    viewer = None
    if args.view:
        viewer = start_viewer(pub.endpoint, world.calib, args.curve_keys)
        time.sleep(2.0)  # let the viewer connect before the scene starts
    print(f"demo: scene '{cfg.name}' ({cfg.n_objects} objects, {cfg.seconds:.0f} s at {cfg.frame_rate:g} fps, seed "
          f"{args.seed}), {'as fast as possible' if args.fast else 'live at the frame rate'}"
          + ("" if pub is None else f"; publishing on {pub.endpoint}"))
    try:
        with STOP.soft():
            stats = run_pipeline(src, pipe, publisher=pub, on_frame=col, stop=STOP.requested,
                                 progress=bar("demo", total=cfg.n_frames, unit="pair"))
    finally:
        pipe.close()
        if pub is not None:
            pub.close()
    skip = warmup_s(config, cfg.frame_rate)
    print()
    scored_s = stats.processed / cfg.frame_rate - skip
    if scored_s <= 0:
        print(f"scored nothing: the run ({stats.processed} pairs, {stats.processed / cfg.frame_rate:.1f} s) is not "
              f"longer than the detector's {skip:.1f} s warm-up, in which it learns the background and reports "
              f"nothing (give --seconds above {skip:.0f})")
    else:
        print_scores(col.evaluate(gt_columns(src.gt), cfg.frame_rate, skip), skip)
    print(format_summary(run_summary(stats, src.stats.as_dict(), pub, pipe)))
    finish_viewer(viewer)
    return 0


def _num(v: float, fmt: str, why: str) -> str:
    """A number, or why there is none (never a bare nan)."""
    return format(v, fmt) if math.isfinite(v) else f"none ({why})"


def print_scores(res: dict, skip: float) -> None:
    """The demo's scores against the scene's ground truth, every missing number with its reason."""
    m = res["3d"]
    print(f"tracked against the scene's ground truth (from {skip:.1f} s on; a 3D track matches an object "
          f"within {m['match_m']} m, or 3 sigma of its triangulation error if larger):")
    print(f"  objects seen by both cameras   {m['objects']}   (never tracked: {m['objects_never_tracked']})")
    if not m["objects"]:
        print("    no object was in both cameras' views after the warm-up: nothing to score (try a longer --seconds)")
    elif m["tracker_dets"] == 0:
        print("    no 3D track was reported after the warm-up: the gate confirmed no 2D track in time, or the "
              "detector found nothing (try a longer --seconds, or --gate hits)")
    print(f"  3D IDF1 / MOTA / HOTA          {m['IDF1']:.3f} / {m['MOTA']:.3f} / {m['HOTA']:.3f}   ID switches {m['IDSW']}")
    nomatch = "no 3D track matched an object"
    print(f"  position RMSE                  {_num(m['rmse_m'] * 100, '.1f', nomatch)} cm filtered, "
          f"{_num(m['rmse_raw_m'] * 100, '.1f', nomatch)} cm raw triangulation, "
          f"bound {_num(m['bound_m'] * 100, '.1f', nomatch)} cm")
    print(f"  false 3D tracks                {m['false_tracks']} ({m['false_track_s']:.1f} track-seconds; a track "
          "matched to an object in under half of its frames)")
    if m["false_by_kind"]:
        print(f"    of which {describe_false_kinds(m['false_by_kind'])}")
    notrack = "no object was tracked"
    print(f"  time to first 3D track         median {_num(m['time_to_track_s_median'] * 1000, '.0f', notrack)} ms, "
          f"p90 {_num(m['time_to_track_s_p90'] * 1000, '.0f', notrack)} ms")
    print(f"  2D IDF1 cam0 / cam1            {res['2d_cam0']['IDF1']:.3f} / {res['2d_cam1']['IDF1']:.3f}")
