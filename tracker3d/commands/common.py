"""Options shared by the commands that run the stereo pipeline, and its run summary."""
from __future__ import annotations

import argparse
import logging
import subprocess
from typing import Optional

from persistence import HitCountGate
from streams.errors import OutputError

from ..errors import Tracker3DError
from ..pipeline import ANCHORS, STAGES, PipelineConfig
from ..stereo.track3d import Track3DConfig

log = logging.getLogger(__name__)

DEFAULT_GATE = "persistence"  # beats min_hits 1..6 end to end: tracker3d persistence tradeoff


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
    g.add_argument("--anchor", default="center", choices=list(ANCHORS),
                   help="which point of a detection box is the object (triangulated and reported): its centre or "
                   "the middle of its bottom edge (default center; see README 'Your own detector')")


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


def pipeline_from_args(args: argparse.Namespace):
    kw, size, depth = detector_options(args)
    cfg = PipelineConfig(detector=args.detector, pixel_sigma=args.pixel_sigma,
                         track3d=Track3DConfig(model=args.model, max_coast_s=args.max_coast),
                         anchor=getattr(args, "anchor", "center"), detector_options=kw, object_size_m=size,
                         depth_m=depth)
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
    rec = RecordingReader(args.dir, realtime=realtime, require_calib=not args.calib)
    return rec, (load_calibration(args.calib) if args.calib else rec.calib)


def make_gate(args: argparse.Namespace):
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
    if "zmq_sent" in summary:
        lines.append(f"zmq: sent {summary['zmq_sent']}, dropped {summary['zmq_dropped']}, "
                     f"subscribers {summary['zmq_subscribers']}")
    stage = [f"{s} {summary[f'{s}_ms_median']:.2f}/{summary[f'{s}_ms_p99']:.2f}"
             for s in STAGES + ("latency",) if f"{s}_ms_median" in summary]
    lines.append("ms median/p99: " + ", ".join(stage))
    return "\n".join(lines)


def add_view_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--view", action="store_true", help="open the Open3D viewer (tracker3d view) on the published "
                   "tracks, as a separate process")


def require_display() -> None:
    """--view opens a window: refuse at once, in one line, where there is no display to open it on."""
    import os
    import sys

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise Tracker3DError("--view needs a display (neither DISPLAY nor WAYLAND_DISPLAY is set): drop --view, "
                             "or run `tracker3d view --snapshot PNG` for a headless picture")


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
