"""Options shared by the commands that run the stereo pipeline, and its run summary."""
from __future__ import annotations

import argparse

from persistence import HitCountGate

from ..pipeline import PipelineConfig, STAGES
from ..track3d import Track3DConfig


def add_pipeline_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("pipeline")
    g.add_argument("--detector", default="bg", help="bg | knn | marker | onnx:MODEL.onnx (default bg)")
    g.add_argument("--gate", default="hits", choices=["hits"],
                   help="which gate confirms 2D tracks: hits = HitCountGate")
    g.add_argument("--min-hits", type=int, default=3, help="hits gate: detections needed within --window")
    g.add_argument("--window", type=float, default=1.0, help="hits gate window, seconds")
    g.add_argument("--model", default="cv", choices=["cv", "ca"], help="3D motion model: constant velocity "
                   "or constant acceleration")
    g.add_argument("--pixel-sigma", type=float, default=0.25, help="2D centroid noise for triangulation, px")
    g.add_argument("--max-coast", type=float, default=0.5, help="seconds a 3D track survives unseen")


def pipeline_from_args(args: argparse.Namespace):
    cfg = PipelineConfig(detector=args.detector, pixel_sigma=args.pixel_sigma,
                         track3d=Track3DConfig(model=args.model, max_coast_s=args.max_coast))
    gate = HitCountGate(args.min_hits, args.window)
    return cfg, gate


def format_summary(summary: dict) -> str:
    lines = [f"pairs in {summary['pairs_in']}, processed {summary['processed']} "
             f"({summary['pairs_per_s']:.1f} pairs/s over {summary['wall_s']:.1f} s), published "
             f"{summary['published']}, most tracks at once {summary['tracks_max']}"]
    src = summary.get("source")
    if src:
        lines.append("source: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                            for k, v in src.items()))
    if "zmq_sent" in summary:
        lines.append(f"zmq: sent {summary['zmq_sent']}, dropped {summary['zmq_dropped']}, "
                     f"subscribers {summary['zmq_subscribers']}")
    stage = [f"{s} {summary[f'{s}_ms_median']:.2f}/{summary[f'{s}_ms_p99']:.2f}"
             for s in STAGES + ("latency",) if f"{s}_ms_median" in summary]
    lines.append("ms median/p99: " + ", ".join(stage))
    return "\n".join(lines)
