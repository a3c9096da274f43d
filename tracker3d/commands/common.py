"""Options shared by the commands that run the stereo pipeline, and its run summary."""
from __future__ import annotations

import argparse
import logging
import math
import re
import subprocess
from typing import Optional

from persistence import HitCountGate, RateGuardedGate
from streams.errors import OutputError

from ..errors import Tracker3DError
from ..pipeline import ANCHORS, BOX_POS_REL, STAGES, PipelineConfig
from ..stereo.track3d import Track3DConfig

log = logging.getLogger(__name__)

DEFAULT_GATE = "persistence"  # beats min_hits 1..6 end to end: tracker3d persistence tradeoff
# Each camera's detector in a child process (PipelineConfig.processes): 10 objects, fast replay on
# 2 cores, the learned gate: see docs/benchmarks.md
DETECT_PROCESSES = True


def add_pipeline_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("pipeline")
    g.add_argument("--detector", default="bg", help="bg | knn | hog | hog-full | marker | onnx:MODEL.onnx (default bg)")
    g.add_argument("--min-area", type=float, help="bg/knn/hog/marker: smallest blob, pixels^2 (bg default 6)")
    g.add_argument("--max-area", type=float, help="bg/knn/hog/marker: largest blob, pixels^2 (bg default 40000)")
    g.add_argument("--merge-px", type=float, help="bg/knn/hog: merge blobs whose boxes come within this many pixels")
    g.add_argument("--object-size", metavar="W0,H0,W1,H1", help="size prior in metres from the calibration: objects "
                   "from W0 x H0 to W1 x H1 m (with --depth-range; sets --min-area/--max-area per camera)")
    g.add_argument("--depth-range", metavar="NEAR,FAR", help="metres from the cameras the objects are seen at "
                   "(with --object-size)")
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
    g.add_argument("--box-noise", type=float, default=None, metavar="FRACTION",
                   help="a box centre's noise as a fraction of the box size (sqrt(w h)) when larger than "
                   "--pixel-sigma; boxes cut by the image border are triangulated with it, and a 3D track may be as "
                   "uncertain as 4 of its triangulations (wide baselines). Default: 0.05 for detection files and "
                   "streams (an outside detector's boxes), 0 for our own detectors (exact blob centroids)")
    g.add_argument("--ground", action="store_true",
                   help="objects move on the ground of the calibration's world frame (z up): people, vehicles, "
                   "animals walking. Heights stay put, cross-camera pairs must triangulate at the tracks' height, and a "
                   "track one camera loses is kept by the other (needs R_world/t_world in the calibration)")
    g.add_argument("--anchor", default="center", choices=list(ANCHORS),
                   help="which point of a detection box is the object (triangulated and reported): its centre or "
                   "the middle of its bottom edge (default center; see README 'Your own detector')")
    g.add_argument("--detect-scale", type=float, default=1.0, metavar="FACTOR",
                   help="detect on images downscaled by this factor (e.g. 0.5 at 1280x720 and above: about a "
                   "quarter of the pixels), positions mapped back to full-resolution pixels at sub-pixel accuracy; "
                   "size options stay in full-resolution pixels (default 1: no downscaling)")
    g.add_argument("--no-detect-processes", action="store_true",
                   help="detect on threads of this process instead of one child process per camera (by default "
                   "each camera's detector runs in a process of its own, so detection and tracking do not take "
                   "turns on Python's interpreter lock)")
    g.add_argument("--no-pipelining", action="store_true",
                   help="read and detect each pair only after the previous one was tracked and published (by "
                   "default reading, detection and tracking run side by side, each a pair ahead of the next)")
    g.add_argument("--no-track-core", action="store_true",
                   help="replaying files or recordings, never give the tracking thread a core of its own (by default "
                   "it gets one, with the reader and the detector processes on the other cores, while its CPU time "
                   "per pair is the larger share; on a machine busy with other work, leave the scheduler free)")


def _floats(text: Optional[str], n: int, option: str) -> Optional[tuple]:
    if text is None:
        return None
    try:
        vals = tuple(float(v) for v in text.split(","))
        assert len(vals) == n
    except (ValueError, AssertionError):
        raise Tracker3DError(f"{option} {text}: expected {n} comma-separated numbers (metres)") from None
    return vals


