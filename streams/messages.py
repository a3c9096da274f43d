"""The `tracks3d` message: build, encode (UTF-8 JSON, never pickle), decode and validate."""
from __future__ import annotations

import json
import math
from typing import Any

from .errors import SchemaError

SCHEMA = "tracker3d/tracks3d@1"
TOPIC = b"tracks3d"
STATES = ("tentative", "tracked", "coasting", "lost")
MAX_PAYLOAD = 16 * 1024 * 1024


def _num(v: Any, where: str, finite: bool = True) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SchemaError(f"{where}: expected a number, got {type(v).__name__}")
    if finite and not math.isfinite(v):
        raise SchemaError(f"{where}: expected a finite number")
    return float(v)


def _int(v: Any, where: str, minimum: int | None = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise SchemaError(f"{where}: expected an integer, got {type(v).__name__}")
    if minimum is not None and v < minimum:
        raise SchemaError(f"{where}: expected >= {minimum}, got {v}")
    return v


def _vec(v: Any, n: int, where: str) -> None:
    if not isinstance(v, list) or len(v) != n:
        raise SchemaError(f"{where}: expected a list of {n} numbers")
    for i, x in enumerate(v):
        _num(x, f"{where}[{i}]")


def validate_message(msg: Any) -> dict:
    """Check a decoded message against the tracks3d@1 schema; SchemaError names the field."""
    if not isinstance(msg, dict):
        raise SchemaError("message: expected a JSON object")
    if msg.get("schema") != SCHEMA:
        raise SchemaError(f"schema: expected {SCHEMA!r}, got {msg.get('schema')!r}")
    for key in ("seq", "frame"):
        if key not in msg:
            raise SchemaError(f"{key}: missing")
        _int(msg[key], key)
    for key in ("t", "latency_ms"):
        if key not in msg:
            raise SchemaError(f"{key}: missing")
        _num(msg[key], key)
    if not isinstance(msg.get("frame_id"), str):
        raise SchemaError("frame_id: expected a string")
    tracks = msg.get("tracks")
    if not isinstance(tracks, list):
        raise SchemaError("tracks: expected a list")
    for i, tr in enumerate(tracks):
        w = f"tracks[{i}]"
        if not isinstance(tr, dict):
            raise SchemaError(f"{w}: expected an object")
        _int(tr.get("id"), f"{w}.id")
        _vec(tr.get("xyz"), 3, f"{w}.xyz")
        _vec(tr.get("vel"), 3, f"{w}.vel")
        cov = tr.get("cov")
        if not isinstance(cov, list) or len(cov) != 3:
            raise SchemaError(f"{w}.cov: expected a 3x3 list")
        for r, row in enumerate(cov):
            _vec(row, 3, f"{w}.cov[{r}]")
        p = _num(tr.get("persistence"), f"{w}.persistence")
        if not 0.0 <= p <= 1.0:
            raise SchemaError(f"{w}.persistence: expected 0..1, got {p}")
        _num(tr.get("age_s"), f"{w}.age_s")
        if tr.get("state") not in STATES:
            raise SchemaError(f"{w}.state: expected one of {', '.join(STATES)}")
        for cam in ("cam0", "cam1"):
            c = tr.get(cam)
            if c is None:
                continue
            if not isinstance(c, dict):
                raise SchemaError(f"{w}.{cam}: expected an object or null")
            _int(c.get("track"), f"{w}.{cam}.track")
            _vec(c.get("uv"), 2, f"{w}.{cam}.uv")
    return msg


_VEC3 = {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3}
_CAM = {"type": ["object", "null"], "properties": {
    "track": {"type": "integer", "minimum": 0},
    "uv": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}}}
# The same schema as JSON Schema (for MCAP channels, Foxglove, other languages' validators).
JSON_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema", "title": SCHEMA, "type": "object",
    "required": ["schema", "seq", "frame", "t", "frame_id", "latency_ms", "tracks"],
    "properties": {
        "schema": {"const": SCHEMA}, "seq": {"type": "integer", "minimum": 0},
        "frame": {"type": "integer", "minimum": 0}, "t": {"type": "number", "description": "seconds"},
        "frame_id": {"type": "string", "description": "cam0 (camera 0 optical frame, OpenCV axes) or world"},
        "latency_ms": {"type": "number"},
        "tracks": {"type": "array", "items": {
            "type": "object", "required": ["id", "xyz", "vel", "cov", "persistence", "age_s", "state"],
            "properties": {
                "id": {"type": "integer", "minimum": 0}, "xyz": {**_VEC3, "description": "metres"},
                "vel": {**_VEC3, "description": "metres per second"},
                "cov": {"type": "array", "items": _VEC3, "minItems": 3, "maxItems": 3},
                "persistence": {"type": "number", "minimum": 0, "maximum": 1},
                "age_s": {"type": "number"}, "state": {"enum": list(STATES)}, "cam0": _CAM, "cam1": _CAM}}},
    },
}


def make_message(seq: int, frame: int, t: float, tracks: list[dict], frame_id: str = "cam0",
                 latency_ms: float = 0.0) -> dict:
    return {"schema": SCHEMA, "seq": int(seq), "frame": int(frame), "t": float(t), "frame_id": frame_id,
            "latency_ms": float(latency_ms), "tracks": tracks}


def encode(msg: dict) -> bytes:
    """UTF-8 JSON bytes (NaN/inf are refused: JSON has no such numbers)."""
    try:
        return json.dumps(msg, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except ValueError as exc:
        raise SchemaError(f"message: cannot encode ({exc})") from None


def decode(payload: bytes) -> dict:
    """Parse and validate one payload; SchemaError on anything malformed."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise SchemaError("payload: expected bytes")
    if len(payload) > MAX_PAYLOAD:
        raise SchemaError(f"payload: {len(payload)} bytes is over the {MAX_PAYLOAD} byte limit")
    try:
        msg = json.loads(bytes(payload).decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise SchemaError(f"payload: not UTF-8 JSON ({type(exc).__name__})") from None
    return validate_message(msg)


def _reject_constant(name: str):
    raise SchemaError(f"payload: {name} is not valid JSON")
