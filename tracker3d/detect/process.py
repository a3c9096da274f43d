"""A detector in a child process of its own, so that detection does not share the tracking
thread's interpreter lock (on a few cores the stereo loop is bound by that lock, not by the
cores: the Python of tracking and of detection take turns).

The child is a plain `python -m tracker3d.detect.process` (no multiprocessing: nothing of the
parent's main module is re-imported, nothing forked from a threaded process). Images go through
a shared memory file that both map (the file is unlinked as soon as both have it open, so nothing
is left behind whatever happens to either process); requests and Detections go as pickles over
the child's stdin/stdout. The child ignores SIGINT and SIGTERM (sent to the whole group, they are
the parent's to handle) and ends when its stdin closes, so it never outlives the parent.
"""
from __future__ import annotations

import logging
import mmap
import os
import pickle
import signal
import struct
import subprocess
import sys
import tempfile
from typing import BinaryIO, Optional

import numpy as np

from ..errors import Tracker3DError
from .detections import Detections

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<Q")  # length of the pickle that follows
START_TIMEOUT_S = 60.0  # importing OpenCV and the detector on a loaded machine


def _shm_dir() -> str:
    """Where the image file lives: RAM-backed /dev/shm where there is one, else the temp folder."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


def _send(f: BinaryIO, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(_HEADER.pack(len(data)) + data)
    f.flush()


def _receive(f: BinaryIO):
    """The next message, or None at end of stream."""
    head = f.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (n,) = _HEADER.unpack(head)
    data = f.read(n)
    if len(data) < n:
        return None
    return pickle.loads(data)


class DetectorProcess:
    """detect(image, t) -> Detections, run by `make_detector(spec, detect_scale, **options)` in a
    child process. Also split in two (submit, then result) so that one thread can keep two
    children busy at once. Errors in the child come back as Tracker3DError (one line)."""

    def __init__(self, spec: str, detect_scale: float = 1.0, options: Optional[dict] = None, name: str = "detector"):
        self.name = name
        self._map: Optional[mmap.mmap] = None
        self._nbytes = 0
        self._pending = False
        self._init = ("init", spec, detect_scale, dict(options or {}), logging.getLogger().getEffectiveLevel())
        self._proc: Optional[subprocess.Popen] = None  # started at the first use: boxes need none

    def start(self) -> None:
        """Start the child (once; it builds its detector while the caller goes on)."""
        if self._proc is not None:
            return
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # Run from a checkout (not installed), the child finds this very package too.
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        if os.path.isfile(os.path.join(root, "pyproject.toml")):
            env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            self._proc = subprocess.Popen([sys.executable, "-m", "tracker3d.detect.process"], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, env=env, start_new_session=False)
        except OSError as e:
            raise Tracker3DError(f"{self.name}: cannot start a detector process ({e}); --no-detect-processes "
                                 "detects in this process instead") from None
        self._request(self._init)

    def _request(self, msg) -> None:
        try:
            _send(self._proc.stdin, msg)
        except (BrokenPipeError, OSError, ValueError):
            raise Tracker3DError(self._ended()) from None
        self._pending = True

    def _reply(self):
        self._pending = False
        try:
            rep = _receive(self._proc.stdout)
        except (OSError, ValueError, pickle.UnpicklingError):
            rep = None
        if rep is None:
            raise Tracker3DError(self._ended())
        kind, value = rep
        if kind == "error":
            raise Tracker3DError(f"{self.name}: {value}")
        return value

    def _ended(self) -> str:
        try:
            code = self._proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            code = None
        return f"{self.name}: the detector process ended unexpectedly (exit code {code})"

    def _ensure_map(self, nbytes: int) -> None:
        """A shared image file of at least nbytes, mapped here and in the child."""
        if self._map is not None and nbytes <= self._nbytes:
            return
        if self._map is not None:
            self._map.close()
        fd, path = tempfile.mkstemp(prefix="tracker3d-frame-", dir=_shm_dir())
        try:
            os.ftruncate(fd, nbytes)
            self._map = mmap.mmap(fd, nbytes)
            self._nbytes = nbytes
            self._request(("map", path, nbytes))
            self._reply()
        finally:
            os.close(fd)
            os.unlink(path)  # both processes hold it mapped: nothing left on disk or in /dev/shm

    def wait_ready(self) -> None:
        """Wait until the child has built its detector (raises its start-up error); submit() does
        this itself, so a caller only needs it to keep the start-up out of the first frame's time."""
        self.start()
        if self._pending:
            self._reply()

    def submit(self, image: np.ndarray, t: float) -> None:
        """Hand one image (captured at t seconds) to the child; result() returns its Detections."""
        self.wait_ready()
        image = np.ascontiguousarray(image)
        self._ensure_map(image.nbytes)
        np.copyto(np.frombuffer(self._map, image.dtype, image.size).reshape(image.shape), image)
        self._request(("detect", float(t), image.shape, image.dtype.str))

    def result(self) -> Detections:
        return self._reply()

    def detect(self, image: np.ndarray, t: float) -> Detections:
        self.submit(image, t)
        return self.result()

    def close(self) -> None:
        """End the child (it exits when its stdin closes) and free the shared image."""
        if self._proc is None:
            return
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        try:
            self._proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        if self._map is not None:
            self._map.close()
            self._map = None


def _serve(inp: BinaryIO, out: BinaryIO) -> None:
    """The child's loop: one reply per request until stdin closes."""
    detector = None
    view: Optional[mmap.mmap] = None
    while True:
        msg = _receive(inp)
        if msg is None:
            return
        try:
            if msg[0] == "init":
                _, spec, scale, options, level = msg
                logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                                    datefmt="%H:%M:%S")
                from . import make_detector

                detector = make_detector(spec, detect_scale=scale, **options)
                reply = ("ok", None)
            elif msg[0] == "map":
                _, path, nbytes = msg
                if view is not None:
                    view.close()
                with open(path, "r+b") as f:
                    view = mmap.mmap(f.fileno(), nbytes)
                reply = ("ok", None)
            else:
                _, t, shape, dtype = msg
                n = int(np.prod(shape))
                # A copy: detectors may keep frames (the warm-up's median) and the next one overwrites these bytes.
                image = np.frombuffer(view, np.dtype(dtype), n).reshape(shape).copy()
                reply = ("det", detector.detect(image, t))
        except Tracker3DError as e:
            reply = ("error", str(e))
        except Exception as e:  # noqa: BLE001 - anything the detector raises reaches the parent as one line
            reply = ("error", f"{type(e).__name__}: {e}")
        _send(out, reply)


def main() -> None:
    # Ctrl-C (and a service manager's SIGTERM) reach the whole group: the parent shuts down in
    # order and closes our stdin, which ends this loop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print (a library's) goes to stderr, not into the replies
    sys.stdout = sys.stderr
    import cv2

    cv2.setNumThreads(1)  # one process per camera: OpenCV's own threads would only oversubscribe the cores
    try:
        _serve(sys.stdin.buffer, out)
    except BrokenPipeError:
        pass


if __name__ == "__main__":
    main()
