"""A detector in a child process of its own, so that detection does not share the tracking
thread's interpreter lock (on a few cores the stereo loop is bound by that lock, not by the
cores: the Python of tracking and of detection take turns).

The child is a plain Python running this module as __main__ (no multiprocessing: nothing of the
parent's main module is re-imported, nothing forked from a threaded process). Images go through
a shared memory file that both map (the file is unlinked as soon as both have it open, so nothing
is left behind whatever happens to either process), or, for a recording's Motion-JPEG videos, as
a VideoImage (file and image number) that the child decodes itself; requests and Detections go as JSON plus raw
array bytes (no pickle) over the child's stdin/stdout. The child ignores SIGINT and SIGTERM (sent to the whole group, they are
the parent's to handle) and ends when its stdin closes, so it never outlives the parent.
"""
from __future__ import annotations

import json
import logging
import mmap
import os
import signal
import struct
import subprocess
import sys
import tempfile
from typing import BinaryIO, Optional

import numpy as np

from streams.errors import StreamError
from streams.frames import VideoImage

from ..errors import RunFailure, Tracker3DError
from .detections import Detections

# The child ignores SIGINT and SIGTERM before it imports anything: `-m tracker3d.detect.process`
# ignored them only in main(), after a second of imports (numpy, OpenCV) during which a Ctrl-C to
# the group killed it with a traceback and the run ended as a failure (exit 1, not 130).
_LAUNCH = ("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN); "
           "import runpy; runpy.run_module('tracker3d.detect.process', run_name='__main__', alter_sys=True)")
_HEADER = struct.Struct("<Q")  # a count or a length in bytes
SLOTS = 2  # images a child may hold at once: one it works on, the next one waiting (submit twice, then result)


def pin_cpu(k: int) -> Optional[int]:
    """The core for the k-th of several detector processes, or None where there is no choice to
    make (one core allowed, or no affinity on this system). Both cameras' children wake at the
    same moment; left to itself the scheduler often starts them on one core, and a live pair's
    detection then takes twice as long (measured: 4 ms median, 8 ms at p90, against 2.9 alone)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[k % len(cpus)] if len(cpus) >= 2 else None


def _shm_dir() -> str:
    """Where the image file lives: RAM-backed /dev/shm where there is one, else the temp folder."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


def _encode(obj, arrays: list) -> object:
    """obj as JSON with its arrays set aside (Detections and numpy arrays; tuples become lists)."""
    if isinstance(obj, Detections):
        return {"__detections__": [_encode(a, arrays) for a in (obj.boxes, obj.centroids, obj.scores, obj.areas)],
                "classes": None if obj.classes is None else obj.classes.tolist()}
    if isinstance(obj, np.ndarray):
        arrays.append(np.ascontiguousarray(obj))
        return {"__array__": len(arrays) - 1, "dtype": obj.dtype.str, "shape": list(obj.shape)}
    if isinstance(obj, (list, tuple)):
        return [_encode(v, arrays) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _encode(v, arrays) for k, v in obj.items()}
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _decode(obj, buffers: list[bytes]):
    if isinstance(obj, dict):
        if "__array__" in obj:
            return np.frombuffer(buffers[obj["__array__"]], np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
        if "__detections__" in obj:
            b, c, s, a = (_decode(v, buffers) for v in obj["__detections__"])
            return Detections(b, c, s, a, None if obj["classes"] is None else np.array(obj["classes"], dtype=object))
        return {k: _decode(v, buffers) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, buffers) for v in obj]
    return obj


def _send(f: BinaryIO, obj) -> None:
    """One message: its JSON (arrays replaced by references) and the arrays' bytes, each
    length-prefixed. No pickle: nothing that runs code on loading crosses the pipe."""
    arrays: list[np.ndarray] = []
    head = json.dumps(_encode(obj, arrays)).encode()
    f.write(_HEADER.pack(len(arrays)) + _HEADER.pack(len(head)) + head
            + b"".join(_HEADER.pack(a.nbytes) + a.tobytes() for a in arrays))
    f.flush()


def _read_exact(f: BinaryIO, n: int) -> Optional[bytes]:
    data = f.read(n)
    return data if len(data) == n else None


def _receive(f: BinaryIO):
    """The next message, or None at end of stream."""
    head = _read_exact(f, 2 * _HEADER.size)
    if head is None:
        return None
    count, size = _HEADER.unpack(head[:_HEADER.size])[0], _HEADER.unpack(head[_HEADER.size:])[0]
    text = _read_exact(f, size)
    if text is None:
        return None
    buffers = []
    for _ in range(count):
        n = _read_exact(f, _HEADER.size)
        data = None if n is None else _read_exact(f, _HEADER.unpack(n)[0])
        if data is None:
            return None
        buffers.append(data)
    return _decode(json.loads(text), buffers)


