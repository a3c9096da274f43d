"""MOTChallenge text files, read and written in one place.

Rows: `frame, id, x, y, w, h, conf[, class/x, ...]` (frame 1-based; x, y the box's top-left
corner, w, h its size, pixels), comma-, space- or tab-separated; blank lines and `#` comments
are skipped. Used by `read_det_file` (detections folders, streams.detections) and by tracker3d's
`track2d.mot` (det.txt, gt.txt and tracker output), each with its own field names and error type
(`MotFormat`), so the messages name what the user gave.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import StreamError

log = logging.getLogger(__name__)

COLUMNS = 8  # frame, id, x, y, w, h, conf, class (what is read; later columns are ignored)


@dataclass(frozen=True)
class MotFormat:
    """How one kind of MOT file is named in errors and what it must hold."""

    what: str  # "MOT file", "detection file": in "PATH: WHAT not found"
    fields: tuple[str, ...]  # the names of the 8 columns, for "field 'NAME': expected a number"
    hint: str = ""  # appended to "expected at least 6 comma-separated fields"
    positive_size: bool = False  # w and h must be > 0
    error: type[Exception] = StreamError


def read_mot_table(path: str | os.PathLike, fmt: MotFormat) -> np.ndarray:
    """(N, 8) float64 rows [frame, id, x, y, w, h, conf, class] of a MOT file, in file order;
    a missing conf is 1, a missing class -1. fmt.error names the file, line and field on bad
    content: fewer than 6 fields, a field that is not a finite number, a frame that is not an
    integer >= 1, and (fmt.positive_size) a box of zero or negative size. A last line with no
    newline after it that is bad, or has fewer fields than the line before (cut after a field's
    first digits: "33.00,1" for "33.00,112.00,1.0,-1"), is a write cut off (a detector killed
    mid-line): it is left out, with a warning naming it, as a recording's frames.csv does."""
    path = Path(path)
    if not path.is_file():
        raise fmt.error(f"{path}: {fmt.what} not found")
    rows = []
    fields = 0  # the previous line's field count
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            vals, problem, count = _parse_row(line, fmt)
            last = not raw.endswith("\n")  # (only a file's last line can lack its newline)
            if last and problem is None and count < fields:  # cut after a field's first digits
                problem = f"{count} fields where the line before has {fields}"
            if problem is not None:
                if last:
                    log.warning("%s:%d: ignoring a partial last line (the file was cut off mid-write?): %s",
                                path, n, problem)
                    break
                raise fmt.error(f"{path}:{n}: {problem}")
            rows.append(vals)
            fields = count
    return np.asarray(rows, dtype=np.float64).reshape(-1, COLUMNS)


def _parse_row(line: str, fmt: MotFormat) -> tuple[list[float], Optional[str], int]:
    """A line's 8 values, what is wrong with it (None: nothing), and its field count."""
    parts = [p for p in line.replace("\t", ",").replace(" ", ",").split(",") if p != ""]
    n = len(parts)
    if n < 6:
        return [], f"expected at least 6 comma-separated fields{fmt.hint}, got {n}", n
    vals = []
    for k, p in enumerate(parts[:COLUMNS]):
        try:
            v = float(p)
        except ValueError:
            return [], f"field '{fmt.fields[k]}': expected a number, got {p!r}", n
        if not math.isfinite(v):
            return [], f"field '{fmt.fields[k]}': expected a finite number, got {p!r}", n
        vals.append(v)
    if vals[0] < 1 or vals[0] != int(vals[0]):
        return [], f"field 'frame': expected an integer >= 1, got {parts[0]}", n
    if fmt.positive_size and (vals[4] <= 0 or vals[5] <= 0):
        return [], f"fields 'w','h': expected a positive box size, got {parts[4]},{parts[5]}", n
    while len(vals) < COLUMNS:
        vals.append(1.0 if len(vals) == 6 else -1.0)
    return vals, None, n


def write_mot(path: str | os.PathLike, rows: list[tuple]) -> None:
    """Write tracker output rows (frame, id, x, y, w, h, conf) as MOTChallenge text (-1 for x,y,z)."""
    with open(path, "w", encoding="utf-8") as f:
        for fr, tid, x, y, w, h, conf in rows:
            f.write(f"{int(fr)},{int(tid)},{x:.3f},{y:.3f},{w:.3f},{h:.3f},{conf:.4f},-1,-1,-1\n")
