"""`tracker3d bench`: reproducible speed figures, always beside accuracy and the machine."""
from __future__ import annotations

import argparse
import time

from ..bench.detect_speed import detect_rows
from ..bench.machine import machine
from ..progress import progress
from .logonce import notes_said_once
from .paths import write_json

HELP = "benchmark detection and tracking (speed with accuracy); --quick in under a minute"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help=HELP, description=HELP)
    p.add_argument("--quick", action="store_true", help="short scenes, no parameter sweep")
    p.add_argument("--json", help="write all figures here as JSON")
    p.add_argument("--wildtrack", metavar="DIR", help="only the real-data section: WildTrack C1-C2 detections folders "
                   "(DIR/clean and DIR/noisy, or one folder), 3D ground-plane and 2D view-0 scores with SORT beside")
    p.add_argument("--real", action="store_true", help="only the real-footage section: trackers on the real boxes of "
                   "TUD-Campus/TUD-Stadtmitte (tests/data/motmetrics_tud) vs SORT/ByteTrack/OC-SORT, and the "
                   "detectors on OpenCV's vtest.avi (PETS09 S2.L1; see --vtest)")
    p.add_argument("--vtest", metavar="AVI|DEB", help="with --real: vtest.avi, or Debian's opencv-doc .deb holding "
                   "it (default: where opencv-doc installs it; without it the detector rows are skipped with a note)")
    p.set_defaults(func=run)


def _have_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _finish(res: dict, t_start: float, json_path) -> int:
    """Print the wall time and write the figures as JSON when asked."""
    res["wall_s"] = time.perf_counter() - t_start
    print(f"\ntook {res['wall_s']:.0f} s")
    if json_path:
        write_json(json_path, res)
    return 0


