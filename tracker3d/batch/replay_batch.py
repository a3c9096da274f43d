"""`tracker3d batch`: replay (and optionally evaluate) many recordings or detection folders into an
output tree, one task per input, on an engine (tracker3d.batch.engine).

Each input gets OUT/NAME/: tracks.FMT (what `tracker3d replay NAME --out` writes), summary.json
(the replay's run summary), log.txt (everything the replay printed or logged), eval.json (with
--eval, where the input has gt.csv) and result.json, written last: an input whose result.json
says ok, with the same options and unchanged input files, is skipped on the next run, so a
killed batch resumes where it was. Outputs are written under .part names and renamed when whole.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import json
import logging
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import Tracker3DError

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "csv", "mcap")
# replay options that name its input or outputs or pace the run: the batch sets these per input
PER_INPUT_DESTS = {"dir", "det0", "det1", "frames", "fps", "out", "publish", "allow_remote", "overlay", "plot", "view",
                   "curve_keys", "realtime", "fast", "summary_json", "func", "help"}
RESULT = "result.json"


def _command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of `tracker3d NAME` (its options, as the CLI defines them)."""
    import importlib

    sub = argparse.ArgumentParser(prog="tracker3d").add_subparsers()
    importlib.import_module(f"tracker3d.commands.{name}").add_parser(sub)
    return sub.choices[name]


def replay_option_actions() -> list[argparse.Action]:
    """replay's processing options (pipeline, gate, --smooth, --calib ...): what `batch` accepts too."""
    return [a for a in _command_parser("replay")._actions if a.dest not in PER_INPUT_DESTS]


