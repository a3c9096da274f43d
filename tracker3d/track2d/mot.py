"""MOTChallenge text files: det.txt, gt.txt and tracker output, as tracker3d uses them.

Rows: `frame, id, bb_left, bb_top, bb_width, bb_height, conf, ...` (frames 1-based, pixels).
Reading and writing the text is streams.mot's (one parser for these files and for detections
folders); here: the rows as columns (`MotRows`), as Detections, and seqinfo.ini.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streams.mot import MotFormat, read_mot_table, write_mot

from ..detect.detections import Detections
from ..errors import Tracker3DError

__all__ = ["MotRows", "read_mot", "read_seqinfo", "write_mot"]


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


MOT_FORMAT = MotFormat("MOT file", ("frame", "id", "bb_left", "bb_top", "bb_width", "bb_height", "conf", "column 8"),
                       error=Tracker3DError)


def read_mot(path: str | os.PathLike) -> MotRows:
    """Read det.txt / gt.txt / tracks.txt; Tracker3DError names the line and field on bad content
    (the parsing is streams.mot's, shared with detections folders)."""
    a = read_mot_table(path, MOT_FORMAT)
    return MotRows(a[:, 0].astype(int), a[:, 1].astype(int), a[:, 2:6], a[:, 6], a[:, 7].astype(int))


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

