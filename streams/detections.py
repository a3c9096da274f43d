"""Detections instead of images: what a user's own detector hands over, per camera and per time.

- `Boxes2D`: one camera's boxes at one capture time (pixels, xyxy), scores and optional classes.
- `DetectionPair`: the two cameras' boxes at (about) the same time: the detections twin of
  `FramePair`, accepted by the stereo loop in its place.
- `read_det_file`: a MOTChallenge detection file `frame,id,x,y,w,h,conf[,class,...]` (frame
  1-based; x, y the box's top-left corner, w, h its size, pixels; column 8, if present and >= 0,
  is the class id; -1 or absent = no class).
- `DetectionFolder`: a *detections folder* (calib.yaml or calib.toml, frames.csv, det0.txt,
  det1.txt; optional gt.csv) or loose files, read as a lossless stereo source.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from calib import StereoCalibration, load_calibration

from .base import Pacer
from .errors import StreamError
from .mot import MotFormat, read_mot_table
from .pairing import StereoSource
from .recording import read_frames_csv

log = logging.getLogger(__name__)

DET_FIELDS = ("frame", "id", "x", "y", "w", "h", "conf", "class")
CALIB_NAMES = ("calib.yaml", "calib.yml", "calib.toml", "calib.json", "calib.xml")


@dataclass
class Boxes2D:
    """N boxes from one camera at one time. boxes: (N,4) x0,y0,x1,y1 pixels (top-left, bottom-right);
    scores: (N,) in [0,1]; classes: (N,) labels (int ids or strings) or None when not given."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> "Boxes2D":
        return cls(np.zeros((0, 4)), np.zeros(0))

    @classmethod
    def from_xywh(cls, xywh, scores=None, classes=None) -> "Boxes2D":
        b = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
        xyxy = np.column_stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]])
        s = np.ones(len(b)) if scores is None else np.asarray(scores, dtype=np.float64).reshape(len(b))
        c = None if classes is None else np.asarray(classes, dtype=object).reshape(len(b))
        return cls(xyxy, s, c)


@dataclass
class DetectionPair:
    """Both cameras' detections for one stereo time step. A side is None when that camera gave
    nothing for this step (its time is then NaN); an empty Boxes2D means "looked, saw nothing"."""

    index: int
    t0: float
    t1: float
    boxes0: Optional[Boxes2D]
    boxes1: Optional[Boxes2D]
    wall: float = float("nan")  # wall-clock time the detections arrived (time.time()), for latency

    @property
    def t(self) -> float:
        """Camera 0's capture time, or camera 1's when camera 0 is missing (seconds)."""
        return self.t0 if self.boxes0 is not None else self.t1

    @property
    def skew(self) -> float:
        return self.t1 - self.t0 if (self.boxes0 is not None and self.boxes1 is not None) else float("nan")


DET_FORMAT = MotFormat("detection file", DET_FIELDS, " frame,id,x,y,w,h[,conf,class]", positive_size=True)


def read_det_file(path: str | os.PathLike) -> dict[int, Boxes2D]:
    """A MOTChallenge detection file as {1-based frame: Boxes2D}. Columns: frame, id (ignored),
    x, y, w, h (pixels, top-left + size), conf (default 1; -1 = not given = 1), class (column 8: an
    integer id, -1 or absent = none). StreamError names the file, line and field on bad content
    (the parsing is streams.mot's)."""
    a = read_mot_table(path, DET_FORMAT)
    # conf -1 is MOTChallenge's "not given" (a tracker's output used as detections): score 1,
    # as read_mot does; clipped to 0 it made every box low-score
    conf = np.clip(np.where(a[:, 6] == -1, 1.0, a[:, 6]), 0.0, 1.0)
    frames = a[:, 0].astype(np.int64)
    order = np.argsort(frames, kind="stable")  # each frame's rows in file order
    uniq, first, counts = np.unique(frames, return_index=True, return_counts=True)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = {}
    for k in np.argsort(first, kind="stable"):  # frames in the order they first appear
        m = order[starts[k]:starts[k] + counts[k]]
        cls = a[m, 7]
        out[int(uniq[k])] = Boxes2D.from_xywh(a[m, 2:6], conf[m],
                                              None if (cls < 0).all() else [-1 if c < 0 else int(c) for c in cls])
    return out


def find_calibration(d: Path) -> Path:
    for name in CALIB_NAMES:
        if (d / name).is_file():
            return d / name
    raise StreamError(f"{d}: no calibration ({' or '.join(CALIB_NAMES[:3])}; or pass --calib FILE)")


