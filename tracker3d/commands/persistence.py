"""`tracker3d persistence data|train|eval|tradeoff`: the learned track-persistence gate."""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..batch.engine import add_engine_args, engine_from_args, run_tasks
from ..errors import Tracker3DError

log = logging.getLogger(__name__)
HELP = "build data for, train and evaluate the learned track-persistence gate"
DEFAULT_DATA = Path.home() / ".cache" / "tracker3d" / "persistence"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("persistence", help=HELP, description=HELP + ".")
    ps = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    d = ps.add_parser("data", help="label our own 2D tracks on seeded sim scenes (train/val/test by seed)")
    _data_args(d)
    d.set_defaults(func=run_data)

    t = ps.add_parser("train", help="train the PersistenceTransformer (builds the data first if missing)")
    _data_args(t)
    t.add_argument("--out", default="persistence/weights/persistence_v1.pt",
                   help="weights file to write (a model card NAME.json and NAME.metrics.json go beside it)")
    t.add_argument("--epochs", type=int, default=60)
    t.add_argument("--patience", type=int, default=8, help="epochs without validation improvement before stopping")
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--d-model", type=int, default=32)
    t.add_argument("--layers", type=int, default=2)
    t.add_argument("--heads", type=int, default=2)
    t.add_argument("--ff", type=int, default=64)
    t.add_argument("--synthetic", type=int, default=20000, help="purely synthetic histories added to training")
    t.add_argument("--device", default="auto", help="auto | cpu | cuda")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=run_train)

    e = ps.add_parser("eval", help="scores by track age on held-out scenes, per distractor kind")
    _data_args(e)
    e.add_argument("--weights", help="weights file (default: the shipped model)")
    e.add_argument("--threshold", type=float, help="score threshold (default: the model's 'on')")
    e.add_argument("--json", help="write the table here as JSON")
    e.set_defaults(func=run_eval)

    r = ps.add_parser("tradeoff", help="false 3D track-seconds vs time-to-confirm, learned gate vs min_hits 1..6, "
                      "end to end through the pipeline on held-out sim scenes")
    r.add_argument("--weights", help="weights file (default: the shipped model)")
    r.add_argument("--scenes", default="default,cluttered,walkers,throws", help="comma-separated sim presets")
    r.add_argument("--seeds", default="3000,3001", help="comma-separated held-out seeds")
    r.add_argument("--seconds", type=float, default=12.0)
    r.add_argument("--on", default="0.3,0.5,0.7,0.9", help="learned gate thresholds to try")
    r.add_argument("--json", help="write the table here as JSON")
    add_engine_args(r)
    r.set_defaults(func=run_tradeoff)


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=str(DEFAULT_DATA), help=f"folder of train/val/test .npz (default {DEFAULT_DATA})")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of each sim scene")
    add_engine_args(p, workers_aliases=("--jobs",))
    p.add_argument("--quick", action="store_true", help="a few scenes only (for trying the commands)")


def _split(args, name: str, build_missing: bool = True):
    from persistence.data import TrackSet

    from ..progress import progress
    from ..sim.gate_data import RECIPE, SPLIT_SEEDS, build

    path = Path(args.data) / (f"{name}_quick.npz" if args.quick else f"{name}.npz")
    if path.exists():
        try:
            return TrackSet.load(path)
        except ValueError as e:
            raise Tracker3DError(f"{e} (delete it to rebuild)") from None
    if not build_missing:
        raise Tracker3DError(f"{path}: no such track set (run 'tracker3d persistence data --data {args.data}')")
    recipe = RECIPE[:3] if args.quick else RECIPE
    seeds = list(SPLIT_SEEDS[name])[: (2 if name == "train" else 1) if args.quick else None]
    t = time.perf_counter()
    # Minutes on a fresh machine: say so, and (off a terminal, where no bar shows) log every scene.
    log.info("%s: %s is missing; building it from %d sim scenes of %g s (saved for the next run)", name, path,
             len(recipe) * len(seeds), args.seconds)
    ts = build(recipe, seeds, seconds=args.seconds, engine=engine_from_args(args),
               progress=lambda it, total=None: progress(it, desc=f"building {name} scene data", total=total,
                                                        unit="scenes", log_every=0))
    path.parent.mkdir(parents=True, exist_ok=True)
    ts.save(path)
    log.info("%s: %d tracks from %d scenes in %.0f s -> %s", name, len(ts), len(recipe) * len(seeds),
             time.perf_counter() - t, path)
    return ts


