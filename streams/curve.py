"""CURVE encryption and authentication for remote subscribers (pyzmq's zmq.auth).

A key folder made by `make_keys(DIR)` (`tracker3d keys --out DIR`) holds:
- `server.key_secret` / `server.key`: the publisher's key pair (the secret stays with it);
- `client.key_secret` / `client.key`: a subscriber's key pair (give it to that subscriber, with
  `server.key`);
- `authorized/`: the public keys of clients the publisher accepts (`client.key` is put there; add
  other clients' `.key` files to admit them).
Both ends pass `--curve-keys DIR`; a subscriber without an authorized key receives nothing.
"""
from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path

import zmq
import zmq.auth

from .errors import StreamError

log = logging.getLogger(__name__)
MAX_LOGGED_REJECTIONS = 20  # distinct rejected clients logged per publisher; then one line says so


def _need_curve() -> None:
    if not zmq.has("curve"):
        raise StreamError("this libzmq was built without CURVE support (libsodium); encryption is unavailable")


def make_keys(folder: str | os.PathLike, overwrite: bool = False) -> Path:
    """Create a server and a client key pair and the authorized-clients folder; returns the folder."""
    _need_curve()
    d = Path(folder)
    if (d / "server.key_secret").exists() and not overwrite:
        raise StreamError(f"{d}: already holds keys (pass --force to replace them)")
    d.mkdir(parents=True, exist_ok=True)
    for name in ("server", "client"):
        pub, sec = zmq.auth.create_certificates(str(d), name)
        os.chmod(sec, 0o600)
    (d / "authorized").mkdir(exist_ok=True)
    shutil.copy(d / "client.key", d / "authorized" / "client.key")
    return d


def _load(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    if not path.exists():
        raise StreamError(f"{path}: missing (make keys with: tracker3d keys --out {path.parent})")
    try:
        return zmq.auth.load_certificate(str(path))
    except (ValueError, OSError) as e:
        raise StreamError(f"{path}: not a ZMQ certificate ({e})") from None


def server_keys(folder: str | os.PathLike) -> tuple[bytes, bytes]:
    """(public, secret) of the publisher."""
    pub, sec = _load(Path(folder) / "server.key_secret", True)
    if sec is None:
        raise StreamError(f"{Path(folder) / 'server.key_secret'}: holds no secret key")
    return pub, sec


def client_keys(folder: str | os.PathLike) -> tuple[bytes, bytes, bytes]:
    """(public, secret, server public) of a subscriber."""
    d = Path(folder)
    pub, sec = _load(d / "client.key_secret", True)
    if sec is None:
        raise StreamError(f"{d / 'client.key_secret'}: holds no secret key")
    server_pub, _ = _load(d / "server.key", False)
    return pub, sec, server_pub


class RejectionLog:
    """Logs each rejected client key once (a refused subscriber keeps reconnecting), at most
    `limit` of them; thread-safe (ZAP runs in the authenticator's thread)."""

    def __init__(self, allowed: Path, limit: int = MAX_LOGGED_REJECTIONS):
        self.allowed = allowed
        self.limit = limit
        self.seen: set[bytes] = set()
        self.rejected = 0  # rejected handshakes, repeats included
        self._lock = threading.Lock()

    def reject(self, key: bytes, address: str) -> None:
        with self._lock:
            self.rejected += 1
            if key in self.seen or len(self.seen) > self.limit:
                return
            self.seen.add(key)
            if len(self.seen) > self.limit:
                log.warning("CURVE: more than %d rejected subscribers; no more are logged", self.limit)
                return
        log.warning("CURVE: rejected a subscriber from %s: its public key %s is not in %s (add its .key file "
                    "there to admit it)", address or "?", key.decode("ascii", "replace"), self.allowed)


def start_authenticator(ctx: zmq.Context, folder: str | os.PathLike):
    """A running ThreadAuthenticator that admits the clients whose public keys are in
    FOLDER/authorized and logs the others (once per key; stop() it when the publisher closes)."""
    from zmq.auth.thread import ThreadAuthenticator

    _need_curve()
    allowed = Path(folder) / "authorized"
    if not allowed.is_dir():
        raise StreamError(f"{allowed}: missing (the folder of authorized client public keys)")
    keys = set(zmq.auth.load_certificates(str(allowed)))  # z85 public keys, read once as configure_curve does
    rejections = RejectionLog(allowed)
    peer = threading.local()

    class Authenticator(ThreadAuthenticator):
        async def handle_zap_message(self, msg: list[bytes]) -> None:
            # ZAP request frames (RFC 27): version, request id, domain, address, identity, mechanism, ...
            peer.address = msg[3].decode("utf-8", "replace") if len(msg) > 3 else ""
            await super().handle_zap_message(msg)

    class Keys:
        def callback(self, domain: str, key: bytes) -> bool:
            if key in keys:
                return True
            rejections.reject(key, getattr(peer, "address", ""))
            return False

    auth = Authenticator(ctx)
    auth.rejections = rejections
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=Keys())
    return auth