def detector_options(args: argparse.Namespace) -> tuple[dict, Optional[tuple], Optional[tuple]]:
    """(detector options, object size m, depth range m) from the size-prior options given."""
    kw = {k: getattr(args, k) for k in ("min_area", "max_area", "merge_px") if getattr(args, k, None) is not None}
    size = _floats(getattr(args, "object_size", None), 4, "--object-size")
    depth = _floats(getattr(args, "depth_range", None), 2, "--depth-range")
    if (size is None) != (depth is None):
        raise Tracker3DError("--object-size and --depth-range go together (the size prior needs both)")
    if size is not None and ("min_area" in kw or "max_area" in kw):
        raise Tracker3DError("--object-size/--depth-range set the areas: drop --min-area/--max-area")
    spec = str(getattr(args, "detector", "bg"))
    if (kw or size) and spec.startswith("onnx:"):
        raise Tracker3DError("--min-area/--max-area/--merge-px/--object-size: not for onnx detectors (the model decides)")
    if "merge_px" in kw and spec == "marker":
        raise Tracker3DError("--merge-px: only for the bg, knn and hog detectors")
    if size is not None:
        from ..detect.sizeprior import area_range_px

        area_range_px(1.0, 1.0, size, depth)  # checks the values now, with a one-line error
    return kw, size, depth


def _bad(option: str, value, expected: str) -> Tracker3DError:
    return Tracker3DError(f"{option} {value}: expected {expected}")


def check_number(option: str, v: Optional[float], ok, expected: str) -> None:
    """A number option: None (not given) or finite with ok(v) (NaN is never valid), else a
    one-line Tracker3DError naming the option and what was expected."""
    if v is not None and not (math.isfinite(v) and ok(v)):
        raise _bad(option, v, expected)


def check_fps(fps: Optional[float], option: str = "--fps") -> None:
    """A frame rate option: None (not given) or frames per second > 0 (one-line Tracker3DError)."""
    check_number(option, fps, lambda v: v > 0, "frames per second > 0")


def check_seconds(seconds: Optional[float], option: str = "--seconds") -> None:
    """A duration option: None (not given) or a finite number of seconds > 0."""
    check_number(option, seconds, lambda v: v > 0, "a number of seconds > 0")


def check_detector_args(args: argparse.Namespace) -> None:
    """The detector's size options (pixels, pixels^2), where the command has them: finite,
    areas and merge distance >= 0, max above min."""
    lo, hi, merge = (getattr(args, k, None) for k in ("min_area", "max_area", "merge_px"))
    check_number("--min-area", lo, lambda v: v >= 0, "pixels^2 >= 0")
    check_number("--max-area", hi, lambda v: v > 0, "pixels^2 > 0")
    check_number("--merge-px", merge, lambda v: v >= 0, "pixels >= 0")
    if lo is not None and hi is not None and hi <= lo:
        raise _bad("--max-area", hi, f"pixels^2 above --min-area {lo:g}")


def check_pipeline_args(args: argparse.Namespace) -> None:
    """The pipeline options' values, checked before anything runs: Tracker3DError (one line)
    naming the option. NaN is never a valid value."""
    check_number("--window", args.window, lambda v: v > 0, "seconds > 0")
    if args.min_hits < 1:
        raise _bad("--min-hits", args.min_hits, "a count >= 1")
    check_number("--gate-on", args.gate_on, lambda v: 0 < v <= 1, "a score in (0, 1]")
    check_number("--gate-off", args.gate_off, lambda v: 0 <= v < 1, "a score in [0, 1)")
    if args.gate_on is not None and args.gate_off is not None and args.gate_off >= args.gate_on:
        raise _bad("--gate-off", args.gate_off, f"a score below --gate-on {args.gate_on}")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(args.gate_device)):
        raise _bad("--gate-device", args.gate_device, "auto, cpu, cuda or cuda:N")
    check_number("--gate-latch", getattr(args, "gate_latch", 0.5), lambda v: v >= 0, "seconds >= 0")
    check_number("--pixel-sigma", getattr(args, "pixel_sigma", None), lambda v: v > 0, "pixels > 0")
    check_number("--max-coast", getattr(args, "max_coast", None), lambda v: v >= 0, "seconds >= 0")
    check_number("--box-noise", getattr(args, "box_noise", None), lambda v: 0 <= v < 1, "a fraction in [0, 1)")
    check_number("--detect-scale", getattr(args, "detect_scale", None), lambda v: 0 < v <= 1, "a factor in (0, 1]")
    check_detector_args(args)


