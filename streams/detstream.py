"""Live detections from other programs: detections2d messages over ZMQ -> DetectionPairs.

A `DetectionStream` subscribes (SUB, connect) to one or more endpoints where a user's detector
publishes `detections2d` messages (streams.messages), one per camera and capture time, and pairs
the two cameras' messages by capture time like `streams.pairing` pairs frames: within `tolerance`
seconds they make a pair; a message with no partner is dropped and counted, and when one camera
falls silent for `single_after_s` (wall clock) the other camera's messages go on alone (the
missing view's tracks coast). A pair's index is the publisher's `frame` when given, else a count.
Bad messages (not JSON, wrong schema or field) are counted and each
distinct error is logged once; nothing a publisher sends can stop the stream. Only the newest pair
is kept for the consumer (a slow loop drops, never queues), as with live cameras.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Optional, Sequence

import zmq

from .base import LatestSlot
from .detections import Boxes2D, DetectionPair
from .errors import SchemaError, StreamError
from .messages import (
    DET_TOPIC,
    decode,
    encode,
    make_detections_message,
    validate_detections,
)
from .pairing import PairStats, StereoSource
from .publisher import is_loopback_endpoint

log = logging.getLogger(__name__)

DEFAULT_DET_ENDPOINT = "tcp://127.0.0.1:5557"
MAX_LOGGED_ERRORS = 10


@dataclass
class DetectionStreamStats(PairStats):
    received: int = 0  # valid detections2d messages
    invalid: int = 0  # messages refused (not JSON, wrong schema or field)
    late: int = 0  # valid messages older than what that camera already delivered


@dataclass
class _Msg:
    t: float
    boxes: Boxes2D
    arrived: float  # time.monotonic()
    wall: float  # time.time()
    frame: Optional[int] = None


def boxes_from_message(msg: dict) -> Boxes2D:
    """A validated detections2d message's boxes (pixels, xywh -> xyxy), scores and classes."""
    n = len(msg["boxes"])
    return Boxes2D.from_xywh(msg["boxes"] if n else [], msg["scores"] if n else None, msg.get("classes"))


