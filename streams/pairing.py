"""Stereo pairing: two sources -> FramePairs matched by capture time.

- File/folder sources are lossless: `TimePairedSource` walks both streams in time order, pairs
  frames within `tolerance` seconds and drops (and counts) frames that have no partner.
- Two live cameras: `LiveStereoSource` grabs both back to back, then decodes both, on one
  thread, so their capture times are as close as the devices allow; only the newest pair is kept.
  A camera that fails gives pairs with that view missing (None) while it is reopened.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .base import LatestSlot, Readable
from .errors import StreamError
from .frames import Frame, FramePair
from .sources import CameraDevice, CaptureFactory, FrameSource, SourceStats, is_live_spec, open_source, parse_live_spec

log = logging.getLogger(__name__)


@dataclass
class PairStats:
    pairs: int = 0
    dropped0: int = 0  # camera 0 frames with no partner within tolerance
    dropped1: int = 0
    single0: int = 0  # pairs with only camera 0's image (camera 1 down)
    single1: int = 0
    overwritten: int = 0  # live: pairs replaced by a newer one before the consumer took them
    skews: deque = field(default_factory=lambda: deque(maxlen=2000))

    def as_dict(self) -> dict:
        s = np.abs(np.asarray(self.skews, dtype=float)) * 1000.0
        d = {k: v for k, v in self.__dict__.items() if k != "skews"}
        d["skew_ms_median"] = float(np.median(s)) if len(s) else float("nan")
        d["skew_ms_p99"] = float(np.percentile(s, 99)) if len(s) else float("nan")
        d["skew_ms_max"] = float(np.max(s)) if len(s) else float("nan")
        return d


class StereoSource(Readable[FramePair]):
    """Base for stereo sources: iterate for FramePairs; `read()` returns None at the end.
    A live source's read() also returns None when nothing new came in time: `ended` tells."""

    live = False
    ended = False
    images = True  # pairs of images (FramePair); False: an outside detector's boxes (DetectionPair)
    image_size: Optional[tuple[int, int]] = None

    def __init__(self) -> None:
        self.stats = PairStats()

    def _hand_out(self, pair, pacer=None):
        """A file source's pair on its way out: paced to its recorded time (`pacer`, realtime
        replay), counted (with one camera only, as a live pairing counts them: a recording's or a
        detections folder's row with an empty time), and its skew noted when both cameras delivered."""
        if pacer is not None:
            pacer.wait(pair.t)
        self.stats.pairs += 1
        if not math.isnan(pair.skew):
            self.stats.skews.append(pair.skew)
        elif math.isnan(pair.t1) and not math.isnan(pair.t0):
            self.stats.single0 += 1
        elif math.isnan(pair.t0) and not math.isnan(pair.t1):
            self.stats.single1 += 1
        return pair


Size = tuple[int, int]


def per_camera(expected) -> tuple[Optional[Size], Optional[Size]]:
    """An expected size for both cameras ((w, h)) or one per camera (((w0, h0), (w1, h1)))."""
    if expected is None:
        return None, None
    if len(expected) == 2 and all(isinstance(v, (int, np.integer)) for v in expected):
        return tuple(expected), tuple(expected)
    return tuple(expected[0]), tuple(expected[1])


def check_size(img: Optional[np.ndarray], expected: Optional[tuple[int, int]], what: str) -> None:
    """StreamError if an image's (width, height) differs from the calibration's."""
    if img is None or expected is None:
        return
    h, w = img.shape[:2]
    if (w, h) != tuple(expected):
        raise StreamError(f"{what}: frames are {w}x{h} but the calibration expects {expected[0]}x{expected[1]}")