def pipeline_from_args(args: argparse.Namespace):
    check_pipeline_args(args)
    kw, size, depth = detector_options(args)
    box = getattr(args, "box_noise", None)  # None: by where the boxes come from (the pipeline decides)
    cfg = PipelineConfig(detector=args.detector, pixel_sigma=args.pixel_sigma, pixel_rel=box, truncated_rel=box,
                         track3d=Track3DConfig(model=args.model, max_coast_s=args.max_coast,
                                               max_pos_rel=None if box is None else (BOX_POS_REL if box > 0 else 0.0)),
                         anchor=getattr(args, "anchor", "center"), detector_options=kw, object_size_m=size,
                         depth_m=depth, ground=getattr(args, "ground", False),
                         # one detection thread per camera, unless each core already runs its own
                         # pipeline (tracker3d batch's worker processes set detect_threads False)
                         threads=getattr(args, "detect_threads", True),
                         processes=DETECT_PROCESSES and getattr(args, "detect_threads", True)
                         and not getattr(args, "no_detect_processes", False),
                         # the next pair is detected while this one is tracked, unless asked not to or
                         # each core already runs its own pipeline (no core is idle to overlap on)
                         pipelined=getattr(args, "detect_threads", True) and not getattr(args, "no_pipelining", False),
                         track_core=not getattr(args, "no_track_core", False),
                         detect_scale=getattr(args, "detect_scale", 1.0))
    return cfg, make_gate(args)


def add_detection_input_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("detection files (instead of a folder)")
    g.add_argument("--det0", metavar="FILE", help="camera 0 detections, MOTChallenge det format "
                   "frame,id,x,y,w,h,conf[,class] (with --det1 and --calib)")
    g.add_argument("--det1", metavar="FILE", help="camera 1 detections (same format)")
    g.add_argument("--frames", metavar="CSV", help="capture times of the detection frames: frames.csv "
                   "(index,t0,t1; index = det frame - 1)")
    g.add_argument("--fps", type=float, help="without --frames: the detection files' frame rate (t = (frame-1)/fps)")


def open_input(args: argparse.Namespace, realtime: bool = False):
    """The stereo source a command reads: a recording folder (videos), a detections folder
    (det0.txt, det1.txt, frames.csv, calibration) or loose detection files (--det0 --det1
    --calib, with --frames or --fps). Returns (source, calibration)."""
    from calib import load_calibration
    from streams import RecordingReader
    from streams.detections import DetectionFolder, is_detections_folder

    loose = getattr(args, "det0", None) or getattr(args, "det1", None)
    if loose:
        if not (args.det0 and args.det1 and args.calib):
            raise Tracker3DError("detection files: give --det0, --det1 and --calib together (and --frames or --fps)")
        if args.dir:
            raise Tracker3DError(f"{args.dir}: give a folder or --det0/--det1, not both")
        src = DetectionFolder(args.det0, args.det1, args.calib, frames=args.frames, fps=args.fps, realtime=realtime)
        return src, src.calib
    if not args.dir:
        raise Tracker3DError("give a recording or detections folder DIR, or --det0 F --det1 F --calib F")
    if is_detections_folder(args.dir):
        src = DetectionFolder.open_folder(args.dir, calib=args.calib, realtime=realtime)
        return src, src.calib
    rec = RecordingReader(args.dir, realtime=realtime, require_calib=True,
                          calib=load_calibration(args.calib) if args.calib else None)
    return rec, rec.calib


def make_gate(args: argparse.Namespace):
    """The gate the options ask for. The learned gate runs only at the frame rates its model card
    lists (`frame_rates_hz`); outside them the hit-count rule confirms tracks (one log line)."""
    check_pipeline_args(args)
    hits = HitCountGate(args.min_hits, args.window)
    if args.gate == "persistence":
        import torch

        from persistence.filter import TrackPersistenceFilter

        # The gate's per-frame ops are tiny: a torch thread pool only fights the other work for the
        # cores (up to 369 ms per frame under load, 1.1-1.4 ms with one thread).
        torch.set_num_threads(1)
        learned = TrackPersistenceFilter(args.weights, on=args.gate_on, off=args.gate_off, device=args.gate_device,
                                         latch_s=getattr(args, "gate_latch", 0.5))
        rates = learned.card.get("frame_rates_hz")
        return learned if rates is None else RateGuardedGate(learned, hits, tuple(rates))
    return hits


