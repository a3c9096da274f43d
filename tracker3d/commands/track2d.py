"""`tracker3d track2d`: the 2D tracker alone, on MOT detections or on one video."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Optional

import numpy as np

from streams import open_source
from streams.recording import read_frames_csv

from ..detect import make_detector
from ..errors import Tracker3DError
from ..progress import progress
from ..run2d import BOX_KINDS, run_2d, run_mot
from ..track2d.mot import read_mot, read_seqinfo, write_mot
from ..track2d.tracker import ByteTracker, TrackerConfig
from .common import DEFAULT_GATE, check_detector_args, detector_options, make_gate
from .paths import Output, check_outputs, source_files

HELP = "track one camera in 2D: MOT detections (--det) or a video/image glob (--video) -> MOT tracks"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("track2d", help=HELP, description=HELP)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--det", help="MOTChallenge det.txt")
    src.add_argument("--video", help="video file, image glob or camera index")
    p.add_argument("--detector", default="bg", help="bg | knn | hog | hog-full | marker | onnx:MODEL.onnx (with --video)")
    p.add_argument("--min-area", type=float, help="bg/knn/marker/hog: smallest blob, pixels^2 (bg default 6; "
                   "people at 768x576 seen from 10-30 m: about 300)")
    p.add_argument("--max-area", type=float, help="bg/knn/marker/hog: largest blob, pixels^2 (bg default 40000)")
    p.add_argument("--merge-px", type=float, help="bg/knn/hog: merge blobs whose boxes come within this many "
                   "pixels (fragments of one person; default 0 = off)")
    p.add_argument("--fps", type=float, help="frame rate of --det or an image folder (frame times); default: from the "
                   "data (seqinfo.ini beside it or one folder up, frames.csv), else 30; a video file's own rate wins")
    p.add_argument("--gate", choices=["hits", "persistence"],
                   help=f"which gate confirms tracks (default {DEFAULT_GATE}; hits for --det without --image-size)")
    p.add_argument("--min-hits", type=int, default=3, help="hit-count gate: hits to confirm a track")
    p.add_argument("--window", type=float, default=1.0, help="hit-count gate window, seconds")
    p.add_argument("--weights", help="persistence gate: weights file (default: the shipped model)")
    p.add_argument("--gate-on", type=float, help="persistence gate: score to become persistent")
    p.add_argument("--gate-off", type=float, help="persistence gate: score below which a track stops being persistent")
    p.add_argument("--gate-device", default="auto", help="persistence gate: auto | cpu | cuda")
    p.add_argument("--image-size", help="WxH pixels of the images behind --det (the persistence gate needs it)")
    p.add_argument("--lost-buffer", type=float, default=0.5, help="seconds a lost track is kept (default 0.5: "
                   "longer buffers re-acquired the wrong person after occlusions on MOT15 TUD boxes)")
    p.add_argument("--out", required=True, help="output tracks in MOTChallenge format")
    p.add_argument("--no-backfill", action="store_true", help="only rows from the frame a track is confirmed on (as a "
                   "live tracker reports); by default a confirmed track also gets rows for its earlier detections")
    p.add_argument("--box", choices=BOX_KINDS, default="detection", help="output box: the matched detection's own box "
                   "(default), or the track's SORT-style filtered box (centre, scale and aspect ratio filtered): better "
                   "for a detector whose boxes jitter (see README)")
    p.add_argument("--det-out", help="also write the detections (MOT det format; with --video)")
    p.set_defaults(func=run)


def data_fps(path: str | os.PathLike) -> Optional[tuple[float, str]]:
    """The frame rate a data set states for a det.txt, image glob or image folder: (fps, where
    from), from a MOTChallenge seqinfo.ini beside it or one folder up (SEQ/det/det.txt,
    SEQ/img1/), else from the times of a frames.csv beside it (`index,t0,...`, seconds: 1 / the
    median interval); None if neither is there."""
    p = Path(str(path))
    folder = p if p.is_dir() else p.parent
    while any(c in str(folder) for c in "*?["):  # an image glob: the folder it lies in
        folder = folder.parent
    for d in (folder, folder.parent):
        if (d / "seqinfo.ini").is_file():
            return read_seqinfo(d / "seqinfo.ini")["frameRate"], str(d / "seqinfo.ini")
    csv = folder / "frames.csv"
    if csv.is_file():
        t = np.array([row[1] for row in read_frames_csv(csv)], float)
        dt = np.diff(t[np.isfinite(t)])
        dt = dt[dt > 0]
        if len(dt):
            return 1.0 / float(np.median(dt)), str(csv)
    return None


def run(args: argparse.Namespace) -> int:
    check_outputs([Output("--out", args.out), Output("--det-out", args.det_out)],
                  [args.det, *source_files(args.video), args.weights])
    check_detector_args(args)
    cfg = TrackerConfig(lost_buffer_s=args.lost_buffer)
    size = None
    if args.image_size:
        try:
            size = tuple(int(v) for v in args.image_size.lower().split("x"))
            assert len(size) == 2 and min(size) > 0
        except (ValueError, AssertionError):
            raise Tracker3DError(f"--image-size {args.image_size}: expected WxH pixels, e.g. 1920x1080") from None
    if args.det and size is None:
        if args.gate == "persistence":
            raise Tracker3DError("--gate persistence with --det needs --image-size WxH (positions are normalised by it)")
        args.gate = args.gate or "hits"
    args.gate = args.gate or DEFAULT_GATE
    tracker = ByteTracker(cfg, make_gate(args), image_size=size, outside=bool(args.det))
    if args.fps is not None and not args.fps > 0:
        raise Tracker3DError(f"--fps {args.fps}: expected a positive frame rate")
    if args.fps is None and (args.det or not str(args.video).isdigit()):
        found = data_fps(args.det or args.video)
        if found:
            args.fps = found[0]
            print(f"frame rate {args.fps:.4g} fps from {found[1]}")
        elif args.det or not os.path.isfile(args.video):
            print("frame rate: none in the data (seqinfo.ini, frames.csv); assuming 30 fps (give --fps)")
    given = args.fps  # given, or found in the data
    args.fps = args.fps or 30.0
    if args.det:
        mot = read_mot(args.det)
        index = mot.frames()
        last = int(mot.frame.max()) if len(mot.frame) else 0
        res = run_mot(lambda f: mot.detections(f, index), last, args.fps, tracker,
                      progress=lambda it: progress(it, "track2d", unit="frame"), backfill=not args.no_backfill,
                      box=args.box)
        write_mot(args.out, res.rows)
        print(f"wrote {args.out}: {len({r[1] for r in res.rows})} tracks over {last} frames")
        return 0
    # A video file keeps its header's rate unless a rate was given or found in the data.
    is_video = os.path.isfile(str(args.video))
    src = open_source(args.video, fps=given if is_video else args.fps)
    if is_video and given is None and getattr(src, "fps", None):
        print(f"frame rate {src.fps:.4g} fps from the video's header")
    detector = make_detector(args.detector, **detector_options(args)[0])
    res = run_2d(((f.index, f.t, f.image) for f in src), detector, tracker, keep_detections=bool(args.det_out),
                 progress=lambda it: progress(it, "track2d", unit="frame"), backfill=not args.no_backfill,
                 box=args.box)
    src.close()
    if not res.track_ms:
        raise Tracker3DError(f"{args.video}: no frames")
    write_mot(args.out, res.rows)
    if args.det_out:
        det_rows = []
        for k, d in res.detections.items():
            for b, s in zip(d.boxes, d.scores):
                det_rows.append((k + 1, -1, b[0], b[1], b[2] - b[0], b[3] - b[1], s))
        write_mot(args.det_out, det_rows)
    print(f"wrote {args.out}: {len({r[1] for r in res.rows})} tracks over {len(res.track_ms)} frames; "
          f"detect {np.median(res.detect_ms):.2f} ms, track {np.median(res.track_ms):.2f} ms per frame (median)")
    return 0