class TimePairedSource(StereoSource):
    """Pairs two lossless sources by capture time (|t0 - t1| <= tolerance seconds)."""

    def __init__(self, src0: FrameSource, src1: FrameSource, tolerance: float = 0.010,
                 expected_size: Optional[tuple[int, int]] = None):
        super().__init__()
        self.src0, self.src1 = src0, src1
        self.tolerance = float(tolerance)
        self.expected_size = expected_size
        self._a: Optional[Frame] = src0.read()
        self._b: Optional[Frame] = src1.read()
        e0, e1 = per_camera(expected_size)
        check_size(self._a.image if self._a else None, e0, f"cam0 ({src0.name})")
        check_size(self._b.image if self._b else None, e1, f"cam1 ({src1.name})")
        if self._a is not None:
            self.image_size = (self._a.image.shape[1], self._a.image.shape[0])
        self._index = 0

    @property
    def fps(self) -> float:
        """Camera 0's frame rate, frames per second."""
        return float(getattr(self.src0, "fps", 30.0))

    def rate_note(self) -> str:
        """Which frame rate stamps the frames, and where it came from (one line for the user)."""
        notes = {f"{getattr(s, 'fps', 30.0):g} fps from {getattr(s, 'rate_from', 'its source')}"
                 for s in (self.src0, self.src1)}
        return "frame times: " + " / ".join(sorted(notes))

    def read(self, timeout: Optional[float] = None) -> Optional[FramePair]:
        while self._a is not None and self._b is not None:
            a, b = self._a, self._b
            d = b.t - a.t
            if abs(d) <= self.tolerance:
                self._a, self._b = self.src0.read(), self.src1.read()
                pair = FramePair(self._index, a.t, b.t, a.image, b.image)
                self._index += 1
                self.stats.pairs += 1
                self.stats.skews.append(d)
                return pair
            if d > 0:  # camera 0's frame is older than anything camera 1 still has
                self.stats.dropped0 += 1
                self._a = self.src0.read()
            else:
                self.stats.dropped1 += 1
                self._b = self.src1.read()
        # One stream ended: the other's remaining frames have no partner.
        for attr, src, key in (("_a", self.src0, "dropped0"), ("_b", self.src1, "dropped1")):
            while getattr(self, attr) is not None:
                setattr(self.stats, key, getattr(self.stats, key) + 1)
                setattr(self, attr, src.read())
        return None

    def close(self) -> None:
        self.src0.close()
        self.src1.close()