def _describe(ts) -> str:
    from persistence.data import KINDS

    counts = np.bincount(ts.kind, minlength=len(KINDS))
    return f"{len(ts)} tracks (" + ", ".join(f"{k} {c}" for k, c in zip(KINDS, counts)) + ")"


def run_data(args: argparse.Namespace) -> int:
    for name in ("train", "val", "test"):
        print(f"{name}: {_describe(_split(args, name))}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    import torch

    from .paths import Output, check_outputs

    check_outputs([Output("--out", args.out, (".pt",))], [])

    from persistence import checkpoint
    from persistence.data import KINDS, TrackSet, synthetic_tracks
    from persistence.filter import pick_device
    from persistence.model import ModelConfig
    from persistence.train import (
        TrainConfig,
        choose_threshold,
        report_by_age,
        scores_by_age,
        train,
    )

    from ..progress import progress
    from ..sim.gate_data import RECIPE, recipe_frame_rates

    recipe = RECIPE[:3] if args.quick else RECIPE
    tr, va, te = (_split(args, n) for n in ("train", "val", "test"))
    if args.synthetic:
        tr = TrackSet.concat([tr, synthetic_tracks(args.synthetic, args.seed, max_len=tr.hist.shape[1])])
    print(f"train {_describe(tr)}\nval {_describe(va)}\ntest {_describe(te)}")
    dev = pick_device(args.device)
    mc = ModelConfig(d_model=args.d_model, n_heads=args.heads, n_layers=args.layers, d_ff=args.ff)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt = out.with_suffix(".ckpt")
    tc = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                     seed=args.seed, device=str(dev), checkpoint=str(ckpt))
    t = time.perf_counter()
    res = train(tr, va, mc, tc, progress=lambda it: progress(it, desc="epochs", unit="epoch"),
                on_epoch=lambda r: log.info("epoch %d: train %.4f val %.4f", r["epoch"], r["train_loss"], r["val_loss"]))
    train_s = time.perf_counter() - t
    model = res.model
    on = choose_threshold(scores_by_age(model, va, device=str(dev)))
    off = max(0.05, round(on - 0.3, 2))
    rows = report_by_age(scores_by_age(model, te, device=str(dev)), on, KINDS)
    card = {
        "name": out.stem, "date": datetime.date.today().isoformat(), "torch": torch.__version__,
        "device": str(dev), "train_seconds": round(train_s, 1), "epochs_run": len(res.history),
        "best_epoch": res.best_epoch, "best_val_loss": res.best_val_loss,
        "data": {"train": _describe(tr), "val": _describe(va), "test": _describe(te),
                 "scenes": "tracker3d.sim.gate_data.RECIPE", "seeds": "train 1000-1031, val 2000-2002, "
                 "test 3000-3003 (splits never share a scene)", "seconds_per_scene": args.seconds,
                 "synthetic": args.synthetic, "quick": bool(args.quick)},
        "frame_rates_hz": list(recipe_frame_rates(recipe)),
        "test_by_age": rows,
    }
    model.cpu()
    cp = checkpoint.save(out, model, on, off, card)
    (out.with_suffix(".metrics.json")).write_text(json.dumps({"history": res.history, "test_by_age": rows},
                                                             indent=2) + "\n")
    ckpt.unlink(missing_ok=True)
    out.with_suffix(".md").write_text(model_card_md(json.loads(cp.read_text()), res.history))
    print(f"trained {model.n_parameters()} parameters in {train_s:.0f} s on {dev} (best epoch {res.best_epoch}); "
          f"threshold on {on:.2f} / off {off:.2f}\n{format_by_age(rows)}\nwrote {out} and {cp}")
    return 0


def _rates_line(card: dict) -> str:
    r = card.get("frame_rates_hz")
    if not r:
        return ""
    return (f"- **Frame rates**: trained on histories at {r[0]:g}-{r[1]:g} fps (`frame_rates_hz`). Outside them "
            f"(with 20 % slack) the pipeline confirms tracks with the hit-count rule instead, and logs it once.\n")


