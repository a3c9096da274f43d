"""Files of results, chosen by suffix: tracks3d messages as JSON lines (.jsonl, the ZMQ schema,
one message per line), a flat table (.csv: frame, t, id, x, y, z, vx, vy, vz, persistence, state,
class) or an MCAP file (.mcap: one JSON-schema channel `/tracks3d` carrying the same messages, for Foxglove)."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

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

CSV_COLUMNS = ("frame", "t", "id", "x", "y", "z", "vx", "vy", "vz", "persistence", "state", "class")
MCAP_TOPIC = "/tracks3d"
SUFFIXES = (".jsonl", ".ndjson", ".csv", ".mcap")


class _Writer(Closeable):
    def __init__(self, path: str | os.PathLike, frame_id: str = "cam0"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.frame_id = frame_id
        self.seq = 0

    def write(self, frame: int, t: float, tracks: list[dict], latency_ms: float = 0.0) -> None:
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
    """MCAP with one JSON channel (schema: the tracks3d JSON Schema); log time = message t in ns."""

    def __init__(self, path: str | os.PathLike, frame_id: str = "cam0"):
        from mcap.writer import Writer

        super().__init__(path, frame_id)
        self._f = open(self.path, "wb")
        self._w = Writer(self._f)
        self._w.start(profile="", library="tracker3d")
        sid = self._w.register_schema(name=SCHEMA, encoding="jsonschema", data=json.dumps(JSON_SCHEMA).encode())
        self._ch = self._w.register_channel(topic=MCAP_TOPIC, message_encoding="json", schema_id=sid)
        self._t0: float | None = None

    def _write(self, msg: dict) -> None:
        ns = max(0, int(round(msg["t"] * 1e9)))
        self._w.add_message(channel_id=self._ch, log_time=ns, publish_time=ns, sequence=msg["seq"] & 0xFFFFFFFF,
                            data=encode(msg))

    def close(self) -> None:
        self._w.finish()
        self._f.close()


def open_writer(path: str | os.PathLike, frame_id: str = "cam0") -> _Writer:
    """A writer for --out PATH by its suffix (.jsonl/.ndjson, .csv or .mcap)."""
    suffix = Path(path).suffix.lower()
    kinds = {".jsonl": JsonlWriter, ".ndjson": JsonlWriter, ".json": JsonlWriter, ".csv": CsvWriter,
             ".mcap": McapWriter}
    if suffix not in kinds:
        raise StreamError(f"--out {path}: expected a .jsonl, .csv or .mcap file")
    return kinds[suffix](path, frame_id)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Messages of a .jsonl file, validated; StreamError names the line on bad content."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                out.append(validate_message(json.loads(line)))
            except (ValueError, TypeError) as exc:
                raise StreamError(f"{path}:{n}: {exc}") from None
    return out


def read_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a tracks .csv as dicts of numbers (state and class as text; class "" = none).
    Files written before the class column read too."""
    with open(path, encoding="utf-8", newline="") as f:
        r = csv.DictReader(f)
        if tuple(r.fieldnames or ()) not in (CSV_COLUMNS, CSV_COLUMNS[:-1]):
            raise StreamError(f"{path}: expected the columns {', '.join(CSV_COLUMNS)}")
        text = ("state", "class")
        return [{k: (v if k in text else (int(v) if k in ("frame", "id") else float(v))) for k, v in row.items()}
                for row in r]


def read_mcap(path: str | os.PathLike) -> list[dict]:
    """The tracks3d messages of an MCAP file written by McapWriter, validated."""
    from mcap.exceptions import McapError
    from mcap.reader import make_reader

    out = []
    try:
        with open(path, "rb") as f:
            for schema, channel, message in make_reader(f).iter_messages(topics=[MCAP_TOPIC]):
                out.append(decode(message.data))
    except (McapError, ValueError, EOFError, OSError) as e:
        raise StreamError(f"{path}: not a readable MCAP file ({e})") from None
    return out