# The source's counts in plain words (streams.pairing.PairStats and its kin); zero counts are not listed.
SOURCE_COUNTS = {
    "dropped0": "camera 0 frames with no camera 1 frame close enough in time",
    "dropped1": "camera 1 frames with no camera 0 frame close enough in time",
    "single0": "pairs with only camera 0 (camera 1 down)",
    "single1": "pairs with only camera 1 (camera 0 down)",
    "overwritten": "pairs dropped because the loop was busy (live sources keep only the newest)",
}


def run_summary(stats, source_stats: dict, pub, pipe) -> dict:
    """stats.summary() of a finished run, with `no_tracks_why` where it made no 3D track."""
    summary = stats.summary(source_stats, pub)
    if summary["processed"] and not summary["tracks_max"]:
        summary["no_tracks_why"] = no_tracks_why(pipe, summary["processed"])
    return summary


def no_tracks_why(pipe, processed: int) -> str:
    """Why a run made no 3D track at all, from what the pipeline saw per camera (detections,
    confirmed 2D tracks): the first stage that had nothing, in words."""
    from ..evaluation.runs import warmup_s

    det, conf = pipe.detections_seen, pipe.confirmed_max
    if not det[0] and not det[1]:
        why = f"neither camera detected anything in {processed} pairs"
        warm = 0.0 if pipe.outside_boxes else warmup_s(pipe.cfg, 30.0)
        if warm:
            why += f" (a background detector learns for its first {warm:g} s and reports nothing then)"
        return why
    for c in (0, 1):
        if not det[c]:
            return f"camera {c} detected nothing in {processed} pairs (camera {1 - c}: {det[1 - c]} detections)"
    for c in (0, 1):
        if not conf[c]:
            return (f"camera {c}'s {det[c]} detections never made a confirmed 2D track (the gate confirms a track "
                    "after a few frames; flashes and clutter never)")
    return ("2D tracks were confirmed in both cameras but none paired into a 3D track in front of both (the "
            "calibration, the camera order or their timing; see the warnings printed, if any)")


def format_source(src: dict) -> str:
    """The source's statistics as one plain line (no Python reprs, every count named)."""
    n = src.get("pairs", 0)
    parts = [f"{n} pairs"]
    if "received" in src:
        parts.append(f"detection messages received {src['received']}, refused {src.get('invalid', 0)} (not JSON, "
                     f"wrong schema or field), late {src.get('late', 0)} (older than that camera's last)")
    problems = [f"{src[k]} {label}" for k, label in SOURCE_COUNTS.items() if src.get(k)]
    parts.append("; ".join(problems) if problems else "none dropped or unpaired")
    skews = [src.get(f"skew_ms_{q}") for q in ("median", "p99", "max")]
    if all(isinstance(v, float) and math.isfinite(v) for v in skews):
        parts.append("camera time skew within a pair, ms: median {:.2f}, p99 {:.2f}, max {:.2f}".format(*skews))
    elif n:
        parts.append("camera time skew not measured (no pair had both capture times)")
    return "source: " + "; ".join(parts)


def format_summary(summary: dict) -> str:
    """The run summary in plain words: one line per topic, every number with its unit."""
    published = (f"published {summary['published']}" if summary.get("zmq") is not None or summary["published"]
                 else "not published (no ZMQ publisher in this run)")
    lines = [f"pairs in {summary['pairs_in']}, processed {summary['processed']} "
             f"({summary['pairs_per_s']:.1f} pairs/s over {summary['wall_s']:.1f} s), {published}, "
             f"most 3D tracks at once {summary['tracks_max']}"
             + (f" (no 3D track at all: {summary['no_tracks_why']})" if summary.get("no_tracks_why") else "")
             + (f"; detected pairs replaced by a newer one before tracking (newest wins) {summary['dropped_stale']}"
                if summary.get("dropped_stale") else "")]
    src = summary.get("source")
    if src:
        lines.append(format_source(src))
    z = summary.get("zmq")
    if z:
        lines.append(f"zmq: sent {z['sent']}" + (f", not sent because the send queue was full {z['refused']}"
                                                 if z["refused"] else "")
                     + f", subscribers connected {z['peers']} ({z['subscriptions']} subscriptions)"
                     + (f", foreign subscriptions ignored {z['ignored_subscriptions']}"
                        if z["ignored_subscriptions"] else "")
                     + ", lost at subscribers unknown (a PUB socket cannot see it; subscribers see gaps in seq)")
    stage = [f"{s} {summary[f'{s}_ms_median']:.2f}/{summary[f'{s}_ms_p99']:.2f}"
             for s in STAGES if f"{s}_ms_median" in summary]
    if stage:
        lines.append("time per pair, ms (median/p99): " + ", ".join(stage))
    if "latency_ms_median" in summary:
        lines.append(f"latency, capture (or arrival, for files and recordings) to publish, ms: median "
                     f"{summary['latency_ms_median']:.2f}, p99 {summary['latency_ms_p99']:.2f}")
    lines.extend(f"warning: {w}" for w in summary.get("warnings", []))
    return "\n".join(lines)


