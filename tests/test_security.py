"""Security: CURVE-encrypted publishing admits only authorized subscribers; keys command; no
pickle anywhere in the code; weights loaded with weights_only."""
import re
import socket
import time
from pathlib import Path

import pytest
import zmq
import zmq.auth

from streams import TrackPublisher
from streams.errors import StreamError
from streams.publisher import Subscriber
from tracker3d.cli import main

ROOT = Path(__file__).resolve().parents[1]


def free_endpoint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _received(sub, pub, seconds=1.5):
    """Publish for a while; how many messages did sub get?"""
    got = 0
    end = time.monotonic() + seconds
    k = 0
    while time.monotonic() < end:
        pub.publish(k, k / 30, [])
        k += 1
        if sub.recv(timeout=0.02) is not None:
            got += 1
    return got


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")
def test_curve_admits_only_authorized_subscribers(tmp_path, capsys):
    keys, other = tmp_path / "keys", tmp_path / "other"
    assert main(["keys", "--out", str(keys)]) == 0
    assert "authorized/client.key" in capsys.readouterr().out
    assert (keys / "server.key_secret").stat().st_mode & 0o077 == 0, "secret keys are private to the owner"
    assert main(["keys", "--out", str(keys)]) == 2
    assert "already holds keys" in capsys.readouterr().err
    assert main(["keys", "--out", str(other)]) == 0
    # A subscriber holding another pair of keys (with the right server key) is not authorized.
    (other / "server.key").write_bytes((keys / "server.key").read_bytes())
    ep = free_endpoint()
    with TrackPublisher(ep, curve_keys=str(keys)) as pub:
        good = Subscriber(ep, curve_keys=str(keys), context=zmq.Context())
        bad = Subscriber(ep, curve_keys=str(other), context=zmq.Context())
        plain = Subscriber(ep, context=zmq.Context())
        try:
            time.sleep(0.3)
            assert _received(good, pub) > 10
            assert _received(bad, pub, 0.5) == 0
            assert _received(plain, pub, 0.5) == 0
        finally:
            for s in (good, bad, plain):
                s.close()


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")
def test_rejected_subscriber_is_logged_once_by_the_publisher_and_told_to_check_keys(tmp_path, caplog):
    """A key mismatch used to look like "is a publisher running there?", and the publisher said nothing."""
    keys, other = tmp_path / "keys", tmp_path / "other"
    assert main(["keys", "--out", str(keys)]) == 0 and main(["keys", "--out", str(other)]) == 0
    (other / "server.key").write_bytes((keys / "server.key").read_bytes())
    bad_key = zmq.auth.load_certificate(str(other / "client.key"))[0].decode()
    ep = free_endpoint()
    caplog.set_level("WARNING", logger="streams.curve")
    with TrackPublisher(ep, curve_keys=str(keys)) as pub:
        good = Subscriber(ep, curve_keys=str(keys), context=zmq.Context())
        bad = [Subscriber(ep, curve_keys=str(other), context=zmq.Context()) for _ in range(3)]
        try:
            time.sleep(0.3)
            assert _received(good, pub) > 10
            assert sum(_received(b, pub, 0.4) for b in bad) == 0
            assert pub.auth.rejections.rejected >= 3
        finally:
            for s in [good] + bad:
                s.close()
    logged = [r.getMessage() for r in caplog.records if r.name == "streams.curve"]
    assert len(logged) == 1, logged
    assert bad_key in logged[0] and "127.0.0.1" in logged[0] and "authorized" in logged[0]
    assert "key" in bad[0].silence_hint() and "authorized" in bad[0].silence_hint()
    with Subscriber(ep, context=zmq.Context()) as plain:
        assert "key" not in plain.silence_hint()


def test_rejected_subscribers_log_is_bounded(caplog):
    from streams.curve import RejectionLog

    caplog.set_level("WARNING", logger="streams.curve")
    rej = RejectionLog(Path("keys/authorized"), limit=2)
    for k in range(5):
        for _ in range(3):
            rej.reject(f"key{k}".encode(), "127.0.0.1")
    lines = [r.getMessage() for r in caplog.records]
    assert rej.rejected == 15 and len(lines) == 3 and "no more are logged" in lines[-1]


def test_curve_key_errors_are_clear(tmp_path):
    with pytest.raises(StreamError, match="server.key_secret: missing"):
        TrackPublisher(free_endpoint(), curve_keys=str(tmp_path))
    (tmp_path / "client.key_secret").write_text("not a certificate")
    (tmp_path / "server.key").write_text("")
    with pytest.raises(StreamError, match="client.key_secret: (not a ZMQ certificate|holds no secret key)"):
        Subscriber(free_endpoint(), curve_keys=str(tmp_path))


def test_no_pickle_anywhere():
    """Nothing we ship or test unpickles: numpy loads refuse pickles, torch loads are weights_only."""
    bad = []
    for path in list(ROOT.glob("*/**/*.py")):
        rel = path.relative_to(ROOT).parts
        if any(part.startswith(".") for part in rel) or path.name == "test_security.py":  # .venv, .devcarry, ...
            continue
        text = path.read_text()
        for n, line in enumerate(text.splitlines(), 1):
            if re.search(r"^\s*(import pickle|from pickle|import cPickle|import dill|import joblib)", line) or \
                    "allow_pickle=True" in line or "pickle.load" in line:
                bad.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
            if re.search(r"torch\.load\(", line) and "weights_only=True" not in line:
                bad.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bad, "\n".join(bad)