def run_wildtrack(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..bench.peers import have_trackers
    from ..bench.realdata import format_rows, wildtrack_rows
    from .paths import JSON_FILES, Output, check_outputs

    folder = Path(args.wildtrack)
    check_outputs([Output("--json", args.json, JSON_FILES)],
                  [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else [folder])
    t_start = time.perf_counter()
    res: dict = {"machine": machine()}
    rows = wildtrack_rows(args.wildtrack, progress=lambda it: progress(it, "wildtrack"))
    res["wildtrack"] = rows
    print(f"WildTrack C1-C2 ({args.wildtrack}): 3D ground plane = x, y within 0.5 m, persons seen in either view; "
          "2D view C = IoU 0.5 against gtC.txt; percent")
    print(format_rows(rows))
    if not have_trackers():
        print("SORT rows skipped: roboflow `trackers` is not installed (make install-bench)")
    return _finish(res, t_start, args.json)


def run_real(args: argparse.Namespace) -> int:
    from ..bench import realfootage as rf
    from ..errors import Tracker3DError
    from .paths import JSON_FILES, Output, check_outputs

    check_outputs([Output("--json", args.json, JSON_FILES)], [])
    named = rf.find_vtest(args.vtest) if args.vtest else None  # unusable: said now, not after the trackers
    t_start = time.perf_counter()
    res: dict = {"machine": machine()}
    print(f"machine: {res['machine']}\n")
    res["trackers"] = rf.tracker_rows(progress=lambda it: progress(it, "trackers"))
    print("2D trackers on real boxes (TUD-Campus, TUD-Stadtmitte: MOT15 ground truth; detections = the boxes of "
          "the tracker result motmetrics 1.4.0 ships, IDs dropped; '+0.1 jitter': the same boxes with a detector's "
          "jitter added, centre N(0, 5 %) and width, height x exp(N(0, 10 %)) each, seed 0; IoU 0.5; percent)")
    print(rf.format_trackers(res["trackers"]))
    from ..bench.peers import have_trackers

    if not have_trackers():
        print("SORT/ByteTrack/OC-SORT rows skipped: roboflow `trackers` is not installed (make install-bench)")
    try:
        video = named or rf.find_vtest(None)
    except Tracker3DError as exc:
        print(f"\ndetector rows skipped: {exc}")
    else:
        res["detectors"] = rf.detector_rows(video, progress=lambda it: progress(it, "detectors"))
        print(f"\ndetectors on {video} (PETS09 S2.L1 view 1, 768x576, 10 fps; no ground truth shipped: ms per frame "
              "on one OpenCV thread, detections per frame, first detection (warm-up), most detections in one frame "
              "during the lighting change (frames 60-160), recall/precision at IoU 0.5 on 30 people hand-labelled "
              "in 5 frames)")
        print(rf.format_detectors(res["detectors"]))
        res["tracked"] = rf.tracked_rows(video, progress=lambda it: progress(it, "track2d --video"))
        print("\nconfirmed tracks of `tracker3d track2d --video` (defaults) on the same labelled people")
        print(rf.format_tracked(res["tracked"]))
    return _finish(res, t_start, args.json)


def run(args: argparse.Namespace) -> int:
    # The bench runs the loop dozens of times: each run's notes (the learned gate falling back at
    # WildTrack's 2 fps, the gate's device) are said once, not once a run among the tables.
    with notes_said_once():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from ..errors import Tracker3DError

    if args.vtest and not args.real:
        raise Tracker3DError("--vtest: used only with --real (the real-footage section)")
    if args.real:
        return run_real(args)
    if args.wildtrack:
        return run_wildtrack(args)
    from ..bench import peers
    from .paths import JSON_FILES, Output, check_outputs

    check_outputs([Output("--json", args.json, JSON_FILES)], [])

    t_start = time.perf_counter()
    res: dict = {"machine": machine(), "quick": bool(args.quick)}
    print(f"machine: {res['machine']}\n")

    print("detection (background subtraction, one core, 10 objects; each row the lower of two runs, the second "
          "in reverse order)")
    res["detect"] = detect_rows([(640, 480, 1.0), (1280, 720, 1.0), (1280, 720, 0.5)], frames=90 if args.quick else 200)
    for d in res["detect"]:
        scaled = f" at --detect-scale {d['detect_scale']:g}" if d["detect_scale"] != 1.0 else ""
        print(f"  {d['resolution']:>9s}{scaled}: {d['ms_median']:.2f} ms median, {d['ms_p99']:.2f} ms p99, "
              f"recall {d['recall']:.3f}")

    from ..bench.pipeline_bench import format_p99, format_scaling, pipeline_rows
    from ..bench.pipeline_bench import format_rows as format_pipeline
    from .signals import STOP

    res["pipeline"] = pipeline_rows(args.quick, progress=lambda it: progress(it, "pipeline"), stop=STOP.requested)
    print("\nstereo pipeline end to end (sim scenes; 'live' = rendered and paced at 30 fps like a camera, latency "
          "= capture -> published; 'fast' = the scene's recording (MJPEG, written first, not timed) replayed as "
          "fast as possible, as `tracker3d replay --fast` does; pairs/s, latency and stage times over the pairs after "
          "the detector's 2 s warm-up (the whole run's pairs/s in the JSON: pairs_per_s_all); "
          "gate: learn = learned persistence gate (the default), "
          "hits = min_hits 3; stage times ms median; a+3d/tr = association + 3D ms per live 3D track; "
          "RMSE of 3D tracks vs ground truth, "
          "bound = triangulation limit for the 2D noise measured)")
    print(format_pipeline(res["pipeline"]))
    scaling = format_scaling(res["pipeline"])
    if scaling:
        print(scaling)
    print("\nper-stage p99 (ms) of the same runs")
    print(format_p99(res["pipeline"]))

    from ..bench.gate_speed import format_rows as format_gates
    from ..bench.gate_speed import gate_speed

    counts = (10, 200) if args.quick else (10, 50, 200, 1000)
    devices = ["cpu"] + (["cuda"] if _have_cuda() else [])
    res["gate"] = [gate_speed(n, dev, frames=10 if args.quick else 30)
                   for dev in devices for n in progress(counts, f"gate {dev}")]
    print("\nlearned persistence gate per frame (tracks with 64-step histories; each frame scores one new row "
          "per track from cached keys/values; 'full pass' = one forward over all 64 steps; hit-count rule beside)")
    print(format_gates(res["gate"]))

    seconds = 4.0 if args.quick else 10.0
    scenes = ("default",) if args.quick else peers.SCENES
    seeds = peers.REPORT_SEEDS[:1] if args.quick else peers.REPORT_SEEDS
    if peers.have_trackers():
        bt = None
        if not args.quick:
            tune = [s for sc in ("default", "walkers", "throws", "swarm") for sd in peers.TUNING_SEEDS
                    for s in peers.make_streams(sc, sd, seconds=8.0)]
            bt, bt_hota = peers.sweep_bytetrack(tune, progress=lambda it: progress(it, "ByteTrack sweep"))
            res["bytetrack_sweep"] = {"best": bt, "tuning_hota": bt_hota, "grid": peers.BYTETRACK_SWEEP}
            print(f"\nByteTrack sweep on tuning seeds {peers.TUNING_SEEDS}: best {bt} (HOTA {bt_hota:.3f})")
        rows = peers.compare(scenes, seeds, seconds, bytetrack_params=bt,
                             progress=lambda it: progress(it, "2D trackers"))
        res["track2d"] = rows
        print("\n2D tracking on the same detections (both cameras; HOTA/MOTA/IDF1 vs sim ground truth, "
              "centroid similarity 1 - d/10 px; ms/frame = tracker update, median)")
        print(peers.format_rows(rows))
    else:
        res["track2d"] = "skipped: roboflow trackers not installed (make install-bench)"
        print("\n2D tracker comparison skipped: roboflow `trackers` is not installed (make install-bench)")
    res["peak_rss_mb"] = peak_rss_mb()
    res["wall_s"] = time.perf_counter() - t_start
    print(f"\npeak memory (RSS) of this process: {res['peak_rss_mb']:.0f} MB")
    print(f"\nbench took {res['wall_s']:.0f} s")
    if args.json:
        write_json(args.json, res)
    return 0
