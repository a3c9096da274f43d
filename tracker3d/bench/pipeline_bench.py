"""End-to-end figures of the stereo loop on sim scenes: throughput, latency, per-stage time and
the accuracy that goes with them."""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import zmq

from ..evaluation.runs import Collector, warmup_s
from ..pipeline import STAGES, PipelineConfig, StereoPipeline, run
from ..sim import SimStereoSource, SimWorld, get_scene, gt_columns


def run_scene(scene: str, seconds: float, seed: int = 0, objects: Optional[int] = None, width: int = 640,
              height: int = 480, realtime: bool = False, gate: str = "default", pipelined: bool = True,
              recording: Optional[bool] = None, processes: bool = True) -> dict:
    """One scene through the loop; gate: 'default' (the CLI's default), 'persistence' or 'hits';
    pipelined: the next pair detected while this one is tracked (the CLI's default; its stage times
    then include waiting for the other thread's share of the cores). recording (default: when not
    realtime): the scene is first written as a recording (MJPEG, as `tracker3d sim` writes it; not
    timed) and the loop replays it as `tracker3d replay --fast` does, decoding the videos; else the
    simulator renders each pair inside the loop, as a live camera would deliver it. processes: each
    camera's detector in a child process where the CLI does that (commands.common.DETECT_PROCESSES)."""
    from ..commands.common import DEFAULT_GATE

    kind = DEFAULT_GATE if gate == "default" else gate
    cfg = get_scene(scene).with_(seconds=seconds, width=width, height=height)
    if objects is not None:
        cfg = cfg.with_(n_objects=objects)
    if recording is None:
        recording = not realtime
    tmp = None
    if recording:
        from streams import RecordingReader

        from ..sim import read_gt, write_sim_recording

        tmp = tempfile.TemporaryDirectory(prefix="tracker3d-bench-")
        rec_dir = write_sim_recording(cfg, Path(tmp.name) / "rec", seed=seed)
        src = RecordingReader(rec_dir, require_calib=True)
        calib, gt = src.calib, read_gt(rec_dir / "gt.csv")
    else:
        world = SimWorld(cfg, seed=seed)
        src = SimStereoSource(world, realtime=realtime)
        calib, gt = world.calib, None
    try:
        row = _run_source(src, calib, gt, cfg, kind, pipelined, processes)
    finally:
        src.close()
        if tmp is not None:
            tmp.cleanup()
    return {"scene": scene, "gate": kind, "objects": cfg.n_objects, "resolution": f"{width}x{height}",
            "mode": "live" if realtime else "fast", "source": "recording" if recording else "sim", **row}


def _run_source(src, calib, gt: Optional[dict], cfg, kind: str, pipelined: bool, processes: bool = True) -> dict:
    """The loop over src with a loopback subscriber; gt: the recording's (None: the sim source's)."""
    from ..commands.common import DETECT_PROCESSES

    config = PipelineConfig(pipelined=pipelined, processes=DETECT_PROCESSES and processes)
    if kind == "persistence":
        from persistence.filter import TrackPersistenceFilter

        g = TrackPersistenceFilter(device="auto")
    else:
        from persistence import HitCountGate

        g = HitCountGate(3, 1.0)
    pipe = StereoPipeline(calib, config, gate=g)
    col = Collector(pipe)
    per_track, live = [], []
    warm_s = warmup_s(config, cfg.frame_rate)
    t_first: list[float] = []  # the scene time of the first pair
    steady: list[tuple[float, dict, float]] = []  # after the warm-up: (wall clock s, stage ms, age ms)

    def on_frame(f3):
        col(f3)
        if not t_first:
            t_first.append(f3.t)
        if f3.t - t_first[0] >= warm_s:  # the detector reports: the loop's steady work
            steady.append((time.perf_counter(), dict(f3.timings), f3.age_ms))
        if f3.tracks:  # association + 3D of this pair, per live (reported) 3D track
            per_track.append((f3.timings["associate"] + f3.timings["triangulate_kf"]) / len(f3.tracks))
            live.append(len(f3.tracks))

    with _LoopbackSubscriber() as sub:
        stats = run(src, pipe, publisher=sub.publisher, on_frame=on_frame, images_needed=False)
    pipe.close()
    m = col.evaluate(gt if gt is not None else gt_columns(src.gt), cfg.frame_rate, warm_s)["3d"]
    s = stats.summary(src.stats.as_dict())
    return {
        **steady_figures(steady, STAGES),
        "pairs_per_s_all": s["pairs_per_s"], "steady_pairs": len(steady),
        "dropped": src.stats.overwritten + stats.dropped_stale, "zmq_received": sub.received,
        "live_tracks_median": float(np.median(live)) if live else 0.0,
        "assoc3d_ms_per_track": float(np.median(per_track)) if per_track else float("nan"),
        "IDF1": m["IDF1"], "MOTA": m["MOTA"], "rmse_m": m["rmse_m"], "bound_m": m["bound_m"],
        "false_tracks": m["false_tracks"], "time_to_track_s": m["time_to_track_s_median"],
    }