class DetectionStream(StereoSource):
    """DetectionPairs from detections2d messages published by other programs (live)."""

    live = True
    images = False

    def __init__(self, endpoints: str | Sequence[str], tolerance: float = 0.010, single_after_s: float = 1.0,
                 context: Optional[zmq.Context] = None, poll_ms: int = 50):
        super().__init__()
        self.stats = DetectionStreamStats()
        self.endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not self.endpoints:
            raise StreamError("detections: give at least one endpoint to subscribe to")
        if not tolerance >= 0:
            raise StreamError(f"--tolerance {tolerance}: expected seconds >= 0")
        self.tolerance = float(tolerance)
        self.single_after_s = float(single_after_s)
        self._ctx = context or zmq.Context.instance()
        self._poll_ms = int(poll_ms)
        self._queues: tuple[deque, deque] = (deque(), deque())
        self._applied = [float("-inf"), float("-inf")]  # newest time handed on per camera
        self._index = 0
        self._logged: set[str] = set()
        self._slot: LatestSlot[DetectionPair] = LatestSlot()
        self._stop = threading.Event()
        sock = self._ctx.socket(zmq.SUB)  # created here so a bad endpoint fails at once, in the caller
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 10000)
        sock.setsockopt(zmq.SUBSCRIBE, DET_TOPIC)
        try:
            for ep in self.endpoints:
                sock.connect(ep)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise StreamError(f"{ep}: cannot subscribe ({exc.strerror}; expected tcp://HOST:PORT or ipc://PATH)") \
                from None
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name="detections-in", daemon=True)
        self._thread.start()

    # ---- the receiving thread (it owns the socket) -----------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._sock.poll(self._poll_ms):
                    while True:
                        try:
                            parts = self._sock.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._take(parts)
                self._pair(time.monotonic())
        except Exception as exc:  # a bug here must reach the consumer, not vanish with the thread
            self._slot.fail(exc)
        finally:
            self._sock.close(0)

    def _bad(self, why: str) -> None:
        self.stats.invalid += 1
        if why not in self._logged and len(self._logged) < MAX_LOGGED_ERRORS:
            self._logged.add(why)
            log.warning("detections2d: refused a message (%s); further ones like it are only counted", why)

    def _take(self, parts: list[bytes]) -> None:
        if len(parts) != 2:
            self._bad(f"expected 2 frames [topic, payload], got {len(parts)}")
            return
        try:
            msg = decode(parts[1], validate=validate_detections)
        except SchemaError as exc:
            self._bad(str(exc))
            return
        cam = msg["camera"]
        q = self._queues[cam]
        t = float(msg["t"])
        if t <= self._applied[cam] or (q and t <= q[-1].t):
            self.stats.late += 1
            return
        self.stats.received += 1
        q.append(_Msg(t, boxes_from_message(msg), time.monotonic(), time.time(), msg.get("frame")))

    def _pair(self, now: float) -> None:
        q0, q1 = self._queues
        while q0 and q1:
            a, b = q0[0], q1[0]
            d = b.t - a.t
            if abs(d) <= self.tolerance:
                q0.popleft()
                q1.popleft()
                self._emit(a, b)
            elif d > 0:  # camera 1 is past a: a has no partner
                q0.popleft()
                self.stats.dropped0 += 1
            else:
                q1.popleft()
                self.stats.dropped1 += 1
        # One camera silent: the other's messages go on alone once they have waited long enough.
        for cam, q in ((0, q0), (1, q1)):
            other = q1 if cam == 0 else q0
            while q and not other and now - q[0].arrived > self.single_after_s:
                m = q.popleft()
                self._emit(m, None) if cam == 0 else self._emit(None, m)

    def _emit(self, a: Optional[_Msg], b: Optional[_Msg]) -> None:
        t = a.t if a is not None else b.t
        t0 = a.t if a is not None else float("nan")
        t1 = b.t if b is not None else float("nan")
        # A missing view coasts at the pair's time: never hand a camera a time before one it had.
        if (a is not None and a.t < self._applied[0]) or (b is not None and b.t < self._applied[1]) or \
                (a is None and t < self._applied[0]) or (b is None and t < self._applied[1]):
            self.stats.late += 1
            return
        self._applied = [t0 if a is not None else t, t1 if b is not None else t]
        wall = max(m.wall for m in (a, b) if m is not None)
        # The pair's index: the publisher's frame number when it gives one (camera 0's first).
        frame = next((m.frame for m in (a, b) if m is not None and m.frame is not None), None)
        pair = DetectionPair(self._index if frame is None else frame, t0, t1, a.boxes if a else None, b.boxes if b else None, wall=wall)
        self._index += 1
        self.stats.pairs += 1
        if a is not None and b is not None:
            self.stats.skews.append(b.t - a.t)
        elif a is not None:
            self.stats.single0 += 1
        else:
            self.stats.single1 += 1
        self._slot.put(pair)
        self.stats.overwritten = self._slot.overwritten

    # ---- the consumer side ---------------------------------------------------------------------------
    def read(self, timeout: Optional[float] = None) -> Optional[DetectionPair]:
        """The newest pair not taken yet, or None when none came within timeout seconds."""
        return self._slot.take(timeout)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)
        self._slot.close()


class DetectionPublisher:
    """For a detector written in Python: publishes detections2d messages on a bound PUB socket
    (loopback unless allow_remote) for `tracker3d live --det-source ENDPOINT`. Never blocks: a
    message no subscriber can take is dropped (counted in `dropped`)."""

    def __init__(self, endpoint: str = DEFAULT_DET_ENDPOINT, allow_remote: bool = False,
                 context: Optional[zmq.Context] = None, hwm: int = 1000):
        if not is_loopback_endpoint(endpoint) and not allow_remote:
            raise StreamError(f"{endpoint}: not a loopback address; binding to the network needs allow_remote=True")
        self.sock = (context or zmq.Context.instance()).socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, int(hwm))
        try:
            self.sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self.sock.close(0)
            raise StreamError(f"{endpoint}: cannot bind ({exc.strerror})") from None
        self.endpoint = endpoint
        self.sent = self.dropped = 0

    def publish(self, camera: int, t: float, boxes_xywh, scores, classes=None, frame: Optional[int] = None) -> dict:
        """One camera's boxes (pixels: x, y top-left, w, h) captured at t seconds; returns the
        message. SchemaError if it would not validate."""
        msg = validate_detections(make_detections_message(camera, t, boxes_xywh, scores, classes, frame))
        try:
            self.sock.send_multipart([DET_TOPIC, encode(msg)], flags=zmq.NOBLOCK)
            self.sent += 1
        except zmq.Again:
            self.dropped += 1
        return msg

    def close(self) -> None:
        self.sock.close(0)

    def __enter__(self) -> "DetectionPublisher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
