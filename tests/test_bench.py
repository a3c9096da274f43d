"""The bench's building blocks measure what they say (figures are not checked against targets:
speed belongs to `tracker3d bench`, not to tests)."""
import math

import numpy as np

from tracker3d.bench.gate_speed import format_rows as format_gates, gate_speed
from tracker3d.bench.pipeline_bench import format_p99, format_rows, run_scene


def test_pipeline_row_times_every_stage_and_publishes_to_a_real_subscriber():
    r = run_scene("sparse", 3.0, objects=1, gate="hits")
    frames = 90
    assert r["gate"] == "hits" and r["objects"] == 1 and r["mode"] == "fast"
    # every processed pair was published and received over loopback TCP
    assert r["zmq_received"] == frames
    for stage in ("detect", "track2d", "gate", "associate", "triangulate_kf", "publish", "latency"):
        assert r[f"{stage}_ms_median"] > 0, stage
        assert r[f"{stage}_ms_p99"] >= r[f"{stage}_ms_median"], stage
    assert r["pairs_per_s"] > 0 and math.isfinite(r["rmse_m"])
    table = format_rows([r]).splitlines()
    assert len(table) == 2 and "pub" in table[0] and table[1].split()[4] == "hits"
    assert len(format_p99([r]).splitlines()) == 2


def test_gate_speed_scores_every_frame_and_reports_the_device():
    r = gate_speed(7, "cpu", steps=8, frames=4)
    assert r["tracks"] == 7 and r["device"] == "cpu, 1 thread"
    assert np.isfinite([r["ms_median"], r["ms_p99"], r["full_pass_ms"], r["hits_ms"]]).all()
    assert r["ms_p99"] >= r["ms_median"] > 0
    assert "cpu, 1 thread" in format_gates([r])
