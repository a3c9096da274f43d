"""Decoding VideoImages where they are used: each detector process reads its own camera's video."""
from __future__ import annotations

import cv2
import numpy as np

from .errors import StreamError
from .frames import VideoImage


class VideoImageReader:
    """read(VideoImage) -> the decoded BGR image, for images asked in the order of their videos
    (a recording's pairs): each video stays open and is read forward. An image further on is
    reached by decoding the ones between (a camera without a frame for a pair has a placeholder
    image there that nobody asks for); one behind, by reading again from the start. Never by a
    seek: on a raw Motion-JPEG stream OpenCV's CAP_PROP_POS_FRAMES lands on image 0."""

    def __init__(self) -> None:
        self._open: dict[str, tuple[cv2.VideoCapture, int]] = {}  # path -> (capture, next image number)

    def read(self, ref: VideoImage) -> np.ndarray:
        cap, nxt = self._open.pop(ref.path, (None, 0))
        if cap is not None and ref.number < nxt:
            cap.release()
            cap = None
        if cap is None:
            cap, nxt = cv2.VideoCapture(ref.path), 0
            if not cap.isOpened():
                raise StreamError(f"{ref.path}: cannot open the video")
        while nxt < ref.number and cap.grab():
            nxt += 1
        ok, img = cap.read() if nxt == ref.number else (False, None)
        self._open[ref.path] = (cap, ref.number + 1)
        if not ok or img is None:
            raise StreamError(f"{ref.path}: image {ref.number} could not be decoded although its JPEG data is "
                              f"whole; keep the first {ref.number} rows of frames.csv to replay the pairs before it")
        if ref.size is not None and (img.shape[1], img.shape[0]) != tuple(ref.size):
            raise StreamError(f"{ref.path}: image {ref.number} is {img.shape[1]}x{img.shape[0]} but the calibration "
                              f"expects {ref.size[0]}x{ref.size[1]} for this camera")
        return img

    def close(self) -> None:
        for cap, _ in self._open.values():
            cap.release()
        self._open.clear()

