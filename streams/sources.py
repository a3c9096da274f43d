"""Frame sources: video files, image folders (lossless) and live cameras/URLs (newest frame wins).

A source yields `Frame(index, t, image)` with the capture time t in seconds. File sources take
time from the file's frame rate; live sources stamp frames with the wall clock at grab time.
"""
from __future__ import annotations

import glob
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import cv2
import numpy as np

from .base import LatestSlot, Pacer, Readable
from .errors import StreamError
from .frames import Frame

log = logging.getLogger(__name__)

CaptureFactory = Callable[[Any], Any]  # spec -> object with isOpened/grab/retrieve/read/release/get


@dataclass
class SourceStats:
    frames: int = 0
    skipped: int = 0  # frames skipped by frame_stride
    corrupt: int = 0  # unreadable frames/files skipped
    failures: int = 0  # live: times the device failed
    reopens: int = 0  # live: successful reopenings
    dropped: int = 0  # live: frames overwritten before the consumer took them

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class FrameSource(Readable[Frame]):
    """Base of all sources. Iterate for frames; `read()` returns None at the end."""

    name: str = "source"
    live: bool = False

    def __init__(self) -> None:
        self.stats = SourceStats()


class VideoFileSource(FrameSource):
    """A video file read losslessly; t = frame index / fps. frame_stride skips decoding (grab only)."""

    def __init__(self, path: str, frame_stride: int = 1, realtime: bool = False, fps: Optional[float] = None):
        super().__init__()
        if not os.path.isfile(path):
            raise StreamError(f"{path}: video file not found")
        self.name = path
        self.cap = cv2.VideoCapture(path)
        if not self.cap.isOpened():
            raise StreamError(f"{path}: cannot open as a video (unknown format or corrupt header)")
        file_fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps or (file_fps if file_fps and file_fps > 0 else 30.0))
        self.frame_count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.stride = max(1, int(frame_stride))
        self._pacer = Pacer() if realtime else None
        self._index = 0

    def read(self, timeout: Optional[float] = None) -> Optional[Frame]:
        while True:
            ok, img = self.cap.read()
            idx = self._index
            if not ok or img is None:
                # A failed read before the container's end is a corrupt frame: skip it.
                if 0 < self.frame_count and idx < self.frame_count - 1 and self.stats.corrupt < 1000:
                    self.stats.corrupt += 1
                    log.warning("%s: frame %d unreadable, skipped", self.name, idx)
                    self._index += 1
                    continue
                return None
            self._index += 1
            for _ in range(self.stride - 1):
                if not self.cap.grab():
                    break
                self._index += 1
                self.stats.skipped += 1
            self.stats.frames += 1
            t = idx / self.fps
            if self._pacer:
                self._pacer.wait(t)
            return Frame(idx, t, img)

    def close(self) -> None:
        self.cap.release()


class ImageFolderSource(FrameSource):
    """Images matching a glob (sorted by name), t = index / fps. Unreadable files are skipped and counted."""

    def __init__(self, pattern: str, fps: float = 30.0, frame_stride: int = 1, realtime: bool = False):
        super().__init__()
        pat = os.path.join(pattern, "*") if os.path.isdir(pattern) else pattern
        exts = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".webp")
        self.files = [f for f in sorted(glob.glob(os.path.expanduser(pat))) if f.lower().endswith(exts)]
        if not self.files:
            raise StreamError(f"{pattern}: no image files match")
        self.name = pattern
        self.fps = float(fps)
        self.stride = max(1, int(frame_stride))
        self._pacer = Pacer() if realtime else None
        self._i = 0

    def read(self, timeout: Optional[float] = None) -> Optional[Frame]:
        while self._i < len(self.files):
            i = self._i
            self._i += self.stride
            self.stats.skipped += min(self.stride, len(self.files) - i) - 1
            img = cv2.imread(self.files[i], cv2.IMREAD_COLOR)
            if img is None:
                self.stats.corrupt += 1
                log.warning("%s: not a readable image, skipped", self.files[i])
                continue
            self.stats.frames += 1
            t = i / self.fps
            if self._pacer:
                self._pacer.wait(t)
            return Frame(i, t, img)
        return None


