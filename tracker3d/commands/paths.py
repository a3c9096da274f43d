"""Output paths checked before a command reads its first frame: an output never replaces an input
(by name, symlink or hard link), its folder is writable, it is not a folder, and its suffix is one
its writer supports. Every command that writes files calls `check_outputs` first."""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from ..errors import Tracker3DError

TRACK_FILES = (".jsonl", ".ndjson", ".json", ".csv", ".mcap")  # tracker3d.outputs.files.open_writer
PLOT_FILES = (".png", ".pdf", ".svg")
OVERLAY_FILES = (".mp4", ".avi")
JSON_FILES = (".json",)
CALIB_FILES = (".yaml", ".yml", ".xml", ".json")  # calib.save_calibration


@dataclass(frozen=True)
class Output:
    """One output of a command: the option that names it, its path, the suffixes its writer
    supports (None: any) and whether it is a folder to create (new or empty)."""

    option: str
    path: Optional[str | os.PathLike]
    suffixes: Optional[tuple[str, ...]] = None
    folder: bool = False


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.realpath(a) == os.path.realpath(b) or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _existing_ancestor(p: Path) -> Path:
    p = Path(os.path.abspath(p))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_one(o: Output) -> None:
    p = Path(o.path)
    name = f"{o.option} {o.path}"
    if not o.folder and p.is_dir():
        raise Tracker3DError(f"{name}: is a folder (expected a file name)")
    if o.suffixes is not None and p.suffix.lower() not in o.suffixes:
        raise Tracker3DError(f"{name}: expected a {', '.join(o.suffixes)} file")
    if o.folder:
        if p.exists() and not p.is_dir():
            raise Tracker3DError(f"{name}: exists and is not a folder")
        if p.is_dir() and any(p.iterdir()):
            raise Tracker3DError(f"{name}: folder exists and is not empty (choose another)")
    elif p.exists() and not os.access(p, os.W_OK):
        raise Tracker3DError(f"{name}: file is not writable")
    base = _existing_ancestor(p.parent if not p.exists() or not o.folder else p)
    if not base.is_dir():
        raise Tracker3DError(f"{name}: {base} is not a folder")
    try:  # a real probe: os.access says yes to root on a read-only mount
        tempfile.TemporaryFile(dir=base).close()
    except OSError as exc:
        raise Tracker3DError(f"{name}: cannot write in the folder {base} ({exc.strerror})") from None


def check_outputs(outputs: Iterable[Output], inputs: Iterable[str | os.PathLike]) -> None:
    """Refuse, with one line, any output that is, or resolves to, an input file, another output,
    a folder, a path in a folder that cannot be written, or a suffix its writer does not support.
    Call it before opening anything, so a bad path fails at once and not after a long run."""
    outs = [o for o in outputs if o.path]
    ins = [Path(i) for i in inputs if i]
    for o in outs:
        _check_one(o)
        p = Path(o.path)
        for i in ins:
            if _same(p, i) or (o.folder and _inside(i, p)):
                raise Tracker3DError(f"{o.option} {o.path}: is the input {i}; an output never replaces an input "
                                     "(choose another path)")
    for k, a in enumerate(outs):
        for b in outs[k + 1:]:
            if _same(Path(a.path), Path(b.path)):
                raise Tracker3DError(f"{a.option} and {b.option}: both write {a.path}")


def _inside(path: Path, folder: Path) -> bool:
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(folder))
        return True
    except ValueError:
        return False


def input_files(args) -> list[str]:
    """Every file a replay/eval run reads: the input folder's own files (a recording's videos,
    frames.csv, calibration, ground truth, or a detections folder's det/gt files), loose
    detection files, and the calibration, weights and MOT files named by options."""
    files: list[str] = []
    folder = getattr(args, "dir", None)
    if folder and os.path.isdir(folder):
        files += [e.path for e in os.scandir(folder) if e.is_file()]
    for opt in ("det0", "det1", "frames", "calib", "weights", "gt", "tracks"):
        files.append(getattr(args, opt, None))
    return [f for f in files if f]


def source_files(src: Optional[str]) -> list[str]:
    """The files behind a SRC option (a video file, or the files an image glob matches); none for a
    camera index or a URL."""
    import glob

    if not src or src.isdigit() or "://" in src:
        return []
    if any(c in src for c in "*?["):
        return glob.glob(src)
    return [src]


def _strict(v):
    """v with every non-finite float (NaN, inf) as None, recursively (JSON has no such numbers)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _strict(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_strict(x) for x in v]
    return v


def write_json(path: str | os.PathLike, obj, default=None) -> None:
    """obj as strict JSON (NaN and inf as null, readable by any parser) at `path`, its folder
    created first as every output's is (check_outputs has refused a path that cannot be)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_strict(json.loads(json.dumps(obj, default=default))), indent=2, allow_nan=False)
    p.write_text(text + "\n", encoding="utf-8")
