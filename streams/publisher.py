"""ZMQ PUB/SUB for tracks3d messages.

The publisher never blocks the tracking loop: it sends with NOBLOCK onto a bounded queue
(SNDHWM); ZMQ drops messages for a subscriber whose queue is full, and that subscriber sees the
gap in `seq` (the publisher cannot see those drops: its stats say "unknown"). Binding to
anything but loopback needs `allow_remote=True`; `curve_keys=DIR` on both ends encrypts and
admits only authorized subscribers (streams.curve).

A flood of subscriptions costs the loop a bounded time and the publisher keeps none of it: the
XPUB socket is in manual mode, so only subscriptions that can match the `tracks3d` topic are
stored (any other is counted and forgotten), and each publish() reads at most
`MAX_SUBSCRIPTION_EVENTS` subscription messages. libzmq itself still records every subscription
a peer sent until that peer disconnects (and takes them in as fast as its I/O thread decodes
them: the receive HWM bounds one hand-off, not their number), so after
`MAX_IGNORED_SUBSCRIPTIONS` foreign ones the publisher cuts its peers' connections (one warning):
that frees them, and honest subscribers reconnect and resubscribe on their own (a gap in `seq`).
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import stat
import time
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import urlparse

import zmq
from zmq.utils.monitor import recv_monitor_message

from .base import Closeable, Readable
from .errors import SchemaError, StreamError
from .messages import TOPIC, decode, encode, make_message

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5556"
MAX_SUBSCRIPTION_EVENTS = 256  # subscription messages read per publish(): bounds its time
SUBSCRIPTION_RCVHWM = 64  # subscription messages per hand-off from the I/O thread (per peer)
MAX_IGNORED_SUBSCRIPTIONS = 100  # foreign subscriptions before the peers are cut off


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


def check_tcp_port(endpoint: str) -> None:
    """StreamError unless a tcp:// endpoint ends in a port 1..65535, or 0 / * (any free port)."""
    if not endpoint.startswith("tcp://"):
        return
    rest = endpoint[len("tcp://"):]
    host, sep, port = rest.rpartition(":")
    if not sep or not host:
        raise StreamError(f"{endpoint}: expected tcp://HOST:PORT")
    if port == "*":
        return
    if not port.isdigit() or not (0 <= int(port) <= 65535):
        raise StreamError(f"{endpoint}: port {port!r}: expected 1..65535 (or 0 or * for any free port)")


def _ipc_path(endpoint: str) -> Optional[str]:
    """The file an ipc:// endpoint binds (None for an abstract socket, ipc://@name)."""
    path = endpoint[len("ipc://"):]
    return None if path.startswith("@") or not path else path


def _check_ipc_path(endpoint: str, path: str) -> None:
    """Refuse to let ZMQ replace anything but a stale socket file (it unlinks what is there)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise StreamError(f"{endpoint}: {path} exists and is not a socket (refusing to replace it; "
                          "pick another path)")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError:
            return  # a stale socket file left by a process that died: ZMQ replaces it
    raise StreamError(f"{endpoint}: address already in use (another tracker3d running? pick another path)")


@dataclass
class PublisherStats:
    """What the publisher knows. A PUB socket cannot see what a subscriber lost (ZMQ drops
    per subscriber, silently): subscribers see that as gaps in `seq`."""

    sent: int = 0  # messages handed to ZMQ
    refused: int = 0  # sends ZMQ refused at once (the loop did not wait)
    peers: Optional[int] = None  # connected peers (tcp/ipc, from the socket monitor); None: unknown
    subscriptions: int = 0  # live subscriptions that match the tracks3d topic
    ignored_subscriptions: int = 0  # subscriptions to other topics: counted, never stored
    peers_cut: int = 0  # connections cut because of a flood of foreign subscriptions
    bytes: int = 0
    _peer_fds: set = field(default_factory=set, repr=False)

    @property
    def subscribers(self) -> int:
        """Connected peers when known, else the live tracks3d subscriptions."""
        return self.peers if self.peers is not None else self.subscriptions

    @property
    def dropped_at_subscribers(self) -> Optional[int]:
        """Always None (unknown): a PUB socket does not see a subscriber's losses."""
        return None

    def as_dict(self) -> dict:
        return {"sent": self.sent, "refused": self.refused,
                "peers": "unknown" if self.peers is None else self.peers,
                "subscriptions": self.subscriptions, "ignored_subscriptions": self.ignored_subscriptions,
                "peers_cut": self.peers_cut,
                "dropped_at_subscribers": "unknown", "bytes": self.bytes}


