"""Files of results, chosen by suffix: tracks3d messages as JSON lines (.jsonl, the ZMQ schema,
one message per line), a flat table (.csv: frame, t, id, x, y, z, vx, vy, vz, persistence, state,
class) or an MCAP file (.mcap: one JSON-schema channel `/tracks3d` carrying the same messages, for Foxglove)."""
from __future__ import annotations

import csv
import json
import logging
import os
import struct
import time
from pathlib import Path
from typing import Optional

from streams.base import Closeable
from streams.errors import StreamError
from streams.messages import (
    JSON_SCHEMA,
    SCHEMA,
    decode,
    encode,
    make_message,
    validate_message,
)

log = logging.getLogger(__name__)

CSV_COLUMNS = ("frame", "t", "id", "x", "y", "z", "vx", "vy", "vz", "persistence", "state", "class")
MCAP_TOPIC = "/tracks3d"
SUFFIXES = (".jsonl", ".ndjson", ".csv", ".mcap")


class _Writer(Closeable):
    def __init__(self, path: str | os.PathLike, frame_id: str = "cam0"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.frame_id = frame_id
        self.seq = 0

    def write(self, frame: int, t: float, tracks: list[dict], latency_ms: Optional[float] = None) -> None:
        msg = make_message(self.seq, frame, t, tracks, self.frame_id, latency_ms)
        self.seq += 1
        self._write(msg)

    def _write(self, msg: dict) -> None:
        raise NotImplementedError


class JsonlWriter(_Writer):
    """Appends tracks3d messages, one JSON object per line, flushed per message."""

    def __init__(self, path: str | os.PathLike, frame_id: str = "cam0"):
        super().__init__(path, frame_id)
        self._f = open(self.path, "w", encoding="utf-8")

    def _write(self, msg: dict) -> None:
        self._f.write(encode(msg).decode("utf-8") + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class CsvWriter(_Writer):
    """One row per track per message: frame, t (s), id, x y z (m), vx vy vz (m/s), persistence, state,
    class (the detections' class label; empty when they have none)."""

    def __init__(self, path: str | os.PathLike, frame_id: str = "cam0"):
        super().__init__(path, frame_id)
        self._f = open(self.path, "w", encoding="utf-8", newline="")
        self._w = csv.writer(self._f)
        self._w.writerow(CSV_COLUMNS)

    def _write(self, msg: dict) -> None:
        for tr in msg["tracks"]:
            self._w.writerow([msg["frame"], repr(msg["t"]), tr["id"], *tr["xyz"], *tr["vel"], tr["persistence"],
                              tr["state"], tr.get("class", "")])
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class McapWriter(_Writer):
    """MCAP with one JSON channel (schema: the tracks3d JSON Schema); log time = message t in ns.

    The chunk in progress is written out (and the file flushed) every `flush_every` messages or
    `flush_every_s` seconds, so a killed run loses at most that much; read_mcap reads a file cut
    this way to its last complete chunk. close() writes the summary and index."""

    def __init__(self, path: str | os.PathLike, frame_id: str = "cam0", flush_every: int = 10,
                 flush_every_s: float = 0.5):
        from mcap.writer import Writer

        super().__init__(path, frame_id)
        self._f = open(self.path, "wb")
        self._w = Writer(self._f)
        self._w.start(profile="", library="tracker3d")
        sid = self._w.register_schema(name=SCHEMA, encoding="jsonschema", data=json.dumps(JSON_SCHEMA).encode())
        self._ch = self._w.register_channel(topic=MCAP_TOPIC, message_encoding="json", schema_id=sid)
        self._w.flush()
        self._flush_every, self._flush_every_s = flush_every, flush_every_s
        self._pending = 0
        self._last_flush = time.monotonic()

    def _write(self, msg: dict) -> None:
        ns = max(0, int(round(msg["t"] * 1e9)))
        self._w.add_message(channel_id=self._ch, log_time=ns, publish_time=ns, sequence=msg["seq"] & 0xFFFFFFFF,
                            data=encode(msg))
        self._pending += 1
        now = time.monotonic()
        if self._pending >= self._flush_every or now - self._last_flush >= self._flush_every_s:
            self._w.flush()  # the chunk in progress goes to the file
            self._pending, self._last_flush = 0, now

    def close(self) -> None:
        if self._f.closed:
            return
        try:
            self._w.finish()
        finally:
            self._f.close()


def open_writer(path: str | os.PathLike, frame_id: str = "cam0") -> _Writer:
    """A writer for --out PATH by its suffix (.jsonl/.ndjson, .csv or .mcap)."""
    suffix = Path(path).suffix.lower()
    kinds = {".jsonl": JsonlWriter, ".ndjson": JsonlWriter, ".json": JsonlWriter, ".csv": CsvWriter,
             ".mcap": McapWriter}
    if suffix not in kinds:
        raise StreamError(f"--out {path}: expected a .jsonl, .csv or .mcap file")
    try:
        return kinds[suffix](path, frame_id)
    except OSError as exc:
        raise StreamError(f"--out {path}: cannot create the file ({exc.strerror})") from None


class Records(list):
    """What a reader got: the complete records, in order, plus `cut`, the number of incomplete
    records at the end of a file cut off mid-write (0 for a whole file), and `cut_bytes`, the
    bytes after the last complete record."""

    cut: int = 0
    cut_bytes: int = 0


def _cut_tail(path, out: Records, cut: int, cut_bytes: int, what: str) -> Records:
    out.cut, out.cut_bytes = cut, cut_bytes
    if cut_bytes:
        log.warning("%s: file cut off mid-write: read %d complete %s, ignored %d incomplete at the end "
                    "(%d bytes)", path, len(out), what, cut, cut_bytes)
    return out


def _require_file(path) -> None:
    if not os.path.isfile(path):
        raise StreamError(f"{path}: file not found")


def _complete_lines(path) -> tuple[list[bytes], bytes]:
    """The newline-terminated lines of a file and the unterminated tail (a cut last line)."""
    _require_file(path)
    with open(path, "rb") as f:
        data = f.read()
    end = data.rfind(b"\n") + 1
    return data[:end].splitlines(), data[end:]


def read_jsonl(path: str | os.PathLike) -> Records:
    """Messages of a .jsonl file, validated; StreamError names the line on bad content. A last
    line cut off mid-write is left out and counted (`Records.cut`)."""
    out = Records()
    lines, tail = _complete_lines(path)
    if tail.strip():
        try:  # a last line without its newline that is whole is kept
            lines.append(tail)
            json.loads(tail)
            tail = b""
        except ValueError:
            lines.pop()
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(validate_message(json.loads(line)))
        except (ValueError, TypeError) as exc:
            raise StreamError(f"{path}:{n}: {exc}") from None
    return _cut_tail(path, out, int(bool(tail.strip())), len(tail), "messages")


def read_csv(path: str | os.PathLike) -> Records:
    """Rows of a tracks .csv as dicts of numbers (state and class as text; class "" = none). Files
    written before the class column read too. A last row cut off mid-write is left out and counted
    (`Records.cut`); StreamError names the line on bad content."""
    lines, tail = _complete_lines(path)
    rows = csv.reader(line.decode("utf-8") for line in lines)
    header = tuple(next(rows, []))
    if header not in (CSV_COLUMNS, CSV_COLUMNS[:-1]):
        raise StreamError(f"{path}: expected the columns {', '.join(CSV_COLUMNS)}")
    text = ("state", "class")
    out = Records()
    for n, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise StreamError(f"{path}:{n}: expected {len(header)} fields, got {len(row)}")
        try:
            out.append({k: (v if k in text else (int(v) if k in ("frame", "id") else float(v)))
                        for k, v in zip(header, row)})
        except ValueError as exc:
            raise StreamError(f"{path}:{n}: {exc}") from None
    return _cut_tail(path, out, int(bool(tail)), len(tail), "rows")


def read_mcap(path: str | os.PathLike) -> Records:
    """The tracks3d messages of an MCAP file written by McapWriter, validated. A file cut off
    mid-write (no summary at its end) is read record by record to its last complete chunk;
    `Records.cut` is 1 and `cut_bytes` says how much was lost after it."""
    from mcap.exceptions import McapError
    from mcap.reader import make_reader

    _require_file(path)
    out = Records()
    try:
        with open(path, "rb") as f:
            for schema, channel, message in make_reader(f).iter_messages(topics=[MCAP_TOPIC]):
                out.append(decode(message.data))
        return out
    except (McapError, ValueError, EOFError, OSError, struct.error) as e:
        first_error = e
    out = _read_mcap_stream(path)
    if out is None:
        raise StreamError(f"{path}: not a readable MCAP file ({first_error})") from None
    return out


def _read_mcap_stream(path) -> Records | None:
    """Messages of an MCAP file without its summary (cut off), up to the last complete record;
    None when not even the header reads."""
    from mcap.records import Channel, Message
    from mcap.stream_reader import StreamReader

    out = Records()
    topics: dict[int, str] = {}
    size = os.path.getsize(path)
    good = 0
    with open(path, "rb") as f:
        try:
            for rec in StreamReader(f, skip_magic=False).records:
                if isinstance(rec, Channel):
                    topics[rec.id] = rec.topic
                elif isinstance(rec, Message) and topics.get(rec.channel_id) == MCAP_TOPIC:
                    out.append(decode(rec.data))
                good = f.tell()
        except Exception as exc:  # noqa: BLE001  (the mcap library raises many kinds at a cut)
            if good == 0 and not topics:
                log.debug("%s: %s", path, exc)
                return None
    return _cut_tail(path, out, int(size > good), size - good, "messages")
