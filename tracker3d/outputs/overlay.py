"""Overlay video: both camera images side by side with the 2D tracks (box, ID, persistence score,
colour by state) and the 3D tracks reprojected into each view."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from calib.stereo import StereoCalibration
from streams.base import Closeable
from streams.errors import StreamError
from streams.frames import FramePair

from ..track2d.tracker import LOST
from .labels import Label, draw_labels, put_text

GREY = (150, 150, 150)


def id_bgr(track_id: int) -> tuple[int, int, int]:
    """The viewer's colour for an ID (golden-ratio hues), as BGR 0..255."""
    from ..viewer.state import id_colour

    r, g, b = id_colour(track_id)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_camera(img: np.ndarray, tracker, uv3d: np.ndarray, ids3d: list[int],
                header: Optional[Label] = None) -> np.ndarray:
    """Draw one camera's live 2D tracks and the reprojected 3D tracks (pixels of this camera), and
    the header; labels that would overlap are moved down or up (outputs.labels)."""
    labels = [header] if header is not None else []
    m = tracker.measured()
    for k in range(len(tracker.ids)):
        if tracker.state[k] == LOST:
            continue
        cx, cy, w, h = m[k]
        p1 = (int(round(cx - w / 2)) - 2, int(round(cy - h / 2)) - 2)
        p2 = (int(round(cx + w / 2)) + 2, int(round(cy + h / 2)) + 2)
        persistent = bool(tracker.persistent[k])
        colour = id_bgr(int(tracker.ids[k])) if persistent else GREY
        cv2.rectangle(img, p1, p2, colour, 2 if persistent else 1, cv2.LINE_AA)
        labels.append(Label(f"{int(tracker.ids[k])} {tracker.gate_score[k]:.2f}", (p1[0], p1[1] - 3), colour))
    for (u, v), i in zip(uv3d, ids3d):
        if np.all(np.isfinite([u, v])):
            c = (int(round(u)), int(round(v)))
            cv2.drawMarker(img, c, (255, 255, 255), cv2.MARKER_CROSS, 14, 3, cv2.LINE_AA)
            cv2.drawMarker(img, c, id_bgr(1_000_003 + i), cv2.MARKER_CROSS, 14, 1, cv2.LINE_AA)
            labels.append(Label(f"3D {i}", (c[0] + 6, c[1] + 12), (255, 255, 255)))
    draw_labels(img, labels)
    return img


def compose(pair: FramePair, pipeline, size: tuple[int, int]) -> np.ndarray:
    """The side-by-side overlay image (BGR) of the pipeline's state after stepping `pair`."""
    calib: StereoCalibration = pipeline.calib
    reported = pipeline.tracker3d.reported()
    xyz = np.array([tr.xyz for tr in reported]).reshape(-1, 3)
    ids = [tr.id for tr in reported]
    uv0, uv1 = calib.project(xyz) if len(xyz) else (np.zeros((0, 2)), np.zeros((0, 2)))
    views = []
    for c, (img, uv) in enumerate(((pair.img0, uv0), (pair.img1, uv1))):
        w, h = (calib.cam0 if c == 0 else calib.cam1).image_size
        if img is None:
            canvas = np.zeros((h, w, 3), np.uint8)
            put_text(canvas, "no frame", (w // 2 - 40, h // 2), (0, 0, 255), 0.7)
        else:
            canvas = img.copy() if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        header = Label(f"cam{c}  frame {pair.index}  t {pair.t:.2f} s  3D tracks {len(ids)}", (8, 18),
                       (255, 255, 255), 0.5)
        draw_camera(canvas, pipeline.trackers[c], uv, ids, header)
        views.append(cv2.resize(canvas, size) if canvas.shape[1::-1] != tuple(size) else canvas)
    return np.hstack(views)


class OverlayWriter(Closeable):
    """Writes the overlay of every processed pair to a video (.mp4: mp4v, .avi: MJPG) or, for a
    folder path without a video suffix, to numbered PNGs."""

    def __init__(self, path: str | os.PathLike, calib: StereoCalibration, fps: float = 30.0):
        self.path = Path(path)
        self.size = calib.cam0.image_size
        self.frames = 0
        suffix = self.path.suffix.lower()
        if suffix not in (".mp4", ".avi"):
            raise StreamError(f"--overlay {path}: expected an .mp4 or .avi file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fourcc = cv2.VideoWriter_fourcc(*("mp4v" if suffix == ".mp4" else "MJPG"))
        w, h = self.size
        self._w = cv2.VideoWriter(str(self.path), fourcc, float(fps), (2 * w, h))
        if not self._w.isOpened():
            raise StreamError(f"--overlay {path}: OpenCV cannot write this video here (try .avi)")
        self.last: Optional[np.ndarray] = None

    def write(self, pair: FramePair, pipeline) -> np.ndarray:
        img = compose(pair, pipeline, self.size)
        self._w.write(img)
        self.frames += 1
        self.last = img
        return img

    def close(self) -> None:
        self._w.release()