def open_publisher(args: argparse.Namespace):
    """The command's TrackPublisher, bound now (before cameras open and the gate loads, so a taken
    port is said at once), or None with --no-publish. Its frame_id is set once the pipeline exists."""
    from streams import TrackPublisher
    from streams.errors import StreamError

    if getattr(args, "no_publish", False):
        return None
    try:
        return TrackPublisher(args.publish, allow_remote=args.allow_remote, curve_keys=args.curve_keys)
    except StreamError as e:
        if "already in use" in str(e) and hasattr(args, "no_publish"):
            raise Tracker3DError(f"{e}, or --no-publish") from None
        raise


def add_view_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--view", action="store_true", help="open the Open3D viewer (tracker3d view) on the published "
                   "tracks, as a separate process")


def require_display() -> None:
    """--view opens a window: refuse at once, in one line, where there is no display to open it on
    (a viewer without one would vanish silently)."""
    from ..viewer import require_display as display_answers

    try:
        display_answers()
    except Tracker3DError as e:
        raise Tracker3DError(f"--view needs a display: {e}; or drop --view") from None


def start_viewer(endpoint: str, calib, curve_keys: Optional[str] = None) -> subprocess.Popen:
    """Start `tracker3d view` in its own process, subscribed to `endpoint`, with the rig drawn.
    A slow viewer never slows the tracker: it takes only the newest message. The rig goes to the
    viewer in a temporary file that the viewer deletes once read (`finish_viewer` removes it if the
    viewer died first)."""
    import sys
    import tempfile

    from calib import save_calibration

    require_display()
    tmp = tempfile.NamedTemporaryFile(prefix="tracker3d-view-", suffix=".yaml", delete=False)
    tmp.close()
    save_calibration(calib, tmp.name)
    connect = endpoint.replace("://*:", "://127.0.0.1:").replace("://0.0.0.0:", "://127.0.0.1:")
    cmd = [sys.executable, "-m", "tracker3d.cli", "view", "--connect", connect, "--calib", tmp.name, "--calib-temp"]
    if curve_keys:
        cmd += ["--curve-keys", curve_keys]
    proc = subprocess.Popen(cmd)
    proc.calib_tmp = tmp.name  # type: ignore[attr-defined]
    return proc


def finish_viewer(proc: Optional[subprocess.Popen]) -> None:
    """After the run: say whether the viewer is still open; remove its rig file if it died unread."""
    import os

    if proc is None:
        return
    if proc.poll() is None:
        print("the viewer stays open; close its window to end it")
        return
    tmp = getattr(proc, "calib_tmp", None)
    if tmp and os.path.exists(tmp):
        os.unlink(tmp)
    print(f"the viewer ended (exit status {proc.returncode})")


class StopOnWriteError:
    """A writer (a RecordingWriter, a tracks file) whose failure (disk full, I/O error) stops that
    output only, loudly, while the run goes on: `live --record` keeps tracking and publishing
    when the disk fills up. `error` keeps the cause; `report()` is the line for the summary."""

    def __init__(self, option: str, writer):
        self.option = option
        self.writer = writer
        self.error: Optional[BaseException] = None
        self.written = 0

    def write(self, *args, **kwargs) -> None:
        if self.error is not None:
            return
        try:
            self.writer.write(*args, **kwargs)
            self.written += 1
        except (OSError, OutputError) as exc:
            self.error = exc
            log.warning("%s stopped after %d writes: %s; the run goes on without it", self.option, self.written, exc)
            self.close()

    def close(self) -> None:
        try:
            self.writer.close()
        except (OSError, OutputError) as exc:
            self.error = self.error or exc

    def report(self) -> str:
        n = getattr(self.writer, "readable", self.written)
        path = getattr(self.writer, "dir", None) or getattr(self.writer, "path", "")
        if self.error is None:
            return f"{self.option} {path}: {n} written"
        return f"{self.option} {path}: STOPPED after {n} readable ({self.error})"
