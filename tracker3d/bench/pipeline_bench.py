"""End-to-end figures of the stereo loop on sim scenes: throughput, latency, per-stage time and
the accuracy that goes with them."""
from __future__ import annotations

from typing import Optional

from ..evaluate import Collector, warmup_s
from ..pipeline import PipelineConfig, StereoPipeline, run
from ..sim import SimStereoSource, SimWorld, get_scene, gt_columns


def run_scene(scene: str, seconds: float, seed: int = 0, objects: Optional[int] = None, width: int = 640,
              height: int = 480, realtime: bool = False, gate: str = "default") -> dict:
    """One scene through the loop; gate: 'default' (the CLI's default), 'persistence' or 'hits'."""
    from ..commands.common import DEFAULT_GATE

    kind = DEFAULT_GATE if gate == "default" else gate
    cfg = get_scene(scene).with_(seconds=seconds, width=width, height=height)
    if objects is not None:
        cfg = cfg.with_(n_objects=objects)
    world = SimWorld(cfg, seed=seed)
    src = SimStereoSource(world, realtime=realtime)
    config = PipelineConfig()
    if kind == "persistence":
        from persistence.filter import TrackPersistenceFilter

        g = TrackPersistenceFilter(device="auto")
    else:
        from persistence import HitCountGate

        g = HitCountGate(3, 1.0)
    pipe = StereoPipeline(world.calib, config, gate=g)
    col = Collector(pipe)
    stats = run(src, pipe, on_frame=col)
    pipe.close()
    m = col.evaluate(gt_columns(src.gt), cfg.fps, warmup_s(config, cfg.fps))["3d"]
    s = stats.summary(src.stats.as_dict())
    return {
        "scene": scene, "gate": kind, "objects": cfg.n_objects, "resolution": f"{width}x{height}", "mode": "live" if realtime
        else "fast", "pairs_per_s": s["pairs_per_s"], "dropped": src.stats.overwritten,
        **{k: v for k, v in s.items() if k.endswith("_ms_median") or k.endswith("_ms_p99")},
        "IDF1": m["IDF1"], "MOTA": m["MOTA"], "rmse_m": m["rmse_m"], "bound_m": m["bound_m"],
        "false_tracks": m["false_tracks"], "time_to_track_s": m["time_to_track_s_median"],
    }


def format_rows(rows: list[dict]) -> str:
    head = (f"{'scene':9s} {'obj':>4s} {'res':>9s} {'mode':>4s} {'pairs/s':>8s} {'lat p50':>8s} {'lat p99':>8s} "
            f"{'detect':>7s} {'trk2d':>6s} {'gate':>6s} {'assoc':>6s} {'3d':>6s} {'IDF1':>6s} {'RMSE cm':>8s} {'bound':>6s} "
            f"{'false':>5s}")
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['scene']:9s} {r['objects']:4d} {r['resolution']:>9s} {r['mode']:>4s} {r['pairs_per_s']:8.1f} "
            f"{r['latency_ms_median']:8.2f} {r['latency_ms_p99']:8.2f} {r['detect_ms_median']:7.2f} "
            f"{r['track2d_ms_median']:6.2f} {r['gate_ms_median']:6.2f} {r['associate_ms_median']:6.2f} {r['triangulate_kf_ms_median']:6.2f} "
            f"{r['IDF1']:6.3f} {r['rmse_m'] * 100:8.1f} {r['bound_m'] * 100:6.1f} {r['false_tracks']:5d}")
    return "\n".join(lines)


def pipeline_rows(quick: bool, progress=None) -> list[dict]:
    if quick:
        plan = [("default", 10, 640, 480, True, 6.0), ("default", 10, 640, 480, False, 6.0)]
    else:
        plan = [("default", 10, 640, 480, True, 12.0), ("default", 10, 640, 480, False, 12.0),
                ("default", 10, 1280, 720, False, 8.0), ("sparse", 1, 640, 480, False, 8.0),
                ("swarm", 50, 640, 480, False, 8.0), ("crowd", 200, 640, 480, False, 6.0)]
    rows = []
    for scene, n, w, h, live, secs in (progress(plan) if progress else plan):
        rows.append(run_scene(scene, secs, objects=n, width=w, height=h, realtime=live))
    return rows
