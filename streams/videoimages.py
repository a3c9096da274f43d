"""Decoding VideoImages where they are used: each detector process reads its own camera's video."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Optional

import cv2
import numpy as np

from .errors import StreamError
from .frames import VideoImage


class VideoImageReader:
    """read(VideoImage) -> the decoded BGR image, for images asked in the order of their videos
    (a recording's pairs): each video stays open and is read forward. An image further on is
    reached by decoding the ones between (a camera without a frame for a pair has a placeholder
    image there that nobody asks for); one behind, by reading again from the start. Never by a
    seek: on a raw Motion-JPEG stream OpenCV's CAP_PROP_POS_FRAMES lands on image 0.

    prefetch: the image after the one read is decoded on a thread of its own meanwhile (OpenCV
    lets go of the interpreter lock while it decodes), so a detector process decodes image k+1
    while it detects on image k instead of one after the other (on 16 cores that chain bound a
    replay: 95 pairs/s); an image asked out of turn is decoded when asked."""

    def __init__(self, prefetch: bool = True) -> None:
        self._open: dict[str, tuple[cv2.VideoCapture, int]] = {}  # path -> (capture, next image number)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="decode") if prefetch else None
        self._ahead: Optional[tuple[str, int, Future]] = None  # (path, number, its decoding)

    def read(self, ref: VideoImage) -> np.ndarray:
        ahead, self._ahead = self._ahead, None
        if ahead is not None and (ahead[0], ahead[1]) == (ref.path, ref.number):
            ok, img = ahead[2].result()
        else:
            if ahead is not None:
                ahead[2].result()  # (the capture moved on past it; the next decode goes on from there)
            ok, img = self._decode(ref.path, ref.number)
        if self._pool is not None and ok:
            self._ahead = (ref.path, ref.number + 1, self._pool.submit(self._decode, ref.path, ref.number + 1))
        if not ok or img is None:
            raise StreamError(f"{ref.path}: image {ref.number} could not be decoded although its JPEG data is "
                              f"whole; keep the first {ref.number} rows of frames.csv to replay the pairs before it")
        if ref.size is not None and (img.shape[1], img.shape[0]) != tuple(ref.size):
            raise StreamError(f"{ref.path}: image {ref.number} is {img.shape[1]}x{img.shape[0]} but the calibration "
                              f"expects {ref.size[0]}x{ref.size[1]} for this camera")
        return img

    def _decode(self, path: str, number: int) -> tuple[bool, Optional[np.ndarray]]:
        """(ok, image `number` of the video at `path`), reading forward (or again from the start)."""
        cap, nxt = self._open.pop(path, (None, 0))
        if cap is not None and number < nxt:
            cap.release()
            cap = None
        if cap is None:
            cap, nxt = cv2.VideoCapture(path), 0
            if not cap.isOpened():
                raise StreamError(f"{path}: cannot open the video")
        while nxt < number and cap.grab():
            nxt += 1
        ok, img = cap.read() if nxt == number else (False, None)
        self._open[path] = (cap, number + 1)
        return ok, img

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead[2].exception()  # wait for it: the capture is released next
            self._ahead = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        for cap, _ in self._open.values():
            cap.release()
        self._open.clear()
