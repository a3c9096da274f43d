"""tracker3d batch: many inputs on an engine, identical to replay, failures isolated, resumable."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tracker3d.batch.engine import EngineSpec, run_tasks
from tracker3d.cli import main
from tracker3d.errors import Tracker3DError

OPTS = ["--gate", "hits", "--max-coast", "0.4"]


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch_inputs")
    for seed in (1, 2):
        assert main(["sim", "--scene", "sparse", "--seconds", "2.5", "--seed", str(seed), "--out",
                     str(root / f"rec{seed}")]) == 0
    broken = root / "broken"
    broken.mkdir()
    (broken / "frames.csv").write_text("not,a,recording\n")
    return root


def _square(x):
    if x == 3:
        raise ValueError("three is not allowed\nsecond line")
    return x * x


@pytest.mark.parametrize("kind", ["serial", "local"])
def test_engine_returns_every_result_and_isolates_a_failure(kind):
    outs = {o.index: o for o in run_tasks(_square, [1, 2, 3, 4], EngineSpec(kind, workers=2))}
    assert sorted(outs) == [0, 1, 2, 3]
    assert [outs[i].value for i in (0, 1, 3)] == [1, 4, 16]
    assert not outs[2].ok and outs[2].error == "second line"


def test_engine_options_are_checked():
    with pytest.raises(Tracker3DError, match="--engine"):
        EngineSpec("spark")
    with pytest.raises(Tracker3DError, match="--address needs --engine ray"):
        EngineSpec("local", address="auto")
    with pytest.raises(Tracker3DError, match="--workers 0"):
        EngineSpec("local", workers=0)


def test_batch_equals_replay_per_input_and_reports_the_failed_one(recordings, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["batch", str(recordings / "*"), "--out-dir", str(out), "--workers", "2", "--eval", *OPTS])
    assert rc == 1, "a failed input makes the batch exit 1"
    rows = {r["name"]: r for r in json.loads((out / "batch_summary.json").read_text())}
    assert rows["broken"]["status"] == "failed" and "frames.csv" in rows["broken"]["error"]
    for name in ("rec1", "rec2"):
        r = rows[name]
        assert r["status"] == "ok" and r["pairs"] == 75 and r["tracks"] >= 1 and 0 < r["3d_IDF1"] <= 1
        serial = tmp_path / f"{name}.jsonl"
        assert main(["replay", str(recordings / name), "--out", str(serial), *OPTS]) == 0
        assert (out / name / "tracks.jsonl").read_bytes() == serial.read_bytes()
        assert json.loads((out / name / "eval.json").read_text())["3d"]["IDF1"] == r["3d_IDF1"]
    assert "broken" in capsys.readouterr().out


def test_batch_resumes_skipping_finished_inputs_and_redoes_changed_ones(recordings, tmp_path):
    out = tmp_path / "out"
    args = ["batch", str(recordings / "rec1"), str(recordings / "rec2"), "--out-dir", str(out), "--engine",
            "serial", *OPTS]
    assert main(args) == 0
    done = out / "rec1" / "tracks.jsonl"
    stamp = done.stat().st_mtime_ns
    assert main(args) == 0
    rows = {r["name"]: r for r in json.loads((out / "batch_summary.json").read_text())}
    assert {r["status"] for r in rows.values()} == {"done"} and done.stat().st_mtime_ns == stamp
    # a batch killed mid-input leaves no result.json there: that input (only) runs again
    (out / "rec2" / "result.json").unlink()
    assert main(args) == 0
    rows = {r["name"]: r for r in json.loads((out / "batch_summary.json").read_text())}
    assert rows["rec1"]["status"] == "done" and rows["rec2"]["status"] == "ok"
    # other options: not the same run, so everything runs again
    assert main(args[:-1] + ["0.3"]) == 0
    rows = {r["name"]: r for r in json.loads((out / "batch_summary.json").read_text())}
    assert {r["status"] for r in rows.values()} == {"ok"}


def test_batch_input_errors_are_one_line(tmp_path, capsys):
    assert main(["batch", str(tmp_path / "nope*"), "--out-dir", str(tmp_path / "o")]) == 2
    assert "no folder matches" in capsys.readouterr().err
    (tmp_path / "list.txt").write_text("# inputs\nmissing_rec\n")
    assert main(["batch", "--list", str(tmp_path / "list.txt"), "--out-dir", str(tmp_path / "o")]) == 2
    assert "missing_rec: not a folder" in capsys.readouterr().err


def test_interrupted_batch_exits_130_and_a_rerun_finishes(recordings, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tracker3d.cli", "batch", str(recordings / "rec1"), str(recordings / "rec2"),
           "--out-dir", str(out), "--workers", "1", *OPTS]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    deadline = time.monotonic() + 120
    while not (out / "rec1" / "log.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    rows = json.loads((out / "batch_summary.json").read_text())
    assert any(r["status"] == "not run" for r in rows)
    assert not any(p.name == "tracks.jsonl" for p in out.rglob("*") if not (p.parent / "result.json").exists())
    assert main(cmd[3:]) == 0
    assert {r["status"] for r in json.loads((out / "batch_summary.json").read_text())} <= {"ok", "done"}


@pytest.mark.ray
def test_ray_engine_gives_the_same_outputs(recordings, tmp_path):
    pytest.importorskip("ray")
    if os.environ.get("TRACKER3D_SKIP_RAY"):
        pytest.skip("TRACKER3D_SKIP_RAY is set")
    local, ray_out = tmp_path / "local", tmp_path / "ray"
    inputs = [str(recordings / "rec1"), str(recordings / "rec2")]
    assert main(["batch", *inputs, "--out-dir", str(local), "--engine", "serial", *OPTS]) == 0
    assert main(["batch", *inputs, "--out-dir", str(ray_out), "--engine", "ray", "--workers", "2", *OPTS]) == 0
    for name in ("rec1", "rec2"):
        assert (local / name / "tracks.jsonl").read_bytes() == (ray_out / name / "tracks.jsonl").read_bytes()


def test_gate_training_data_is_the_same_on_every_engine():
    from tracker3d.sim.gate_data import build

    serial = build(["default"], [1, 2], seconds=3.0, engine=EngineSpec("serial"))
    local = build(["default"], [1, 2], seconds=3.0, engine=EngineSpec("local", workers=2))
    assert len(serial) > 0 and len(serial) == len(local)
    assert (serial.hist == local.hist).all() and (serial.seed == local.seed).all()


def test_tradeoff_runs_its_scenes_on_the_engine(tmp_path, capsys):
    js = tmp_path / "t.json"
    assert main(["persistence", "tradeoff", "--scenes", "sparse", "--seeds", "3000,3001", "--seconds", "3",
                 "--on", "0.5", "--workers", "2", "--json", str(js)]) == 0
    rows = {r["gate"]: r for r in json.loads(js.read_text())["rows"]}
    assert set(rows) == {f"hits {k}" for k in range(1, 7)} | {"learned 0.50"}
    assert all(0 <= r["idf1_mean"] <= 1 for r in rows.values())


def test_batch_replays_and_scores_real_detection_folders(tmp_path):
    """The WildTrack slice (real cameras, detections folders with world ground truth) as batch inputs."""
    data = Path(__file__).parent / "data" / "wildtrack_c1c2_slice"
    out = tmp_path / "out"
    assert main(["batch", str(data / "clean"), str(data / "noisy"), "--out-dir", str(out), "--eval",
                 "--engine", "serial", "--gate", "hits"]) == 0
    rows = {r["name"]: r for r in json.loads((out / "batch_summary.json").read_text())}
    for name in ("clean", "noisy"):
        assert rows[name]["pairs"] == 40 and "ground_MOTA" in rows[name]
        serial = tmp_path / f"{name}.jsonl"
        assert main(["replay", str(data / name), "--out", str(serial), "--gate", "hits"]) == 0
        assert (out / name / "tracks.jsonl").read_bytes() == serial.read_bytes()
