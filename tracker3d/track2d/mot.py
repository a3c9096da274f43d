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
        idx = index.get(frame)
        if idx is None:
            return Detections.empty()
        b = self.boxes[idx]
        return Detections.from_boxes(np.column_stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]]),
                                     np.clip(self.conf[idx], 0, 1))


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