def add_replay_options(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("replay options (as in tracker3d replay)")
    for action in replay_option_actions():
        group._add_action(action)


@dataclass
class ReplayTask:
    """One input: replay `input` into `out_dir` with replay `options` (dest -> value)."""
    input: str
    name: str
    out_dir: str
    fmt: str = "jsonl"
    options: dict = field(default_factory=dict)
    evaluate: bool = False
    # detect the two cameras in two threads: only when this task has the machine to itself
    # (engine serial); a worker process per core is faster without them (same results)
    detect_threads: bool = True

    def key(self) -> str:
        """What makes two runs of this input the same run: options, format, eval, input files."""
        blob = json.dumps({"options": self.options, "fmt": self.fmt, "eval": self.evaluate,
                           "files": input_fingerprint(self.input)}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


def input_fingerprint(path: str) -> list:
    """(name, size, mtime_ns) of the files directly in an input folder."""
    rows = []
    with contextlib.suppress(OSError):
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            if entry.is_file():
                st = entry.stat()
                rows.append((entry.name, st.st_size, st.st_mtime_ns))
    return rows


def resolve_inputs(patterns: list[str], list_file: Optional[str]) -> list[str]:
    """Folders from paths, globs and a list file (one per line, # comments); each must exist."""
    items = list(patterns)
    if list_file:
        try:
            lines = Path(list_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise Tracker3DError(f"--list {list_file}: cannot read it ({e.__class__.__name__})") from None
        base = Path(list_file).parent
        items += [str(base / s) if not os.path.isabs(s) else s
                  for s in (ln.split("#", 1)[0].strip() for ln in lines) if s]
    out: list[str] = []
    for item in items:
        matches = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
        if not matches:
            raise Tracker3DError(f"{item}: no folder matches this pattern")
        for m in matches:
            if not os.path.isdir(m):
                raise Tracker3DError(f"{m}: not a folder (expected a recording or detections folder)")
            real = os.path.realpath(m)
            if real not in out:
                out.append(real)
    if not out:
        raise Tracker3DError("no inputs: give recording or detections folders, globs, or --list FILE")
    return out


def unique_names(inputs: list[str]) -> list[str]:
    """Output folder names: the input's own name, with as many parent names as make it unique."""
    depth = 1
    while True:
        names = ["__".join(Path(p).parts[-depth:]) for p in inputs]
        if len(set(names)) == len(names) or depth > 32:
            return names
        depth += 1


def _tracks_read(path: Path) -> list[dict]:
    from ..outputs import files

    reader = {".jsonl": files.read_jsonl, ".csv": files.read_csv, ".mcap": files.read_mcap}[path.suffix]
    return reader(path)


def _count_tracks(path: Path) -> int:
    rows = _tracks_read(path)
    if path.suffix == ".csv":
        return len({r["id"] for r in rows})
    return len({t["id"] for m in rows for t in m["tracks"]})


class _TaskLog:
    """Sends stdout, stderr and log records of one task to its log file, and back after."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.f = open(self.path, "w", encoding="utf-8")
        self.handler = logging.FileHandler(self.path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        root = logging.getLogger()
        self.level = root.level
        root.addHandler(self.handler)
        root.setLevel(logging.INFO)
        self.redirects = contextlib.ExitStack()
        self.redirects.enter_context(contextlib.redirect_stdout(self.f))
        self.redirects.enter_context(contextlib.redirect_stderr(self.f))
        return self

    def __exit__(self, *exc):
        self.redirects.close()
        root = logging.getLogger()
        root.removeHandler(self.handler)
        root.setLevel(self.level)
        self.handler.close()
        self.f.close()


def _namespace(command: str, input_dir: str, options: dict, **per_input) -> argparse.Namespace:
    ns = _command_parser(command).parse_args([input_dir])
    for k, v in options.items():
        if hasattr(ns, k):
            setattr(ns, k, v)
    for k, v in per_input.items():
        setattr(ns, k, v)
    return ns


def run_replay_task(task: ReplayTask) -> dict:
    """Replay one input into its folder (the worker side). Raises with a one-line message on
    failure; the full traceback of an unexpected error is in the task's log.txt."""
    from ..commands import eval as eval_cmd
    from ..commands import replay

    out = Path(task.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = out / RESULT
    result.unlink(missing_ok=True)
    tracks_part, tracks = out / f"tracks.part.{task.fmt}", out / f"tracks.{task.fmt}"
    summary_part, summary_path = out / "summary.part.json", out / "summary.json"
    eval_part, eval_path = out / "eval.part.json", out / "eval.json"
    with _TaskLog(out / "log.txt"):
        try:
            ns = _namespace("replay", task.input, task.options, out=str(tracks_part), summary_json=str(summary_part),
                            detect_threads=task.detect_threads)
            rc = replay.run(ns)
            if rc:
                raise Tracker3DError(f"replay ended with code {rc}")
            summary = json.loads(summary_part.read_text(encoding="utf-8"))
            if summary["processed"] < summary["pairs_in"]:
                raise Tracker3DError(f"replay stopped after {summary['processed']} of {summary['pairs_in']} pairs")
            scores = None
            if task.evaluate and (Path(task.input) / "gt.csv").exists():
                ns = _namespace("eval", task.input, task.options, json=str(eval_part),
                                detect_threads=task.detect_threads)
                rc = eval_cmd.run(ns)
                if rc:
                    raise Tracker3DError(f"eval ended with code {rc}")
                scores = json.loads(eval_part.read_text(encoding="utf-8"))
                os.replace(eval_part, eval_path)
        except Exception:
            print(traceback.format_exc())
            raise
    os.replace(tracks_part, tracks)
    os.replace(summary_part, summary_path)
    row = {"name": task.name, "input": task.input, "status": "ok", "key": task.key(),
           "pairs": summary["processed"], "pairs_per_s": summary["pairs_per_s"], "wall_s": summary["wall_s"],
           "tracks": _count_tracks(tracks), "outputs": [tracks.name, summary_path.name]}
    if scores is not None:
        row["outputs"].append(eval_path.name)
        for part in ("3d", "ground"):  # ground: world-frame ground truth scored on the ground plane
            got = scores.get(part) or {}
            row.update({f"{part}_{k}": got[k] for k in ("IDF1", "MOTA", "HOTA") if k in got})
    tmp = out / "result.part.json"
    tmp.write_text(json.dumps(row, indent=1, default=float), encoding="utf-8")
    os.replace(tmp, result)
    return row


def finished_row(task: ReplayTask) -> Optional[dict]:
    """The result of an earlier run of exactly this task, if it finished and its outputs are there."""
    path = Path(task.out_dir) / RESULT
    try:
        row = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if row.get("status") != "ok" or row.get("key") != task.key():
        return None
    if not all((Path(task.out_dir) / name).exists() for name in row.get("outputs", ())):
        return None
    return row


def make_tasks(inputs: list[str], out_dir: str, fmt: str, options: dict, evaluate: bool,
               detect_threads: bool = True) -> list[ReplayTask]:
    if fmt not in FORMATS:
        raise Tracker3DError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    return [ReplayTask(i, n, str(Path(out_dir) / n), fmt, options, evaluate, detect_threads)
            for i, n in zip(inputs, unique_names(inputs))]


def write_summary(out_dir: str, rows: list[dict]) -> Path:
    path = Path(out_dir) / "batch_summary.json"
    tmp = path.with_suffix(".part.json")
    tmp.write_text(json.dumps(rows, indent=1, default=float), encoding="utf-8")
    os.replace(tmp, path)
    return path


def format_rows(rows: list[dict]) -> str:
    cols = ["name", "status", "pairs", "pairs/s", "tracks", "IDF1", "MOTA"]  # ground plane when scored there
    lines = [f"{cols[0]:<28} {cols[1]:<8} {cols[2]:>7} {cols[3]:>8} {cols[4]:>7} {cols[5]:>6} {cols[6]:>6}"]
    for r in rows:
        def num(k, fmt):
            v = r.get(k)
            return format(v, fmt) if isinstance(v, (int, float)) else "-"
        part = "ground" if "ground_IDF1" in r else "3d"
        lines.append(f"{r['name'][:28]:<28} {r['status']:<8} {num('pairs', 'd'):>7} {num('pairs_per_s', '.1f'):>8} "
                     f"{num('tracks', 'd'):>7} {num(part + '_IDF1', '.3f'):>6} {num(part + '_MOTA', '.3f'):>6}")
        if r.get("error"):
            lines.append(f"    error: {r['error']}")
    return "\n".join(lines)

