"""Writing a synthetic scene as a standard recording (plus gt.csv), and reading gt.csv back."""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

from streams.errors import StreamError
from streams.recording import RecordingWriter

from .scene import SceneConfig
from .world import GT_HEADER, SimWorld

GT_KINDS = ("object", "flash", "clutter", "noise")

log = logging.getLogger(__name__)


def write_sim_recording(cfg: SceneConfig, out_dir: str | os.PathLike, seed: int = 0, codec: str = "MJPEG",
                        overwrite: bool = False,
                        progress: Optional[Callable[[Iterable], Iterable]] = None) -> Path:
    """Render cfg with seed into a recording folder (videos, frames.csv, calib.yaml, meta.json, gt.csv)."""
    world = SimWorld(cfg, seed=seed)
    meta = {"source": "tracker3d sim", "scene": asdict(cfg), "seed": seed, "frame_id": "cam0"}
    out = Path(out_dir)
    written = 0
    with RecordingWriter(out, calib=world.calib, fps=cfg.frame_rate, codec=codec, meta=meta, overwrite=overwrite) as rec, \
            open(out / "gt.csv", "w", encoding="utf-8", newline="") as gt:
        gt.write(",".join(GT_HEADER) + "\n")
        frames = range(cfg.n_frames)
        try:
            for _ in (progress(frames) if progress else frames):
                pair, rows = world.step()
                gt.write("".join(r.csv() + "\n" for r in rows))
                rec.write(pair)
                gt.flush()
                written += 1
        finally:  # meta.json says what the folder holds: all pairs asked for, or those before a stop
            rec.meta.update(pairs=written, pairs_asked=cfg.n_frames, complete=written == cfg.n_frames)
            try:
                (out / "meta.json").write_text(json.dumps(rec.meta, indent=2))
            except OSError as exc:  # a full disk: the error that stopped the run is the one to report
                log.warning("%s: meta.json not updated (%s)", out, exc.strerror)
            if written < cfg.n_frames:  # stopped (a signal, a full disk)
                log.warning("%s: stopped after %d of %d pairs (%.1f of %.1f s); meta.json says so (complete: false)",
                            out, written, cfg.n_frames, written / cfg.frame_rate, cfg.n_frames / cfg.frame_rate)
    return out


def gt_columns(rows: Iterable) -> dict[str, np.ndarray]:
    """In-memory GTRows (SimWorld.step, SimStereoSource.gt) as the columns read_gt returns."""
    rows = list(rows)
    col = lambda f: np.array([f(r) for r in rows])  # noqa: E731
    return {"frame": col(lambda r: r.frame).astype(np.int64), "t": col(lambda r: r.t),
            "id": col(lambda r: r.id).astype(np.int64), "kind": col(lambda r: r.kind),
            "x": col(lambda r: r.xyz[0]), "y": col(lambda r: r.xyz[1]), "z": col(lambda r: r.xyz[2]),
            "u0": col(lambda r: r.uv0[0]), "v0": col(lambda r: r.uv0[1]), "vis0": col(lambda r: r.vis0).astype(np.int64),
            "u1": col(lambda r: r.uv1[0]), "v1": col(lambda r: r.uv1[1]), "vis1": col(lambda r: r.vis1).astype(np.int64)}


def read_gt(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """gt.csv as columns: frame, id (int); t, x, y, z, u0, v0, u1, v1 (float, NaN if empty); vis0, vis1
    (int); kind (str). Raises StreamError naming the line and field on malformed content."""
    path = Path(path)
    if not path.is_file():
        raise StreamError(f"{path}: ground truth file not found")
    with open(path, encoding="utf-8") as f:
        header = f.readline().strip()
        if header.split(",") != GT_HEADER:
            raise StreamError(f"{path}: expected the header '{','.join(GT_HEADER)}'")
        cols: dict[str, list] = {k: [] for k in GT_HEADER}
        for n, line in enumerate(f, start=2):
            if not line.endswith("\n"):
                break  # a cut-off last line
            parts = line.rstrip("\n").split(",")
            if len(parts) != len(GT_HEADER):
                raise StreamError(f"{path}:{n}: expected {len(GT_HEADER)} fields, got {len(parts)}")
            for k, v in zip(GT_HEADER, parts):
                try:
                    if k in ("frame", "id", "vis0", "vis1"):
                        cols[k].append(int(v))
                    elif k == "kind":
                        if v not in GT_KINDS:
                            raise ValueError(v)
                        cols[k].append(v)
                    else:
                        cols[k].append(float(v) if v != "" else math.nan)
                except ValueError:
                    raise StreamError(f"{path}:{n}: field '{k}': unexpected value {v!r}") from None
    out = {k: np.asarray(v) for k, v in cols.items()}
    for k in ("frame", "id", "vis0", "vis1"):
        out[k] = out[k].astype(np.int64)
    return out
