"""`tracker3d sim`: write a synthetic stereo recording with ground truth."""
from __future__ import annotations

import argparse
import dataclasses
import time
import typing
from pathlib import Path

from ..errors import Tracker3DError
from ..progress import progress
from ..sim import SCENES, SceneConfig, get_scene, write_sim_recording
from .common import check_number
from .paths import Output, check_outputs

HELP = "render a synthetic stereo scene into a recording folder (with gt.csv)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sim", help=HELP, description=HELP + ". Scenes: " + ", ".join(SCENES))
    p.add_argument("--scene", default="default", help=f"one of: {', '.join(SCENES)} (default: default)")
    p.add_argument("--seconds", type=float, help="length in seconds (default: the scene's)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same recording")
    p.add_argument("--objects", type=int, help="number of objects present at any time")
    p.add_argument("--fps", type=float, help="frame rate")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any scene parameter, e.g. --set time_offset=0.01 --set noise_sigma=6")
    p.add_argument("--codec", default="MJPEG", choices=["MJPEG", "MJPG", "FFV1", "HFYU"], help="MJPEG: kill-safe Motion-JPEG stream (.mjpg); MJPG/HFYU: AVI; FFV1: lossless MKV")
    p.add_argument("--out", required=True, help="output folder (must be new or empty)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    p.set_defaults(func=run)


def _coerce(cfg: SceneConfig, key: str, text: str):
    hints = typing.get_type_hints(SceneConfig)
    if key not in hints:
        raise Tracker3DError(f"--set {key}: unknown scene parameter (known: "
                             f"{', '.join(f.name for f in dataclasses.fields(SceneConfig))})")
    cur = getattr(cfg, key)
    try:
        if isinstance(cur, bool):
            return text.lower() in ("1", "true", "yes")
        if isinstance(cur, int):
            return int(text)
        if isinstance(cur, float):
            return float(text)
        if isinstance(cur, str):
            return text
        if key == "dark":
            if text.lower() in ("none", ""):
                return None
            c, a, b = text.split(",")
            return (int(c), float(a), float(b))
        if isinstance(cur, tuple) and key != "motion_mix":
            return tuple(float(v) for v in text.split(","))
        if key == "motion_mix":
            return tuple((m.split(":")[0], float(m.split(":")[1])) for m in text.split(","))
    except (ValueError, IndexError):
        pass
    raise Tracker3DError(f"--set {key}={text}: cannot parse (current value {cur!r})")


def scene_from_args(args: argparse.Namespace) -> SceneConfig:
    try:
        cfg = get_scene(args.scene)
    except KeyError as exc:
        raise Tracker3DError(str(exc.args[0])) from None
    kw = {}
    if args.seconds is not None:
        kw["seconds"] = args.seconds
    if args.objects is not None:
        kw["n_objects"] = args.objects
    if args.fps is not None:
        kw["fps"] = args.fps
    for item in args.set:
        if "=" not in item:
            raise Tracker3DError(f"--set {item}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        kw[k.strip()] = _coerce(cfg, k.strip(), v.strip())
    cfg = cfg.with_(**kw)
    check_number("--seconds", cfg.seconds, lambda v: v > 0, "a number > 0")
    check_number("--fps (or --set fps)", cfg.fps, lambda v: v > 0, "a number > 0")
    if cfg.n_objects < 0:
        raise Tracker3DError(f"--objects (or --set n_objects) {cfg.n_objects}: expected a count >= 0")
    for name in ("drop_prob", "flash_3d_fraction"):  # probabilities and shares
        v = getattr(cfg, name)
        if not 0 <= v <= 1:
            raise Tracker3DError(f"--set {name}={v}: expected a value in [0, 1]")
    if cfg.stride < 1:
        raise Tracker3DError(f"--set stride={cfg.stride}: expected an integer >= 1 (keep every stride-th frame)")
    if not 0 <= cfg.jitter < cfg.stride / cfg.fps / 2:
        raise Tracker3DError(f"--set jitter={cfg.jitter}: expected 0 <= jitter < half the frame interval "
                             f"({cfg.stride / cfg.fps / 2:.4g} s), so capture times keep their order")
    if cfg.n_frames < 1:
        raise Tracker3DError(f"--seconds {cfg.seconds:g}: gives no pair at {cfg.frame_rate:g} pairs/s (expected at "
                             f"least {1 / cfg.frame_rate:.3g} s)")
    return cfg


def run(args: argparse.Namespace) -> int:
    cfg = scene_from_args(args)
    out = Path(args.out)
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise Tracker3DError(f"--out {out}: folder exists and is not empty (choose another --out, or pass "
                             "--overwrite to write into it)")
    if not (out.is_dir() and args.overwrite):  # a file, or a path through one: one line, not a traceback
        check_outputs([Output("--out", args.out, folder=True)], [])
    t = time.perf_counter()
    out = write_sim_recording(cfg, args.out, seed=args.seed, codec=args.codec, overwrite=args.overwrite,
                              progress=lambda it: progress(it, f"sim {cfg.name}", total=cfg.n_frames, unit="pair"))
    dt = time.perf_counter() - t
    print(f"wrote {out}: {cfg.n_frames} pairs of {cfg.width}x{cfg.height} ({cfg.name}, seed {args.seed}) "
          f"in {dt:.1f}s, {cfg.n_frames / dt:.0f} pairs/s including video encoding")
    return 0
