"""MOTChallenge text files: det.txt, gt.txt and tracker output.

Rows: `frame, id, bb_left, bb_top, bb_width, bb_height, conf, ...` (frames 1-based, pixels).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..detect.detections import Detections
from ..errors import Tracker3DError


@dataclass
class MotRows:
    """Columns of a MOT file; frame is 1-based as in the files."""

    frame: np.ndarray
    id: np.ndarray
    boxes: np.ndarray  # (N,4) xywh
    conf: np.ndarray
    cls: np.ndarray  # class (gt.txt column 8), -1 if absent

    def frames(self) -> dict[int, np.ndarray]:
        """Row indices per frame."""
        out: dict[int, list[int]] = {}
        for i, f in enumerate(self.frame):
            out.setdefault(int(f), []).append(i)
        return {k: np.asarray(v) for k, v in out.items()}

    def detections(self, frame: int, index: dict[int, np.ndarray]) -> Detections:
        """Frame `frame`'s rows as Detections; conf -1 (MOTChallenge's 'not given', e.g. a tracker's
        result used as detections) is a score of 1, other scores are clipped to [0, 1]."""
        idx = index.get(frame)
        if idx is None:
            return Detections.empty()
        b = self.boxes[idx]
        conf = self.conf[idx]
        return Detections.from_boxes(np.column_stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]]),
                                     np.where(conf == -1, 1.0, np.clip(conf, 0, 1)))


def read_mot(path: str | os.PathLike) -> MotRows:
    """Read det.txt / gt.txt / tracks.txt; Tracker3DError names the line and field on bad content."""
    path = Path(path)
    if not path.is_file():
        raise Tracker3DError(f"{path}: MOT file not found")
    rows = []
    names = ("frame", "id", "bb_left", "bb_top", "bb_width", "bb_height", "conf")
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = [p for p in line.replace(" ", ",").replace("\t", ",").split(",") if p != ""]
            if len(parts) < 6:
                raise Tracker3DError(f"{path}:{n}: expected at least 6 comma-separated fields, got {len(parts)}")
            vals = []
            for k, p in enumerate(parts[:8]):
                try:
                    vals.append(float(p))
                except ValueError:
                    name = names[k] if k < len(names) else f"column {k + 1}"
                    raise Tracker3DError(f"{path}:{n}: field '{name}': expected a number, got {p!r}") from None
            if vals[0] < 1 or vals[0] != int(vals[0]):
                raise Tracker3DError(f"{path}:{n}: field 'frame': expected an integer >= 1, got {parts[0]}")
            while len(vals) < 8:
                vals.append(1.0 if len(vals) == 6 else -1.0)
            rows.append(vals[:8])
    a = np.asarray(rows, dtype=np.float64).reshape(-1, 8)
    return MotRows(a[:, 0].astype(int), a[:, 1].astype(int), a[:, 2:6], a[:, 6], a[:, 7].astype(int))


def write_mot(path: str | os.PathLike, rows: list[tuple]) -> None:
    """Write tracker output rows (frame, id, x, y, w, h, conf) as MOTChallenge text (-1 for x,y,z)."""
    with open(path, "w", encoding="utf-8") as f:
        for fr, tid, x, y, w, h, conf in rows:
            f.write(f"{int(fr)},{int(tid)},{x:.3f},{y:.3f},{w:.3f},{h:.3f},{conf:.4f},-1,-1,-1\n")


def read_seqinfo(path: str | os.PathLike) -> dict:
    """frameRate (frames per second), seqLength, imWidth, imHeight (pixels) of a MOTChallenge
    seqinfo.ini; Tracker3DError naming the file and field when one is missing or not a number."""
    import configparser

    path = Path(path)
    cp = configparser.ConfigParser()
    try:
        ok = cp.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise Tracker3DError(f"{path}: not a seqinfo.ini ({type(exc).__name__})") from None
    if not ok or "Sequence" not in cp:
        raise Tracker3DError(f"{path}: no [Sequence] section (MOTChallenge seqinfo.ini expected)")
    out = {}
    for k in ("frameRate", "seqLength", "imWidth", "imHeight"):
        try:
            v = float(cp["Sequence"][k])
        except KeyError:
            raise Tracker3DError(f"{path}: field '{k}' missing") from None
        except ValueError:
            raise Tracker3DError(f"{path}: field '{k}': expected a number, got {cp['Sequence'][k]!r}") from None
        if not v > 0:
            raise Tracker3DError(f"{path}: field '{k}': expected a positive number, got {v:g}")
        out[k] = v if k == "frameRate" else int(v)
    return out

