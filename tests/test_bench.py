"""The bench's building blocks measure what they say (figures are not checked against targets:
speed belongs to `tracker3d bench`, not to tests)."""
import math

import numpy as np

from tracker3d.bench.gate_speed import format_rows as format_gates
from tracker3d.bench.gate_speed import gate_speed
from tracker3d.bench.pipeline_bench import (
    format_p99,
    format_rows,
    format_scaling,
    run_scene,
    steady_figures,
)


def test_pipeline_row_times_every_stage_and_publishes_to_a_real_subscriber():
    r = run_scene("sparse", 3.0, objects=1, gate="hits")
    frames = 90
    assert r["gate"] == "hits" and r["objects"] == 1 and r["mode"] == "fast"
    assert r["source"] == "recording", "fast rows replay the scene's recording, as `tracker3d replay --fast`"
    # every processed pair was published and received over loopback TCP
    assert r["zmq_received"] == frames
    for stage in ("detect", "track2d", "gate", "associate", "triangulate_kf", "publish", "latency"):
        assert r[f"{stage}_ms_median"] > 0, stage
        assert r[f"{stage}_ms_p99"] >= r[f"{stage}_ms_median"], stage
    assert r["pairs_per_s"] > 0 and math.isfinite(r["rmse_m"])
    # The figures are over the pairs after the detector's 2 s warm-up (60 of 90).
    assert r["steady_pairs"] == frames - 60 and r["pairs_per_s_all"] > 0
    assert r["live_tracks_median"] == 1 and r["assoc3d_ms_per_track"] > 0 and r["dropped"] == 0
    table = format_rows([r]).splitlines()
    assert len(table) == 2 and "pub" in table[0] and table[1].split()[4] == "hits"
    assert len(format_p99([r]).splitlines()) == 2


def test_gate_speed_scores_every_frame_and_reports_the_device():
    scores: list = []
    r = gate_speed(7, "cpu", steps=30, frames=4, scores=scores)
    # Every track is scored in every frame, also after 1 s (the pipeline's gate stops scoring a
    # track latched persistent; the benchmark measures undecided tracks): each score moves.
    assert len(scores) == 34 and all((a != b).all() for a, b in zip(scores[-5:], scores[-4:]))
    assert r["tracks"] == 7 and r["device"] == "cpu, 1 thread"
    assert np.isfinite([r["ms_median"], r["ms_p99"], r["full_pass_ms"], r["hits_ms"]]).all()
    assert r["ms_p99"] >= r["ms_median"] > 0
    assert "cpu, 1 thread" in format_gates([r])
    # A GPU's name is long: the track counts stay whole (they were once run into its cut name).
    gpu = dict(r, tracks=10, device="NVIDIA H100 80GB HBM3 graphs, fused")
    lines = format_gates([r, gpu]).splitlines()
    assert lines[2].split()[:6] == ["10", "NVIDIA", "H100", "80GB", "HBM3", "graphs,"]
    assert lines[1].split()[:4] == ["7", "cpu,", "1", "thread"]


def test_scaling_line_gives_association_and_3d_per_live_track_as_ratios_to_10_objects():
    def row(scene, n, ms, live, mode="fast", res="640x480"):
        return {"scene": scene, "objects": n, "mode": mode, "resolution": res, "gate": "persistence",
                "assoc3d_ms_per_track": ms, "live_tracks_median": live}

    rows = [row("default", 10, 0.2, 9, mode="live"), row("default", 10, 0.1, 9), row("default", 10, 0.5, 9, res="1280x720"),
            row("crowd", 200, 0.25, 140), row("crowd", 1000, 0.4, 600)]
    line = format_scaling(rows)
    assert "10 objects 0.100 ms (9 live tracks)" in line
    assert "200 objects 0.250 ms (140 live tracks, 2.50x of 10)" in line and "1000 objects 0.400 ms" in line
    assert "4.00x of 10" in line and "<= 1.5x" in line
    assert format_scaling(rows[:3]) == ""  # no 200-object row: no ratio


def test_steady_figures_take_rate_latency_and_stages_from_the_pairs_given():
    steady = [(10.0 + 0.02 * k, {"detect": 2.0 + k, "publish": 0.1}, 5.0 + k) for k in range(11)]
    f = steady_figures(steady, ("detect", "publish", "gate"))
    assert abs(f["pairs_per_s"] - 50.0) < 1e-9  # 10 intervals of 20 ms
    assert f["detect_ms_median"] == 7.0 and f["latency_ms_median"] == 10.0 and f["publish_ms_p99"] == 0.1
    assert math.isnan(f["gate_ms_median"]) and math.isnan(steady_figures([], ("detect",))["pairs_per_s"])


def test_a_signal_ends_the_bench_without_keeping_the_row_it_cut_short(monkeypatch):
    """Ctrl-C ended the scene's run early and the bench went on, printing and saving that row
    (IDF1 0, RMSE nan) as a real one."""
    import pytest

    import tracker3d.bench.pipeline_bench as pb

    calls = []
    monkeypatch.setattr(pb, "run_scene", lambda *a, **k: calls.append(a) or {"row": len(calls)})
    with pytest.raises(KeyboardInterrupt):
        pb.pipeline_rows(True, stop=lambda: len(calls) == 2)
    assert len(calls) == 2
    assert len(pb.pipeline_rows(True, stop=lambda: False)) == 3  # the quick plan, whole


def test_detect_rows_time_each_config_twice_in_mirrored_order_and_keep_the_lower(monkeypatch):
    from tracker3d.bench import detect_speed as ds

    calls = []

    def fake(width, height, frames=150, detect_scale=1.0):  # the second run of a config is 1 ms slower
        calls.append((width, detect_scale))
        k = calls.count((width, detect_scale))
        return {"resolution": f"{width}x{height}", "detect_scale": detect_scale, "recall": 0.9,
                "ms_median": width / 100 + k - 1, "ms_p99": 2 * width / 100 - k}

    monkeypatch.setattr(ds, "detect_speed", fake)
    rows = ds.detect_rows([(640, 480, 1.0), (1280, 720, 1.0), (1280, 720, 0.5)], frames=10)
    assert calls == [(640, 1.0), (1280, 1.0), (1280, 0.5), (1280, 0.5), (1280, 1.0), (640, 1.0)]
    assert [(r["resolution"], r["detect_scale"]) for r in rows] == [("640x480", 1.0), ("1280x720", 1.0),
                                                                   ("1280x720", 0.5)]
    assert rows[0]["ms_median"] == 6.4 and rows[0]["runs_ms_median"] == [6.4, 7.4]  # the lower median
    assert rows[0]["ms_p99"] == 12.8 - 2  # the lower p99 (the second run's here)
