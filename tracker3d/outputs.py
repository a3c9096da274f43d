"""Files of results: tracks3d messages as JSON lines (the ZMQ schema, one message per line)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from streams.base import Closeable
from streams.errors import StreamError
from streams.messages import encode, make_message, validate_message


class JsonlWriter(Closeable):
    """Appends tracks3d messages, one JSON object per line, flushed per message."""

    def __init__(self, path: str | os.PathLike, frame_id: str = "cam0"):
        self.path = Path(path)
        if self.path.suffix.lower() not in (".jsonl", ".json", ".ndjson"):
            raise StreamError(f"--out {path}: expected a .jsonl file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "w", encoding="utf-8")
        self.frame_id = frame_id
        self.seq = 0

    def write(self, frame: int, t: float, tracks: list[dict], latency_ms: float = 0.0) -> None:
        msg = make_message(self.seq, frame, t, tracks, self.frame_id, latency_ms)
        self.seq += 1
        self._f.write(encode(msg).decode("utf-8") + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


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