class DetectorProcess:
    """detect(image, t) -> Detections, run by `make_detector(spec, detect_scale, **options)` in a
    child process. Also split in two (submit, then result, in order) so that one thread keeps two
    children busy at once, and up to SLOTS images ahead so that a child never waits for the
    caller between two images. Errors in the child come back as Tracker3DError (one line).
    `last_ms`: how long the child took for the image whose result() came last (ms). cpu: a core
    for the child alone (None: wherever the system puts it; see pin_cpu)."""

    def __init__(self, spec: str, detect_scale: float = 1.0, options: Optional[dict] = None, name: str = "detector",
                 cpu: Optional[int] = None):
        self.name = name
        self.cpu = cpu
        self._maps: list[Optional[mmap.mmap]] = [None] * SLOTS  # shared image files, used in turn
        self._sizes = [0] * SLOTS
        self._submitted = 0  # images handed over so far
        self._outstanding = 0  # of them, results not yet taken
        self._starting = False  # the child's answer to its start-up is still to be read
        self.last_ms = 0.0
        self._held: list[Detections] = []  # results read early (before a new shared file), oldest first
        self._init = ("init", spec, detect_scale, dict(options or {}), logging.getLogger().getEffectiveLevel(), cpu)
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
            self._proc = subprocess.Popen([sys.executable, "-c", _LAUNCH], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, env=env)
        except OSError as e:
            raise Tracker3DError(f"{self.name}: cannot start a detector process ({e}); --no-detect-processes "
                                 "detects in this process instead") from None
        self._request(self._init)
        self._starting = True  # its acknowledgement is read by wait_ready()

    @property
    def pid(self) -> Optional[int]:
        """The child's process id (None before start)."""
        return self._proc.pid if self._proc is not None else None

    def pin(self, cpus: Optional[set[int]]) -> bool:
        """Let the running child run on the cores `cpus` (None: back to its own core, `self.cpu`,
        or where it has none, the cores this process may use). False where the system refuses
        (or there is no child)."""
        if self._proc is None or self._proc.poll() is not None or not hasattr(os, "sched_setaffinity"):
            return False
        if cpus is None:
            cpus = {self.cpu} if self.cpu is not None else os.sched_getaffinity(os.getpid())
        try:
            os.sched_setaffinity(self._proc.pid, cpus)
        except OSError:
            return False
        return True

    def _request(self, msg) -> None:
        try:
            _send(self._proc.stdin, msg)
        except (BrokenPipeError, OSError, ValueError):
            raise RunFailure(self._ended()) from None

    def _reply(self):
        try:
            rep = _receive(self._proc.stdout)
        except (OSError, ValueError):
            rep = None
        if rep is None:
            raise RunFailure(self._ended())
        kind, value = rep
        if kind == "error":
            raise Tracker3DError(f"{self.name}: {value}")
        if kind == "stream_error":  # the input's fault, and the line names the file
            raise StreamError(value)
        return value

    def _ended(self) -> str:
        try:
            code = self._proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            code = None
        return f"{self.name}: the detector process ended unexpectedly (exit code {code})"

    def _ensure_map(self, slot: int, nbytes: int) -> None:
        """Shared image file `slot` of at least nbytes, mapped here and in the child. A new file
        only between images (the child answers in order: what it still owes is taken first)."""
        if self._maps[slot] is not None and nbytes <= self._sizes[slot]:
            return
        while self._outstanding:
            self._held.append(self._read_result())
        if self._maps[slot] is not None:
            self._maps[slot].close()
        where = _shm_dir()
        try:
            fd, path = tempfile.mkstemp(prefix="tracker3d-frame-", dir=where)
        except OSError as e:
            raise Tracker3DError(f"{self.name}: cannot create a shared image file in {where} ({e.strerror})") from None
        try:
            try:  # the space itself, now: a full tmpfs would otherwise kill us (SIGBUS) at the first write
                if hasattr(os, "posix_fallocate"):
                    os.posix_fallocate(fd, 0, nbytes)
                else:
                    os.ftruncate(fd, nbytes)
            except OSError as e:
                raise Tracker3DError(f"{self.name}: no room for a {nbytes} byte image in {where} ({e.strerror}); "
                                     "free some, or detect with --no-detect-processes") from None
            self._maps[slot] = mmap.mmap(fd, nbytes)
            self._sizes[slot] = nbytes
            self._request(("map", slot, path, nbytes))
            self._reply()
        finally:
            os.close(fd)
            os.unlink(path)  # both processes hold it mapped: nothing left on disk or in /dev/shm

    def wait_ready(self) -> None:
        """Wait until the child has built its detector (raises its start-up error); submit() does
        this itself, so a caller only needs it to keep the start-up out of the first frame's time."""
        self.start()
        if self._starting:
            self._starting = False
            self._reply()

    def submit(self, image: np.ndarray | VideoImage, t: float) -> None:
        """Hand one image (captured at t seconds) to the child; result() returns Detections in
        the order of submission. At most SLOTS images may wait for their result. A VideoImage is
        decoded by the child (images of one video in their order: see VideoImageReader)."""
        if self._outstanding + len(self._held) >= SLOTS:
            raise RuntimeError(f"{self.name}: {SLOTS} images already wait for their results")
        self.wait_ready()
        if isinstance(image, VideoImage):
            self._request(("decode", image.path, image.number, image.size, float(t)))
            self._submitted += 1
            self._outstanding += 1
            return
        image = np.ascontiguousarray(image)
        slot = self._submitted % SLOTS
        self._ensure_map(slot, image.nbytes)
        np.copyto(np.frombuffer(self._maps[slot], image.dtype, image.size).reshape(image.shape), image)
        self._request(("detect", slot, float(t), image.shape, image.dtype.str))
        self._submitted += 1
        self._outstanding += 1

    def _read_result(self) -> Detections:
        self._outstanding -= 1
        det, self.last_ms = self._reply()
        return det

    def result(self) -> Detections:
        """The Detections of the oldest image submitted and not yet taken."""
        return self._held.pop(0) if self._held else self._read_result()

    def detect(self, image: np.ndarray, t: float) -> Detections:
        self.submit(image, t)
        return self.result()

    def close(self) -> None:
        """End the child (it exits when its stdin closes) and free the shared images."""
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
        for k, m in enumerate(self._maps):
            if m is not None:
                m.close()
                self._maps[k] = None