def is_detections_folder(path: str | os.PathLike) -> bool:
    """A folder with det0.txt and det1.txt is a detections folder; so is one with either and no
    camera video (cam0.*, cam1.*), so that the missing file is the one named."""
    d = Path(path)
    has = [(d / f"det{c}.txt").is_file() for c in (0, 1)]
    if all(has):
        return True
    return any(has) and not any(d.glob("cam0.*")) and not any(d.glob("cam1.*"))


class DetectionFolder(StereoSource):
    """Two cameras' detection files replayed as a lossless stereo source of DetectionPairs.

    Times come from frames.csv (`index,t0,t1`; pair `index` holds detection frame index + 1) or,
    without one, from `fps` (t = (frame - 1) / fps for both cameras). A frame listed in
    frames.csv with no rows in a det file is an empty Boxes2D (nothing detected), not a missing
    camera; an empty t0/t1 is a missing camera.
    """

    images = False

    def __init__(self, det0: str | os.PathLike, det1: str | os.PathLike,
                 calib: Optional[str | os.PathLike | StereoCalibration] = None,
                 frames: Optional[str | os.PathLike] = None, fps: Optional[float] = None,
                 realtime: bool = False, name: str = ""):
        super().__init__()
        self.dir = Path(det0).parent
        self.name = name or str(self.dir)
        self.dets = (read_det_file(det0), read_det_file(det1))
        if isinstance(calib, StereoCalibration):
            self.calib: Optional[StereoCalibration] = calib
        else:
            self.calib = load_calibration(calib) if calib is not None else None
        if frames is not None:
            self.rows = read_frames_csv(Path(frames))
            if len(self.rows) > 1:
                dts = np.diff([r[1] if math.isfinite(r[1]) else r[2] for r in self.rows])
                dts = dts[np.isfinite(dts) & (dts > 0)]
                self.fps = float(1.0 / np.median(dts)) if len(dts) else float(fps or 30.0)
            else:
                self.fps = float(fps or 30.0)
        elif fps is not None:
            if not (fps > 0 and math.isfinite(fps)):
                raise StreamError(f"--fps {fps}: expected a positive number of frames per second")
            last = max([max(d) for d in self.dets if d] or [0])
            self.fps = float(fps)
            self.rows = [(i, i / self.fps, i / self.fps) for i in range(last)]
        else:
            raise StreamError("detection files need their times: give --frames frames.csv or --fps N")
        listed = {r[0] + 1 for r in self.rows}
        self.unlisted = tuple(sum(1 for f in d if f not in listed) for d in self.dets)
        for cam, n in enumerate(self.unlisted):
            if n:
                log.warning("%s: %d frames of det%d have no row in the frame times (frames.csv index = frame - 1); "
                            "they are not tracked", self.name, n, cam)
        if self.calib is not None:
            self.image_size = self.calib.cam0.image_size
        self._pacer = Pacer() if realtime else None
        self._i = 0
        self.truncated = 0

    @classmethod
    def open_folder(cls, path: str | os.PathLike, calib: Optional[str | os.PathLike] = None,
                    realtime: bool = False) -> "DetectionFolder":
        """A detections folder: det0.txt, det1.txt, frames.csv and a calibration (or `calib`)."""
        d = Path(path)
        if not d.is_dir():
            raise StreamError(f"{d}: is a file, not a detections folder (det0.txt, det1.txt, frames.csv, calibration)"
                              if d.exists() else f"{d}: detections folder not found")
        for name in ("det0.txt", "det1.txt", "frames.csv"):
            if not (d / name).is_file():
                raise StreamError(f"{d / name}: missing (a detections folder has det0.txt, det1.txt, frames.csv "
                                  f"and calib.yaml or calib.toml)")
        return cls(d / "det0.txt", d / "det1.txt", calib if calib is not None else find_calibration(d),
                   frames=d / "frames.csv", realtime=realtime, name=str(d))

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, timeout: Optional[float] = None) -> Optional[DetectionPair]:
        if self._i >= len(self.rows):
            return None
        idx, t0, t1 = self.rows[self._i]
        self._i += 1
        empty = Boxes2D.empty()
        b0 = None if math.isnan(t0) else self.dets[0].get(idx + 1, empty)
        b1 = None if math.isnan(t1) else self.dets[1].get(idx + 1, empty)
        pair = DetectionPair(idx, t0, t1, b0, b1)
        return self._hand_out(pair, self._pacer)