class CameraDevice:
    """One live capture device (camera index or URL) that reopens itself with backoff.

    Not thread-safe: one reader thread drives it. Reopening happens on a helper thread so that a
    slow open (a network stream timing out) never stalls the reader.
    """

    def __init__(self, spec: Any, factory: CaptureFactory = cv2.VideoCapture, stats: Optional[SourceStats] = None,
                 backoff: tuple[float, float] = (0.25, 8.0), props: Optional[dict[int, float]] = None):
        self.spec = spec
        self.factory = factory
        self.stats = stats or SourceStats()
        self.backoff_min, self.backoff_max = backoff
        self.props = props or {}
        self._cap = None
        self._opening: Optional[threading.Thread] = None
        self._next_try = 0.0
        self._delay = self.backoff_min
        self._lock = threading.Lock()
        self._closed = False
        self.ever_opened = False

    @property
    def is_open(self) -> bool:
        return self._cap is not None

    def _open_blocking(self) -> None:
        try:
            cap = self.factory(self.spec)
            ok = cap is not None and cap.isOpened()
        except Exception as exc:  # a capture backend may raise anything on open
            log.debug("open %r raised %s", self.spec, exc)
            cap, ok = None, False
        if ok:
            for k, v in self.props.items():
                cap.set(k, v)
        with self._lock:
            if ok and self._closed:  # released while this open was in progress: do not leak it
                cap.release()
            elif ok:
                self._cap = cap
                self._delay = self.backoff_min
                if self.ever_opened:
                    self.stats.reopens += 1
                    log.warning("camera %s: reopened", self.spec)
                self.ever_opened = True
            else:
                if cap is not None:
                    cap.release()
                self._next_try = time.monotonic() + self._delay
                log.info("camera %s: cannot open, retrying in %.2fs", self.spec, self._delay)
                self._delay = min(self._delay * 2, self.backoff_max)

    def ensure_open(self, block: bool = False) -> bool:
        """Try (again) to open the device if closed and the backoff allows; True if open now."""
        if self._cap is not None:
            return True
        if self._opening is not None and self._opening.is_alive():
            return False
        if time.monotonic() < self._next_try:
            return False
        if block:
            self._open_blocking()
        else:
            self._opening = threading.Thread(target=self._open_blocking, daemon=True, name=f"open-{self.spec}")
            self._opening.start()
        return self._cap is not None

    def fail(self, why: str) -> None:
        self.stats.failures += 1
        log.warning("camera %s: %s; reopening with backoff", self.spec, why)
        with self._lock:
            if self._cap is not None:
                try:
                    self._cap.release()
                except Exception:
                    pass
            self._cap = None
            self._next_try = time.monotonic() + self._delay
            self._delay = min(self._delay * 2, self.backoff_max)

    def grab(self) -> bool:
        if self._cap is None:
            return False
        try:
            ok = bool(self._cap.grab())
        except Exception as exc:
            ok = False
            log.debug("grab raised %s", exc)
        if not ok:
            self.fail("grab failed")
        return ok

    def retrieve(self) -> Optional[np.ndarray]:
        if self._cap is None:
            return None
        try:
            ok, img = self._cap.retrieve()
        except Exception:
            ok, img = False, None
        if not ok or img is None:
            self.fail("retrieve failed")
            return None
        return img

    def release(self) -> None:
        """Release the device for good (a reopen still in progress releases what it opens)."""
        with self._lock:
            self._closed = True
            if self._cap is not None:
                self._cap.release()
            self._cap = None


def parse_live_spec(spec: str | int) -> Any:
    """'0' -> 0 (camera index); URLs stay strings."""
    if isinstance(spec, int):
        return spec
    s = str(spec).strip()
    return int(s) if s.isdigit() else s


def is_live_spec(spec: str | int) -> bool:
    s = str(spec).strip()
    return s.isdigit() or "://" in s or s.startswith("/dev/video")


class LiveSource(FrameSource):
    """A live camera or stream read on its own thread; only the newest frame is kept.

    A device that fails is reopened with exponential backoff; failures and recoveries are
    logged and counted in `stats`. frame_stride N grabs N frames and decodes only the last.
    """

    live = True

    def __init__(self, spec: Any, frame_stride: int = 1, factory: CaptureFactory = cv2.VideoCapture,
                 backoff: tuple[float, float] = (0.25, 8.0), open_timeout: float = 10.0):
        super().__init__()
        self.name = str(spec)
        self.stride = max(1, int(frame_stride))
        self.device = CameraDevice(parse_live_spec(spec), factory, self.stats, backoff)
        self._slot: LatestSlot[Frame] = LatestSlot()
        self._stop = threading.Event()
        self._index = 0
        self.device.ensure_open(block=True)
        if not self.device.is_open:
            # Fail fast at start for a device that was never there; later failures are survived.
            raise StreamError(f"camera {spec}: cannot open (check the index/URL and permissions)")
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"live-{spec}")
        self._thread.start()

    def _run(self) -> None:
        try:
            self._loop()
        finally:  # the grabbing thread releases the device: never while a grab is in progress
            self.device.release()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.device.ensure_open():
                time.sleep(0.01)
                continue
            ok = True
            for _ in range(self.stride - 1):
                ok = self.device.grab()
                if not ok:
                    break
                self.stats.skipped += 1
            if not ok or not self.device.grab():
                continue
            t = time.monotonic()  # never steps back (wall-clock steps: NTP, manual)
            img = self.device.retrieve()
            if img is None:
                continue
            self._slot.put(Frame(self._index, t, img))
            self._index += 1
            self.stats.frames += 1
            self.stats.dropped = self._slot.overwritten

    def read(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """The newest frame not yet returned; waits up to timeout (None: until one comes or close())."""
        return self._slot.take(timeout)

    def close(self) -> None:
        self._stop.set()
        self._slot.close()
        self._thread.join(timeout=2.0)
        if self._thread.is_alive():
            log.warning("camera %s: still inside a grab after 2 s; released when it returns", self.name)


def open_source(spec: str | int, frame_stride: int = 1, realtime: bool = False, fps: float = 30.0,
                factory: CaptureFactory = cv2.VideoCapture) -> FrameSource:
    """Open SRC: a camera index ('0'), a URL (rtsp://, http://), an image glob/folder or a video file."""
    s = str(spec)
    if is_live_spec(s):
        return LiveSource(s, frame_stride=frame_stride, factory=factory)
    if any(c in s for c in "*?[") or os.path.isdir(s):
        return ImageFolderSource(s, fps=fps, frame_stride=frame_stride, realtime=realtime)
    if os.path.isfile(s):
        return VideoFileSource(s, frame_stride=frame_stride, realtime=realtime)
    raise StreamError(f"{s}: no such file, folder, camera index or URL")