def steady_figures(steady: list[tuple[float, dict, float]], stages) -> dict:
    """Throughput, latency and per-stage medians / p99 over the pairs after the detector's
    warm-up ((wall clock s, stage ms, age ms) each): the warm-up's pairs cost little (the detector
    learns and reports nothing), and in a short scene they would flatter every figure (a 6 s
    crowd: 50 pairs/s over the run, 40 after the warm-up)."""
    nan = float("nan")
    out: dict = {"pairs_per_s": (len(steady) - 1) / (steady[-1][0] - steady[0][0])
                 if len(steady) > 1 and steady[-1][0] > steady[0][0] else nan}
    for key, values in [("latency", [a for _, _, a in steady if a is not None])] + \
            [(k, [tm[k] for _, tm, _ in steady if k in tm]) for k in stages]:
        v = np.asarray(values, float)
        out[f"{key}_ms_median"] = float(np.median(v)) if len(v) else nan
        out[f"{key}_ms_p99"] = float(np.percentile(v, 99)) if len(v) else nan
    return out


_SHORT = {"detect": "detect", "track2d": "trk2d", "gate": "gate", "associate": "assoc", "triangulate_kf": "3d",
          "publish": "pub"}
_COLUMNS = tuple((s, _SHORT[s]) for s in STAGES)


# The bench's subscriber, run as its own process: counts raw frames (not decoded) until its
# stdin closes, then drains until 0.3 s pass without one and prints the count. Ctrl-C and SIGTERM
# reach the whole process group: the bench ends it (stdin, then kill), as run() its detectors.
_SUBSCRIBER = """
import signal
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
import sys, time, zmq
ctx = zmq.Context()
sock = ctx.socket(zmq.SUB)
sock.setsockopt(zmq.LINGER, 0)
sock.setsockopt(zmq.SUBSCRIBE, b"")
sock.connect(sys.argv[1])
print("ready", flush=True)
poller = zmq.Poller()
poller.register(sock, zmq.POLLIN)
poller.register(sys.stdin, zmq.POLLIN)
n, closing, quiet = 0, False, None
while True:
    events = dict(poller.poll(50))
    if sock in events:
        sock.recv_multipart()
        n += 1
        quiet = None
    if not closing and any(k is not sock for k in events):
        closing = True
        poller.unregister(sys.stdin)
    if closing:
        quiet = quiet or time.monotonic()
        if time.monotonic() - quiet > 0.3:
            break
print(n, flush=True)
"""