def _serve(inp: BinaryIO, out: BinaryIO) -> None:
    """The child's loop: one reply per request, in order, until stdin closes."""
    import time

    from streams.videoimages import VideoImageReader

    detector = None
    views: list[Optional[mmap.mmap]] = [None] * SLOTS
    videos = VideoImageReader()  # the camera's own video, for VideoImages
    later = None  # an error of the work done after the last answer: the next request gets it
    while True:
        msg = _receive(inp)
        if msg is None:
            videos.close()
            return
        try:
            if later is not None:
                raise later
            if msg[0] == "init":
                _, spec, scale, options, level, cpu = msg
                if cpu is not None:
                    os.sched_setaffinity(0, {cpu})
                logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                                    datefmt="%H:%M:%S")
                from . import make_detector

                detector = make_detector(spec, detect_scale=scale, **options)
                for d in _chain(detector):  # each image here is a copy of its own: its warm-up may wait
                    if hasattr(d, "defer_warmup"):
                        d.defer_warmup = True
                reply = ("ok", None)
            elif msg[0] == "map":
                _, slot, path, nbytes = msg
                if views[slot] is not None:
                    views[slot].close()
                with open(path, "r+b") as f:
                    views[slot] = mmap.mmap(f.fileno(), nbytes)
                reply = ("ok", None)
            else:  # "decode" (a VideoImage) or "detect" (an image in a shared slot)
                c = time.perf_counter()
                if msg[0] == "decode":
                    _, path, number, size, t = msg
                    image = videos.read(VideoImage(path, number, tuple(size) if size is not None else None))
                else:
                    _, slot, t, shape, dtype = msg
                    n = int(np.prod(shape))
                    # A copy: detectors may keep frames (the warm-up's median) and the slot is reused
                    # (a decoded image is a fresh array already).
                    image = np.frombuffer(views[slot], np.dtype(dtype), n).reshape(shape).copy()
                det = detector.detect(image, t)
                reply = ("det", (det, (time.perf_counter() - c) * 1e3))
        except Tracker3DError as e:
            reply = ("error", str(e))
        except StreamError as e:
            reply = ("stream_error", str(e))
        except Exception as e:  # noqa: BLE001 - anything the detector raises reaches the parent as one line
            reply = ("error", f"{type(e).__name__}: {e}")
        _send(out, reply)
        try:  # the work the answer did not need (a warm-up frame's), while the caller goes on
            for d in _chain(detector):
                if hasattr(d, "flush"):
                    d.flush()
        except Exception as e:  # noqa: BLE001
            later = e


def _chain(detector) -> list:
    """The detector and the ones it wraps (ScaledDetector.inner)."""
    out = []
    while detector is not None:
        out.append(detector)
        detector = getattr(detector, "inner", None)
    return out


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