def model_card_md(card: dict, history: list[dict]) -> str:
    """A human-readable model card from the JSON card written beside the weights."""
    c = card["config"]
    d = card["data"]
    return f"""# Model card: {card['name']}

- **What**: `PersistenceTransformer`, a causal transformer that scores a 2D track's history (rows
  `[t, cx, cy, w, h, score, observed]`) at every step: the probability that the track follows a
  real, persistent object. Used by `TrackPersistenceFilter` (the pipeline's `--gate persistence`).
- **Size**: {card['parameters']} parameters, {card['bytes'] / 1024:.0f} KiB; d_model {c['d_model']}, {c['n_layers']} layers,
  {c['n_heads']} heads, feed-forward {c['d_ff']}, attention window {c['max_len']} steps, {c['n_features']} features.
- **Thresholds**: on {card['on']:.2f} (best mean accuracy at ages 2, 3, 5 on validation scenes), off {card['off']:.2f}.
- **Trained**: {card['date']}, torch {card['torch']}, on {card['device']}, {card['train_seconds']:.0f} s,
  {card['epochs_run']} epochs (best {card['best_epoch']}, validation loss {card['best_val_loss']:.4f}).
- **SHA-256** of `{card['weights']}`: `{card['sha256']}`.
{_rates_line(card)}
## Data
Our own background-subtraction detector and ByteTrack-style 2D tracker run on seeded sim scenes
(`{d['scenes']}`: every preset, plus 15 and 60 fps, 1280x720, heavier noise, long-blinking
clutter), each 2D track labelled by ground truth; seeds {d['seeds']}; {d['seconds_per_scene']:g} s per scene;
plus {d['synthetic']} purely synthetic histories (steady movers, brief detections, noise tracks, mixed) in training.

- train: {d['train']}
- validation: {d['val']}
- test: {d['test']}

## Held-out test scenes, by track age (rows since birth), at threshold `on`
A track is scored with its first `age` rows only: never with its full length known.

```
{format_by_age(card['test_by_age'])}
```

`noise` tracks are one-camera detections that move like objects; the 2D gate cannot tell them
from real objects, the stereo association does (they have no partner in the other camera).

Reproduce: `tracker3d persistence train` (data built on first use), `tracker3d persistence eval`,
`tracker3d persistence tradeoff`.
"""


def format_by_age(rows: list[dict]) -> str:
    kinds = sorted({k[:-9] for r in rows for k in r if k.endswith("_rejected")})
    head = f"{'age':>4s}{'tracks':>8s}{'AUC':>7s}{'acc':>7s}{'F1':>7s}{'real kept':>10s}" + \
        "".join(f"{k + ' rej':>13s}" for k in kinds)
    lines = [head]
    for r in rows:
        lines.append(f"{r['age']:>4d}{r['tracks']:>8d}{r['auc']:>7.3f}{r['accuracy']:>7.3f}{r['f1']:>7.3f}"
                     f"{r['real_kept']:>10.3f}" + "".join(f"{r.get(k + '_rejected', float('nan')):>13.3f}"
                                                         for k in kinds))
    return "\n".join(lines)


