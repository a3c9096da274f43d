"""ZMQ PUB/SUB for tracks3d messages.

The publisher never blocks the tracking loop: it sends with NOBLOCK onto a bounded queue
(SNDHWM); ZMQ drops messages for a subscriber whose queue is full, and that subscriber sees the
gap in `seq`. Binding to anything but loopback needs `allow_remote=True`; `curve_keys=DIR` on both ends
encrypts and admits only authorized subscribers (streams.curve).
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlparse

import zmq

from .base import Closeable, Readable
from .errors import SchemaError, StreamError
from .messages import TOPIC, decode, encode, make_message

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5556"


def is_loopback_endpoint(endpoint: str) -> bool:
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    if not endpoint.startswith("tcp://"):
        raise StreamError(f"{endpoint}: expected tcp://HOST:PORT, ipc://PATH or inproc://NAME")
    host = urlparse(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class PublisherStats:
    sent: int = 0
    dropped: int = 0  # sends refused because every queue was full (the loop did not wait)
    subscribers: int = 0  # current subscriptions seen on the XPUB socket
    bytes: int = 0


class TrackPublisher(Closeable):
    """Publishes tracks3d messages on an XPUB socket (PUB semantics, plus a subscriber count)."""

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, hwm: int = 1000, allow_remote: bool = False,
                 context: Optional[zmq.Context] = None, frame_id: str = "cam0", curve_keys: Optional[str] = None):
        if not is_loopback_endpoint(endpoint) and not allow_remote:
            raise StreamError(f"{endpoint}: not a loopback address; binding to the network needs an explicit "
                              "--allow-remote (anyone who can reach it can read your tracks)")
        self.endpoint = endpoint
        self.frame_id = frame_id
        self.ctx = context or zmq.Context.instance()
        self.auth = None
        if curve_keys is not None:
            from .curve import server_keys, start_authenticator

            public, secret = server_keys(curve_keys)
            # A private context: the authenticator serves every socket of its context.
            self.ctx = context or zmq.Context()
            self.auth = start_authenticator(self.ctx, curve_keys)
        self.sock = self.ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.SNDHWM, int(hwm))
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve_keys is not None:
            self.sock.curve_secretkey = secret
            self.sock.curve_publickey = public
            self.sock.curve_server = True
        try:
            self.sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self.sock.close(0)
            if self.auth is not None:
                self.auth.stop()
            if exc.errno == errno.EADDRINUSE:
                raise StreamError(f"{endpoint}: address already in use (another tracker3d running? "
                                  "pick another port with --publish)") from None
            raise StreamError(f"{endpoint}: cannot bind ({exc.strerror})") from None
        self.stats = PublisherStats()
        self.seq = 0

    def _drain_subscriptions(self) -> None:
        while True:
            try:
                ev = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if ev[:1] == b"\x01":
                self.stats.subscribers += 1
            elif ev[:1] == b"\x00":
                self.stats.subscribers = max(0, self.stats.subscribers - 1)

    def publish(self, frame: int, t: float, tracks: list[dict], latency_ms: float = 0.0) -> dict:
        """Send one message (seq assigned here); returns it. Never blocks."""
        self._drain_subscriptions()
        msg = make_message(self.seq, frame, t, tracks, self.frame_id, latency_ms)
        self.seq += 1
        payload = encode(msg)
        try:
            self.sock.send_multipart([TOPIC, payload], flags=zmq.NOBLOCK)
            self.stats.sent += 1
            self.stats.bytes += len(payload)
        except zmq.Again:
            self.stats.dropped += 1
        return msg

    def close(self) -> None:
        self.sock.close(0)
        if self.auth is not None:
            self.auth.stop()
            self.auth = None


class Subscriber(Readable[dict]):
    """Iterator over decoded tracks3d messages from a publisher.

    `missed` counts messages lost in transit (gaps in seq); a restart of the publisher (seq going
    back) is not a gap. Malformed messages are skipped and counted in `invalid` (strict=True raises).
    `conflate=True` keeps only the newest message (for displays).
    """

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, timeout: Optional[float] = None, conflate: bool = False,
                 strict: bool = False, rcvhwm: int = 1000, context: Optional[zmq.Context] = None,
                 curve_keys: Optional[str] = None):
        self.endpoint = endpoint
        self.ctx = context or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        if conflate:
            self.sock.setsockopt(zmq.CONFLATE, 1)
        else:
            self.sock.setsockopt(zmq.RCVHWM, int(rcvhwm))
        if curve_keys is not None:  # a key folder: client.key_secret and server.key
            from .curve import client_keys

            pub, sec, server_pub = client_keys(curve_keys)
            self.sock.curve_publickey, self.sock.curve_secretkey = pub, sec
            self.sock.curve_serverkey = server_pub
        self.curve = curve_keys is not None
        self.sock.setsockopt(zmq.SUBSCRIBE, TOPIC)
        self.sock.connect(endpoint)
        self.timeout = timeout
        self.conflate = conflate
        self.strict = strict
        self.missed = 0
        self.invalid = 0
        self.received = 0
        self.skipped = 0  # queued messages recv_newest() dropped undecoded for a newer one
        self.last_gap = 0
        self._last_seq: Optional[int] = None

    def recv(self, timeout: Optional[float] = None) -> Optional[dict]:
        """The next valid message, or None if none came within timeout seconds."""
        timeout = self.timeout if timeout is None else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self.sock.poll(None if wait is None else int(wait * 1000)):
                return None
            msg = self._accept(self.sock.recv_multipart(zmq.NOBLOCK))
            if msg is not None:
                return msg

    def _accept(self, parts: list[bytes], skipped: int = 0) -> Optional[dict]:
        """Decode one received message and account for it (None: malformed, skipped and counted);
        `skipped` older messages were dropped just before it on purpose (not lost in transit)."""
        payload = parts[-1] if self.conflate else (parts[1] if len(parts) == 2 else None)
        try:
            if payload is None:
                raise SchemaError(f"message: expected 2 frames [topic, payload], got {len(parts)}")
            msg = decode(payload)
        except SchemaError as exc:
            self.invalid += 1
            if self.strict:
                raise
            log.warning("skipping malformed message: %s", exc)
            return None
        seq = msg["seq"]
        self.last_gap = 0
        if self._last_seq is not None and seq > self._last_seq + 1:
            self.last_gap = max(seq - self._last_seq - 1 - skipped, 0)
            if not self.conflate:
                self.missed += self.last_gap
        self._last_seq = seq
        self.received += 1
        return msg

    def read(self, timeout: Optional[float] = None) -> Optional[dict]:
        return self.recv(timeout)

    def recv_newest(self, timeout: Optional[float] = None) -> Optional[dict]:
        """The newest message queued, waiting up to timeout seconds for one: older queued ones are
        dropped undecoded (counted in `skipped`, not in `missed`), so a slow display never falls
        behind. None if nothing came in time (or the newest was malformed)."""
        timeout = self.timeout if timeout is None else timeout
        if not self.sock.poll(None if timeout is None else int(timeout * 1000)):
            return None
        parts, n = None, 0
        while True:  # drain the queue, keep the last
            try:
                parts = self.sock.recv_multipart(zmq.NOBLOCK)
                n += 1
            except zmq.Again:
                break
        if parts is None:
            return None
        self.skipped += n - 1
        return self._accept(parts, skipped=n - 1)

    def silence_hint(self) -> str:
        """What to check when no message came: the publisher, and with CURVE the keys too (a
        rejected subscriber sees only silence)."""
        if not self.curve:
            return "is a publisher running there?"
        return ("is a publisher running there, with --curve-keys? CURVE keys in use: a subscriber the publisher "
                "rejects receives nothing; check that this key folder's server.key is the publisher's and "
                "that its client.key is in the publisher's authorized/ folder")

    def close(self) -> None:
        self.sock.close(0)


def subscribe(endpoint: str = DEFAULT_ENDPOINT, timeout: Optional[float] = None, **kw) -> Subscriber:
    """Connect to a tracker3d publisher; iterate the result for decoded messages."""
    return Subscriber(endpoint, timeout=timeout, **kw)