class TrackPublisher(Closeable):
    """Publishes tracks3d messages on an XPUB socket in manual mode (PUB semantics, plus peer
    and subscription counts). `endpoint` is the address actually bound (a tcp port 0 or *
    resolved to the port the system chose)."""

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, hwm: int = 1000, allow_remote: bool = False,
                 context: Optional[zmq.Context] = None, frame_id: str = "cam0", curve_keys: Optional[str] = None):
        if not is_loopback_endpoint(endpoint) and not allow_remote:
            raise StreamError(f"{endpoint}: not a loopback address; binding to the network needs an explicit "
                              "--allow-remote (anyone who can reach it can read your tracks)")
        check_tcp_port(endpoint)
        self._ipc_file = _ipc_path(endpoint) if endpoint.startswith("ipc://") else None
        if self._ipc_file is not None:
            _check_ipc_path(endpoint, self._ipc_file)
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
        self.sock.setsockopt(zmq.RCVHWM, SUBSCRIPTION_RCVHWM)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.XPUB_MANUAL, 1)
        if curve_keys is not None:
            self.sock.curve_secretkey = secret
            self.sock.curve_publickey = public
            self.sock.curve_server = True
        self._monitor = None
        if not endpoint.startswith("inproc://"):
            self._monitor = self.sock.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        try:
            self.sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self._close_sockets()
            if exc.errno == errno.EADDRINUSE:
                raise StreamError(f"{endpoint}: address already in use (another tracker3d running? "
                                  "pick another port with --publish)") from None
            raise StreamError(f"{endpoint}: cannot bind ({exc.strerror})") from None
        bound = self.sock.getsockopt(zmq.LAST_ENDPOINT)
        if endpoint.startswith("tcp://") and bound:
            self.endpoint = bound.decode() if isinstance(bound, bytes) else str(bound)
        self.stats = PublisherStats(peers=None if self._monitor is None else 0)
        self._ignored_since_cut = 0
        self.seq = 0

    def _drain_monitor(self) -> None:
        if self._monitor is None:
            return
        for _ in range(MAX_SUBSCRIPTION_EVENTS):
            try:
                ev = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                break
            if ev["event"] == zmq.EVENT_ACCEPTED:
                self.stats._peer_fds.add(ev["value"])
            elif ev["event"] == zmq.EVENT_DISCONNECTED:
                self.stats._peer_fds.discard(ev["value"])
        self.stats.peers = len(self.stats._peer_fds)

    def _drain_subscriptions(self, limit: int = MAX_SUBSCRIPTION_EVENTS) -> None:
        """Read at most `limit` subscription messages; store only those that match TOPIC."""
        self._drain_monitor()
        for _ in range(limit):
            try:
                ev = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            kind, topic = ev[:1], ev[1:]
            if kind not in (b"\x01", b"\x00"):
                continue
            if not TOPIC.startswith(topic):  # can never match a tracks3d message: not stored
                if kind == b"\x01":
                    self.stats.ignored_subscriptions += 1
                    self._ignored_since_cut += 1
                    if self._ignored_since_cut > MAX_IGNORED_SUBSCRIPTIONS:
                        self._cut_peers()
                continue
            # Manual mode: the (un)subscription applies to the peer the last message came from.
            if kind == b"\x01":
                self.sock.setsockopt(zmq.SUBSCRIBE, topic)
                self.stats.subscriptions += 1
            else:
                self.sock.setsockopt(zmq.UNSUBSCRIBE, topic)
                self.stats.subscriptions = max(0, self.stats.subscriptions - 1)

    def _cut_peers(self) -> None:
        """Shut down every peer connection (ZMQ then drops their subscriptions; SUB sockets
        reconnect and resubscribe by themselves)."""
        self._ignored_since_cut = 0
        self._drain_monitor()
        fds = sorted(self.stats._peer_fds)
        if not fds:
            return
        (log.warning if self.stats.peers_cut == 0 else log.debug)(
            "%s: a peer sent over %d subscriptions to other topics than %s: cutting %d connection(s) "
                    "to free them (warned once)", self.endpoint, MAX_IGNORED_SUBSCRIPTIONS, TOPIC.decode(), len(fds))
        for fd in fds:
            try:
                s = socket.socket(fileno=fd)
            except OSError:
                continue
            try:
                s.shutdown(socket.SHUT_RDWR)
                self.stats.peers_cut += 1
            except OSError:
                pass
            finally:
                s.detach()  # ZMQ owns the descriptor and closes it

    def publish(self, frame: int, t: float, tracks: list[dict], latency_ms: Optional[float] = None) -> dict:
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
            self.stats.refused += 1
        return msg

    def _close_sockets(self) -> None:
        if self._monitor is not None:
            try:
                self.sock.disable_monitor()
            except zmq.ZMQError:
                pass
            self._monitor.close(0)
            self._monitor = None
        self.sock.close(0)
        if self.auth is not None:
            self.auth.stop()
            self.auth = None

    def close(self) -> None:
        if self.sock.closed:
            return
        self._close_sockets()
        if self._ipc_file is not None:  # ZMQ unlinks it in its I/O thread, maybe after we exit
            try:
                if stat.S_ISSOCK(os.lstat(self._ipc_file).st_mode):
                    os.unlink(self._ipc_file)
            except FileNotFoundError:
                pass


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