class LiveStereoSource(StereoSource):
    """Two live devices grabbed back to back on one thread; newest pair wins.

    Pairs whose grab times differ by more than `tolerance` are dropped and counted. While a
    device is down the pairs carry only the other view (its image None, its time NaN).
    """

    live = True

    def __init__(self, spec0: Any, spec1: Any, factory: CaptureFactory | tuple = None, frame_stride: int = 1,
                 tolerance: float = 0.020, expected_size: Optional[tuple[int, int]] = None,
                 backoff: tuple[float, float] = (0.25, 8.0)):
        super().__init__()
        import cv2

        f0, f1 = factory if isinstance(factory, tuple) else (factory or cv2.VideoCapture,) * 2
        self.cam_stats = (SourceStats(), SourceStats())
        self.devices = (CameraDevice(parse_live_spec(spec0), f0, self.cam_stats[0], backoff),
                        CameraDevice(parse_live_spec(spec1), f1, self.cam_stats[1], backoff))
        self.names = (str(spec0), str(spec1))
        self.stride = max(1, int(frame_stride))
        self.tolerance = float(tolerance)
        self.expected_size = expected_size
        for i, d in enumerate(self.devices):
            d.ensure_open(block=True)
            if not d.is_open:
                for other in self.devices:  # cam0 may be open already: do not hold it
                    other.release()
                raise StreamError(f"cam{i} ({self.names[i]}): cannot open (check the index/URL and permissions)")
        self._slot: LatestSlot[FramePair] = LatestSlot()
        self._index = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="live-stereo")
        self._thread.start()

    def _grab(self, i: int) -> float:
        d = self.devices[i]
        if not d.ensure_open():
            return math.nan
        for _ in range(self.stride - 1):
            if not d.grab():
                return math.nan
            self.cam_stats[i].skipped += 1
        return time.monotonic() if d.grab() else math.nan

    def _run(self) -> None:
        try:
            self._loop()
        finally:  # the grabbing thread releases the devices: never while a grab is in progress
            for d in self.devices:
                d.release()

    def _loop(self) -> None:
        while not self._stop.is_set():
            t0, t1 = self._grab(0), self._grab(1)
            # A slower camera makes the other's grab stale: re-grab the earlier one (a few times at
            # most) so the pair's captures are close in time.
            for _ in range(4):
                if math.isnan(t0) or math.isnan(t1) or abs(t1 - t0) <= self.tolerance:
                    break
                if t0 < t1:
                    t0 = self._grab(0)
                else:
                    t1 = self._grab(1)
            img0 = self.devices[0].retrieve() if not math.isnan(t0) else None
            img1 = self.devices[1].retrieve() if not math.isnan(t1) else None
            if img0 is None and img1 is None:
                time.sleep(0.005)
                continue
            try:
                e0, e1 = per_camera(self.expected_size)
                check_size(img0, e0, f"cam0 ({self.names[0]})")
                check_size(img1, e1, f"cam1 ({self.names[1]})")
            except StreamError as exc:
                self._slot.fail(exc)
                return
            for i, img in enumerate((img0, img1)):
                if img is not None:
                    self.cam_stats[i].frames += 1
            if img0 is not None and img1 is not None:
                skew = t1 - t0
                if abs(skew) > self.tolerance:
                    self.stats.dropped0 += 1
                    self.stats.dropped1 += 1
                    continue
                self.stats.skews.append(skew)
            else:
                t0 = t0 if img0 is not None else math.nan
                t1 = t1 if img1 is not None else math.nan
                if img1 is None:
                    self.stats.single0 += 1
                else:
                    self.stats.single1 += 1
            if self.image_size is None:
                img = img0 if img0 is not None else img1
                self.image_size = (img.shape[1], img.shape[0])
            # Pair times are on the monotonic clock (a wall-clock step never makes time go back);
            # the wall clock labels the pair, for latency only.
            t_cap = min(x for x in (t0, t1) if x == x)
            wall = time.time() - (time.monotonic() - t_cap)
            self._slot.put(FramePair(self._index, t0, t1, img0, img1, wall=wall))
            self._index += 1
            self.stats.pairs += 1
            self.stats.overwritten = self._slot.overwritten

    def read(self, timeout: Optional[float] = None) -> Optional[FramePair]:
        """The newest pair not yet returned; None on close() or timeout. Raises a size mismatch."""
        return self._slot.take(timeout)

    def close(self) -> None:
        self._stop.set()
        self._slot.close()
        self._thread.join(timeout=2.0)
        if self._thread.is_alive():
            log.warning("live stereo: a camera is still inside a grab after 2 s; released when it returns")


def open_stereo(src0: str, src1: str, tolerance: Optional[float] = None, frame_stride: int = 1,
                realtime: bool = False, fps: Optional[float] = None, expected_size: Optional[tuple[int, int]] = None,
                ) -> StereoSource:
    """StereoSource for two SRC strings (both live, or both files/folders). expected_size: (w, h)
    for both cameras or ((w0, h0), (w1, h1)), checked on the first frames."""
    live0, live1 = is_live_spec(src0), is_live_spec(src1)
    if live0 != live1:
        raise StreamError(f"--cam0 {src0} and --cam1 {src1}: mix of a live camera and a file; use two of a kind")
    if live0:
        return LiveStereoSource(src0, src1, frame_stride=frame_stride,
                                tolerance=0.020 if tolerance is None else tolerance, expected_size=expected_size)
    s0 = open_source(src0, frame_stride=frame_stride, realtime=realtime, fps=fps)
    s1 = open_source(src1, frame_stride=frame_stride, realtime=realtime, fps=fps)
    period = 1.0 / max(getattr(s0, "fps", None) or fps or 30.0, 1e-6)
    tol = 0.5 * period * frame_stride if tolerance is None else tolerance
    return TimePairedSource(s0, s1, tolerance=tol, expected_size=expected_size)