def run_eval(args: argparse.Namespace) -> int:
    from persistence import checkpoint
    from persistence.data import KINDS
    from persistence.train import report_by_age, scores_by_age

    from .paths import JSON_FILES, Output, check_outputs

    check_outputs([Output("--json", args.json, JSON_FILES)], [args.weights])
    model, card = checkpoint.load(args.weights)
    te = _split(args, "test")
    thr = card["on"] if args.threshold is None else args.threshold
    rows = report_by_age(scores_by_age(model, te), thr, KINDS)
    print(f"held-out {_describe(te)}; threshold {thr:.2f}\n{format_by_age(rows)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"threshold": thr, "by_age": rows}, indent=2) + "\n")
    return 0


def _tradeoff_gates(weights: Optional[str], ons: list[float]) -> list[tuple[str, Callable]]:
    from persistence import HitCountGate
    from persistence.filter import TrackPersistenceFilter

    gates: list[tuple[str, Callable]] = [(f"hits {k}", lambda k=k: HitCountGate(k, 1.0)) for k in range(1, 7)]
    for on in ons:
        gates.append((f"learned {on:.2f}", lambda on=on: TrackPersistenceFilter(weights, on=on, device="cpu")))
    return gates


def _tradeoff_job(job: tuple) -> dict:
    """One held-out scene: record it, run the pipeline with every gate; {gate name: 3D scores}."""
    import tempfile

    from ..evaluation.runs import evaluate_recording
    from ..pipeline import PipelineConfig
    from ..sim import get_scene
    from ..sim.record import write_sim_recording

    scene, seed, seconds, weights, ons = job
    out = {}
    with tempfile.TemporaryDirectory(prefix="tracker3d-tradeoff-") as tmp:
        d = Path(tmp) / f"{scene}_{seed}"
        write_sim_recording(get_scene(scene).with_(seconds=seconds), d, seed=seed)
        for name, make in _tradeoff_gates(weights, ons):
            res = evaluate_recording(str(d), PipelineConfig(), make(), show_progress=False)["3d"]
            out[name] = {k: res.get(k) for k in ("false_track_s", "false_tracks", "delays", "IDF1", "skip_s")}
    return out


def run_tradeoff(args: argparse.Namespace) -> int:
    from ..progress import progress
    from .paths import JSON_FILES, Output, check_outputs

    check_outputs([Output("--json", args.json, JSON_FILES)], [args.weights])
    scenes = [s for s in args.scenes.split(",") if s]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    ons = [float(v) for v in args.on.split(",") if v]
    names = [name for name, _ in _tradeoff_gates(args.weights, ons)]
    totals = {name: {"false_track_s": 0.0, "false_tracks": 0, "delays": [], "idf1": [], "seconds": 0.0}
              for name in names}
    jobs = [(sc, sd, args.seconds, args.weights, ons) for sc in scenes for sd in seeds]
    results: list[Optional[dict]] = [None] * len(jobs)
    for outcome in progress(run_tasks(_tradeoff_job, jobs, engine_from_args(args)), desc="scenes",
                            total=len(jobs), unit="scene"):
        if not outcome.ok:
            raise Tracker3DError(f"tradeoff: scene {jobs[outcome.index][0]} seed {jobs[outcome.index][1]} "
                                 f"failed: {outcome.error}")
        results[outcome.index] = outcome.value
    for per_gate in results:  # in scene order, so the sums are the same on any engine
        for name in names:
            res, tot = per_gate[name], totals[name]
            tot["false_track_s"] += res["false_track_s"]
            tot["false_tracks"] += res["false_tracks"]
            tot["delays"] += res.get("delays") or []
            tot["idf1"].append(res["IDF1"])
            tot["seconds"] += args.seconds - res["skip_s"]
    rows = []
    for name, tot in totals.items():
        dl = np.array(tot["delays"])
        rows.append({"gate": name, "false_track_s_per_min": 60 * tot["false_track_s"] / max(tot["seconds"], 1e-9),
                     "false_tracks": tot["false_tracks"],
                     "confirm_ms_median": float(np.median(dl) * 1e3) if len(dl) else float("nan"),
                     "confirm_ms_mean": float(np.mean(dl) * 1e3) if len(dl) else float("nan"),
                     "confirm_ms_p90": float(np.percentile(dl, 90) * 1e3) if len(dl) else float("nan"),
                     "idf1_mean": float(np.mean(tot["idf1"]))})
    print(f"{len(scenes) * len(seeds)} held-out scenes ({', '.join(scenes)}; seeds {args.seeds}), "
          f"{args.seconds:.0f} s each, scored after the detector's warm-up")
    print(f"{'gate':>14s}{'false 3D track-s/min':>22s}{'false tracks':>14s}{'confirm ms median':>19s}"
          f"{'mean':>8s}{'p90':>8s}{'IDF1':>8s}")
    for r in rows:
        print(f"{r['gate']:>14s}{r['false_track_s_per_min']:>22.2f}{r['false_tracks']:>14d}"
              f"{r['confirm_ms_median']:>19.0f}{r['confirm_ms_mean']:>8.0f}{r['confirm_ms_p90']:>8.0f}"
              f"{r['idf1_mean']:>8.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args) | {"func": None}, "rows": rows}, indent=2,
                                              default=str) + "\n")
    return 0
