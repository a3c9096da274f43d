"""The data that flows out of sources: single frames and stereo pairs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class Frame:
    """One image from one camera. t: capture time in seconds (source clock: a file's own times, or
    time.monotonic() for a live camera, which never steps back); index: frame number
    in its source (for files, the position in the file)."""

    index: int
    t: float
    image: np.ndarray


@dataclass(frozen=True)
class VideoImage:
    """An image not decoded yet: image `number` (0-based, its place in the file) of the video at
    `path`, `size` (width, height) pixels where the calibration expects one. A recording replayed
    into detector processes hands these over instead of pixels: each camera's child decodes its
    own video (streams.videoimages.VideoImageReader), the two side by side, and no image is copied
    between processes (RecordingReader.decode_in_detectors)."""

    path: str
    number: int
    size: Optional[tuple[int, int]] = None


@dataclass
class FramePair:
    """Two images taken at (about) the same time. index: the pair's number in its source (the
    `index` of a recording's frames.csv). An image is None when that camera gave no frame for this
    pair (dropped or dead camera); its time is then NaN. An image may be a VideoImage (decoded by
    the detector process it goes to) where the source was asked to leave the decoding to them."""

    index: int
    t0: float
    t1: float
    img0: Optional[np.ndarray | VideoImage]
    img1: Optional[np.ndarray | VideoImage]
    wall: float = float("nan")  # wall-clock time (time.time()) the pair was captured: a label, for latency

    @property
    def t(self) -> float:
        """The pair's time: camera 0's capture time, or camera 1's when camera 0 is missing."""
        return self.t0 if self.img0 is not None else self.t1

    @property
    def skew(self) -> float:
        """t1 - t0 in seconds (NaN when a view is missing)."""
        return self.t1 - self.t0 if (self.img0 is not None and self.img1 is not None) else float("nan")
