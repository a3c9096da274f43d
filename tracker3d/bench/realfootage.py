"""The real-footage section of `tracker3d bench --real`: real boxes and real video that the
package registries ship (see tests/data/motmetrics_tud/README.md and tests/data/pets09_vtest/).

1. Trackers on real boxes with public ground truth: TUD-Campus and TUD-Stadtmitte (MOTChallenge
   2D MOT 2015 gt.txt, from the motmetrics 1.4.0 wheel), detections = the boxes of the real
   tracker result the wheel ships (IDs dropped, conf 1; that result as shipped is a row too). Ours as `tracker3d track2d --det
   DET --fps F` runs it (F from the folder's seqinfo.ini; rows with the detection's box and
   with `--box filtered`), SORT (max_age 1, min_hits 3, IoU 0.3: the SORT paper's settings),
   ByteTrack and OC-SORT (roboflow `trackers` defaults at the sequence's frame rate), all scored
   here with trackeval at IoU 0.5 against gt.txt; then all again on the same boxes with a CNN
   detector's jitter added (those boxes are already smoothed by the tracker that made them).
2. Detectors on real video: OpenCV's vtest.avi (PETS 2009 S2.L1 view 1, 795 frames, 768x576,
   10 fps; Debian opencv-doc 4.6.0+dfsg-12), which ships no ground truth: per detector, ms per
   frame (one OpenCV thread), detections per frame, the time of the first detection (the
   warm-up), the most detections in one frame during the lighting change (frames 60-160), and
   recall/precision at IoU 0.5 on 30 people hand-labelled in five frames
   (tests/data/pets09_vtest/people.csv). No MOTA: no ground truth to score tracks against.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import Tracker3DError
from ..evaluation.eval2d import FrameObjects, evaluate_2d, mot_frames
from ..track2d.mot import read_mot, read_seqinfo, write_mot
from .peers import ROBOFLOW_KINDS, have_trackers, track_boxes

TUD = ("TUD-Campus", "TUD-Stadtmitte")
DATA = Path(__file__).resolve().parents[2] / "tests" / "data"
VTEST_SIZE = 8131690
VTEST_PLACES = ("/usr/share/doc/opencv-doc/examples/data/vtest.avi", "/usr/share/opencv4/samples/data/vtest.avi")
VTEST_HELP = ("vtest.avi not found: `apt-get download opencv-doc` and pass --vtest opencv-doc_*.deb (or the "
              "extracted x/usr/share/doc/opencv-doc/examples/data/vtest.avi)")
PEOPLE_CSV = DATA / "pets09_vtest" / "people.csv"  # hand-labelled people in five frames of vtest.avi
SORT_PAPER = {"lost_track_buffer": 1, "minimum_consecutive_frames": 3, "minimum_iou_threshold": 0.3}


def tud_detections(folder: Path) -> dict[int, np.ndarray]:
    """The real boxes of test.txt per 1-based frame (N,4) xyxy, IDs dropped."""
    m = read_mot(folder / "test.txt")
    out: dict[int, list] = {}
    for f, (x, y, w, h) in zip(m.frame, m.boxes):
        out.setdefault(int(f), []).append((x, y, x + w, y + h))
    return {f: np.asarray(b, float) for f, b in out.items()}


def _score(folder: Path, tracks: dict[int, FrameObjects], n: int) -> dict:
    gt = {f - 1: o for f, o in mot_frames(read_mot(folder / "gt.txt")).items()}
    return evaluate_2d(gt, tracks, frames=list(range(n)), kind="iou")


def jittered(dets: dict[int, np.ndarray], rel: float, seed: int = 0) -> dict[int, np.ndarray]:
    """The boxes with a detector's jitter added (seeded): centre moved by N(0, rel/2) of the
    width and height, width and height each scaled by exp(N(0, rel)), independently."""
    rng = np.random.default_rng(seed)
    out = {}
    for f in sorted(dets):
        b = dets[f]
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        cx = (b[:, 0] + b[:, 2]) / 2 + rng.normal(0, rel / 2, len(b)) * w
        cy = (b[:, 1] + b[:, 3]) / 2 + rng.normal(0, rel / 2, len(b)) * h
        w, h = w * np.exp(rng.normal(0, rel, len(b))), h * np.exp(rng.normal(0, rel, len(b)))
        out[f] = np.column_stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    return out


def ours(folder: Path, dets: dict[int, np.ndarray], n: int, fps: Optional[float] = None,
         box: str = "detection") -> dict:
    """`tracker3d track2d --det det.txt --box BOX` (with --fps F when given; else from seqinfo.ini)."""
    from ..commands import track2d as cmd

    p = argparse.ArgumentParser()
    cmd.add_parser(p.add_subparsers())
    with tempfile.TemporaryDirectory() as tmp:
        det = Path(tmp) / "det.txt"
        write_mot(det, [(f, -1, b[0], b[1], b[2] - b[0], b[3] - b[1], 1.0) for f in sorted(dets) for b in dets[f]])
        out = Path(tmp) / "tracks.txt"
        argv = ["track2d", "--det", str(det), "--out", str(out), "--box", box] + (["--fps", str(fps)] if fps else [])
        args = p.parse_args(argv)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            args.func(args)
        tracks = {f - 1: o for f, o in mot_frames(read_mot(out)).items()}
    return _score(folder, tracks, n)


def roboflow(folder: Path, dets: dict[int, np.ndarray], n: int, kind: str, fps: float) -> dict:
    """SORT / ByteTrack / OC-SORT from roboflow `trackers`, frame by frame on the same boxes."""
    empty = np.zeros((0, 4))
    frames = [(dets.get(f, empty), np.ones(len(dets.get(f, empty)))) for f in range(1, n + 1)]
    out = track_boxes(kind, frames, fps, **(SORT_PAPER if kind == "SORT" else {}))
    return _score(folder, dict(enumerate(out)), n)


JITTER = 0.1  # the jittered copy of each sequence: boxes jitter like a CNN detector's (see jittered)


def tracker_rows(root: Path = DATA / "motmetrics_tud", progress: Optional[Callable] = None,
                 jitter: Optional[float] = JITTER) -> list[dict]:
    """Rows {sequence, method, metrics...} for ours (detection and filtered boxes), SORT, ByteTrack
    and OC-SORT on each TUD sequence, and again on its boxes jittered by `jitter` (None: not)."""
    rows = []
    peers = ROBOFLOW_KINDS if have_trackers() else ()
    for seq in (progress(TUD) if progress else TUD):
        folder = root / seq
        info = read_seqinfo(folder / "seqinfo.ini")
        n, fps = info["seqLength"], info["frameRate"]
        real = tud_detections(folder)
        own = {f - 1: o for f, o in mot_frames(read_mot(folder / "test.txt")).items()}
        rows.append({"sequence": seq, "method": "test.txt as shipped", **_score(folder, own, n)})
        for name, dets in [(seq, real)] + ([(f"{seq} +{jitter:g} jitter", jittered(real, jitter))] if jitter else []):
            rows.append({"sequence": name, "method": "tracker3d track2d", **ours(folder, dets, n, fps)})
            rows.append({"sequence": name, "method": "track2d --box filtered", **ours(folder, dets, n, fps, "filtered")})
            for kind in peers:
                rows.append({"sequence": name, "method": kind, **roboflow(folder, dets, n, kind, fps)})
    return rows


VTEST_IN_DEB = "./usr/share/doc/opencv-doc/examples/data/vtest.avi"


def find_vtest(path: Optional[str], cache: Optional[Path] = None) -> Path:
    """The vtest.avi given (or the one inside an opencv-doc .deb given: extracted once, with
    `dpkg-deb --fsys-tarfile`, into `cache`, default ~/.cache/tracker3d), or one of the places
    Debian/Ubuntu packages install it."""
    if path and str(path).endswith(".deb") and Path(path).is_file():
        return _from_deb(Path(path), cache or Path.home() / ".cache" / "tracker3d")
    for p in ([path] if path else list(VTEST_PLACES)):
        if p and Path(p).is_file():
            return Path(p)
    raise Tracker3DError(f"{path}: {VTEST_HELP}" if path else VTEST_HELP)


def _from_deb(deb: Path, cache: Path) -> Path:
    import subprocess
    import tarfile

    out = cache / "vtest.avi"
    if out.is_file() and out.stat().st_size == VTEST_SIZE:
        return out
    cache.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise Tracker3DError(f"{deb}: cannot read as a .deb (dpkg-deb: {type(exc).__name__})") from None
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        try:
            member = tar.getmember(VTEST_IN_DEB)
        except KeyError:
            raise Tracker3DError(f"{deb}: no {VTEST_IN_DEB[2:]} inside (expected Debian's opencv-doc)") from None
        data = tar.extractfile(member).read()
    tmp = out.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(out)
    return out


def labelled_people(path: Path = PEOPLE_CSV) -> dict[int, np.ndarray]:
    """0-based frame -> (N,4) xyxy boxes of the hand-labelled people."""
    rows = np.loadtxt(path, delimiter=",", comments="#", skiprows=4, ndmin=2)
    return {int(f): rows[rows[:, 0] == f, 1:5] for f in np.unique(rows[:, 0])}


def _pr(boxes: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    """(true positives, detections) at IoU 0.5, one-to-one."""
    from scipy.optimize import linear_sum_assignment

    from ..track2d.tracker import iou_matrix

    if len(boxes) == 0:
        return 0, 0
    iou = iou_matrix(truth, boxes)
    r, c = linear_sum_assignment(-iou)
    return int((iou[r, c] >= 0.5).sum()), len(boxes)


DETECTORS = {  # name -> (make_detector spec, options)
    "bg (defaults)": ("bg", {}),
    "bg --min-area 300": ("bg", {"min_area": 300.0}),
    "bg --min-area 300 --merge-px 6": ("bg", {"min_area": 300.0, "merge_px": 6.0}),
    # Before issue 15: no lighting compensation, no flutter map, a 60-frame warm-up (6 s at 10 fps).
    "bg as before (no aids, 60-frame warm-up)": ("bg", {"compensate": False, "flutter_hz": 0.0, "warmup_s": 6.0}),
    "hog (on moving regions)": ("hog", {}),
    "hog-full (2x, every 25th frame)": ("hog-full", {}),
}


def detector_rows(video: Path, frames: Optional[int] = None, progress: Optional[Callable] = None) -> list[dict]:
    """Each detector over the video: ms per frame (one OpenCV thread), detections per frame, the
    first detection (s), the most detections in a frame of 60-160, and recall/precision at IoU
    0.5 over the hand-labelled frames (hog: detections scoring >= 0.5)."""
    import cv2

    from ..detect import make_detector

    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    imgs = []
    while frames is None or len(imgs) < frames:
        ok, img = cap.read()
        if not ok:
            break
        imgs.append(img)
    cap.release()
    if len(imgs) < 200:
        raise Tracker3DError(f"{video}: {len(imgs)} frames; expected vtest.avi (795 frames)")
    people = {k: b for k, b in labelled_people().items() if k < len(imgs)}
    n_people = sum(len(b) for b in people.values())
    prev = cv2.getNumThreads()
    cv2.setNumThreads(1)
    rows = []
    try:
        for name in (progress(list(DETECTORS)) if progress else DETECTORS):
            spec, kw = DETECTORS[name]
            det = make_detector(spec, **kw)
            step = 25 if spec == "hog-full" else 1
            ms, counts, first, tp, nd = [], [], None, 0, 0
            todo = sorted(set(range(0, len(imgs), step)) | (set(people) if step > 1 else set()))
            for k in todo:
                t0 = time.perf_counter()
                d = det.detect(imgs[k], k / fps)
                ms.append((time.perf_counter() - t0) * 1000)
                counts.append(len(d))
                if first is None and len(d):
                    first = k / fps
                if k in people:
                    a, b = _pr(d.boxes[d.scores >= 0.5] if spec.startswith("hog") else d.boxes, people[k])
                    tp, nd = tp + a, nd + b
            c = np.asarray(counts)
            light = c[60 // step:160 // step + 1] if step == 1 else np.zeros(0)
            rows.append({"detector": name, "ms_median": float(np.median(ms[int(3 * fps) // step:] or ms)),
                         "dets_per_frame": float(c.mean()), "first_s": first,
                         "max_dets_light": int(light.max()) if len(light) else None,
                         "recall": tp / max(n_people, 1), "precision": tp / nd if nd else float("nan"),
                         "labelled_people": n_people, "labelled_frames": sorted(people)})
    finally:
        cv2.setNumThreads(prev)
    return rows


TRACKED = {"bg --min-area 300": ["--detector", "bg", "--min-area", "300"], "hog": ["--detector", "hog"]}


def tracked_rows(video: Path, progress: Optional[Callable] = None) -> list[dict]:
    """`tracker3d track2d --video VIDEO --detector ...` (its defaults), its reported boxes scored
    on the hand-labelled frames: recall/precision at IoU 0.5 of what a user gets out (confirmed
    tracks; no identity measure with five frames)."""
    from ..commands import track2d as cmd

    people = labelled_people()
    rows = []
    for name in (progress(list(TRACKED)) if progress else TRACKED):
        p = argparse.ArgumentParser()
        cmd.add_parser(p.add_subparsers())
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "tracks.txt"
            args = p.parse_args(["track2d", "--video", str(video), "--out", str(out)] + TRACKED[name])
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                args.func(args)
            tracks = mot_frames(read_mot(out))
        tp = nd = 0
        for k, truth in people.items():
            o = tracks.get(k + 1)
            a, b = _pr(o.boxes if o is not None else np.zeros((0, 4)), truth)
            tp, nd = tp + a, nd + b
        n = sum(len(b) for b in people.values())
        rows.append({"detector": f"track2d --video, {name}", "recall": tp / n, "precision": tp / nd if nd else float("nan"),
                     "tracks": len({i for o in tracks.values() for i in o.ids})})
    return rows


def format_tracked(rows: list[dict]) -> str:
    head = f"{'what a user gets':38s} {'recall':>7s} {'prec':>7s} {'tracks':>7s}"
    return "\n".join([head] + [f"{r['detector']:38s} {r['recall']:7.2f} {r['precision']:7.2f} {r['tracks']:7d}"
                               for r in rows])


def format_trackers(rows: list[dict]) -> str:
    head = f"{'sequence':26s} {'method':22s} {'MOTA':>6s} {'IDF1':>6s} {'HOTA':>6s} {'IDSW':>5s} {'FP':>5s} {'FN':>5s}"
    return "\n".join([head] + [f"{r['sequence']:26s} {r['method']:22s} {100 * r['MOTA']:6.1f} {100 * r['IDF1']:6.1f} "
                               f"{100 * r['HOTA']:6.1f} {r['IDSW']:5d} {r['FP']:5d} {r['FN']:5d}" for r in rows])


def format_detectors(rows: list[dict]) -> str:
    head = (f"{'detector':38s} {'ms/frame':>8s} {'dets/fr':>7s} {'first s':>7s} {'max 60-160':>10s} "
            f"{'recall':>7s} {'prec':>7s}")
    lines = [head]
    for r in rows:
        first = f"{r['first_s']:7.1f}" if r["first_s"] is not None else f"{'-':>7s}"
        light = f"{r['max_dets_light']:10d}" if r["max_dets_light"] is not None else f"{'-':>10s}"
        lines.append(f"{r['detector']:38s} {r['ms_median']:8.1f} {r['dets_per_frame']:7.2f} {first} {light} "
                     f"{r['recall']:7.2f} {r['precision']:7.2f}")
    return "\n".join(lines)