class _LoopbackSubscriber:
    """A real publisher on a free loopback port and one subscriber process draining it (raw
    frames, not decoded), so the publish stage is timed as it runs in use. A process, as a
    subscribing app is (a thread here would share the tracking thread's GIL)."""

    def __init__(self):
        from streams.publisher import TrackPublisher

        self.publisher = TrackPublisher("tcp://127.0.0.1:*")
        self.endpoint = self.publisher.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.received = 0
        self._proc: Optional[subprocess.Popen] = None

    def __enter__(self) -> "_LoopbackSubscriber":
        self._proc = subprocess.Popen([sys.executable, "-c", _SUBSCRIBER, self.endpoint], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
        self._proc.stdout.readline()  # "ready": connected
        deadline = time.monotonic() + 2.0  # let the subscription reach the publisher
        while self.publisher.sock.poll(10) == 0 and time.monotonic() < deadline:
            pass
        return self

    def __exit__(self, *exc) -> None:
        proc, self._proc = self._proc, None
        try:
            out, _ = proc.communicate(timeout=5.0)  # closes its stdin: it drains the last messages
            self.received = int(out.split()[-1]) if out.split() else 0
        except (subprocess.TimeoutExpired, ValueError):
            proc.kill()
            proc.wait()
        self.publisher.close()


def _row_head() -> str:
    return f"{'scene':9s} {'obj':>4s} {'res':>9s} {'mode':>4s} {'gate':>5s} "


def _row_key(r: dict) -> str:
    gate = "learn" if r["gate"] == "persistence" else r["gate"]
    return f"{r['scene']:9s} {r['objects']:4d} {r['resolution']:>9s} {r['mode']:>4s} {gate:>5s} "


def format_rows(rows: list[dict]) -> str:
    """The end-to-end table: throughput, latency, stage medians and accuracy, one row per run."""
    lines = [_row_head() + f"{'pairs/s':>8s} {'lat p50':>8s} {'lat p99':>8s} "
             + " ".join(f"{short:>6s}" for _, short in _COLUMNS)
             + f" {'a+3d/tr':>7s} {'IDF1':>6s} {'RMSE cm':>8s} {'bound':>6s} {'false':>5s}"]
    for r in rows:
        lines.append(
            _row_key(r) + f"{r['pairs_per_s']:8.1f} {r['latency_ms_median']:8.2f} {r['latency_ms_p99']:8.2f} "
            + " ".join(f"{r[f'{key}_ms_median']:6.2f}" for key, _ in _COLUMNS)
            + f" {r['assoc3d_ms_per_track']:7.3f}"
            + f" {r['IDF1']:6.3f} {r['rmse_m'] * 100:8.1f} {r['bound_m'] * 100:6.1f} {r['false_tracks']:5d}")
    return "\n".join(lines)


SCALING_TARGET = 1.5  # issue 17: association + 3D per pair per live track, 200 objects vs 10


def format_scaling(rows: list[dict]) -> str:
    """One line: association + 3D ms per pair per live 3D track at 10, 200 (and 1000) objects,
    as ratios to 10 (fast 640x480 rows with the default gate), or '' without both."""
    fast = {r["objects"]: r for r in rows if r["mode"] == "fast" and r["resolution"] == "640x480"
            and r["gate"] == rows[0]["gate"] and r["scene"] in ("default", "crowd")}
    if 10 not in fast or 200 not in fast:
        return ""
    base = fast[10]["assoc3d_ms_per_track"]
    parts = [f"{n} objects {fast[n]['assoc3d_ms_per_track']:.3f} ms ({fast[n]['live_tracks_median']:.0f} live tracks"
             + (f", {fast[n]['assoc3d_ms_per_track'] / base:.2f}x of 10)" if n != 10 else ")")
             for n in sorted(fast)]
    return (f"association + 3D, ms per pair per live 3D track (median over pairs with tracks): {', '.join(parts)}; "
            f"target for 200 vs 10: <= {SCALING_TARGET}x")


def format_p99(rows: list[dict]) -> str:
    """Per-stage p99 (ms) of the same runs."""
    lines = [_row_head() + " ".join(f"{short:>6s}" for _, short in _COLUMNS)]
    lines += [_row_key(r) + " ".join(f"{r[f'{key}_ms_p99']:6.2f}" for key, _ in _COLUMNS) for r in rows]
    return "\n".join(lines)


def pipeline_rows(quick: bool, progress=None, stop=None) -> list[dict]:
    """The bench's runs with the CLI's default gate, plus the hit-count rule on the same 640x480
    scenes so the learned gate's cost and effect are measured in the same run. stop(): True once
    the run should end (a row it cut short is not kept: KeyboardInterrupt)."""
    if quick:
        plan = [("default", 10, 640, 480, True, 6.0, "default"), ("default", 10, 640, 480, False, 6.0, "default"),
                ("crowd", 200, 640, 480, False, 4.0, "default")]
    else:
        plan = [("default", 10, 640, 480, True, 12.0, "default"), ("default", 10, 640, 480, True, 12.0, "hits"),
                ("default", 10, 640, 480, False, 12.0, "default"), ("default", 10, 640, 480, False, 12.0, "hits"),
                ("default", 10, 1280, 720, False, 8.0, "default"), ("sparse", 1, 640, 480, False, 8.0, "default"),
                ("swarm", 50, 640, 480, False, 8.0, "default"), ("crowd", 200, 640, 480, False, 6.0, "default"),
                ("crowd", 1000, 640, 480, False, 5.0, "default")]
    rows = []
    for scene, n, w, h, live, secs, gate in (progress(plan) if progress else plan):
        row = run_scene(scene, secs, objects=n, width=w, height=h, realtime=live, gate=gate)
        if stop is not None and stop():  # the loop ends its run at a signal: that row is cut short
            raise KeyboardInterrupt
        rows.append(row)
    return rows
