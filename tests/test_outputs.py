"""Exports: .jsonl, .csv and .mcap written by replay read back equal to what was published."""
import numpy as np
import pytest

from streams.errors import StreamError
from tracker3d.cli import main
from tracker3d.outputs.files import open_writer, read_csv, read_jsonl, read_mcap
from tracker3d.sim import get_scene, write_sim_recording


def _track(i, x):
    return {"id": i, "xyz": [x, 0.5, 3.0], "vel": [0.1, 0.0, -0.2], "cov": [[1e-4, 0, 0], [0, 1e-4, 0], [0, 0, 4e-4]],
            "persistence": 0.93, "age_s": 1.5, "state": "tracked", "cam0": {"track": 3, "uv": [320.5, 200.25]},
            "cam1": None}


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".mcap"])
def test_writers_round_trip(tmp_path, suffix):
    sent = [(k, k / 30.0, [_track(1, 0.1 * k), _track(7, -0.2 * k)] if k % 3 else []) for k in range(10)]
    path = tmp_path / f"tracks{suffix}"
    with open_writer(path, "world") as w:
        for frame, t, tracks in sent:
            w.write(frame, t, tracks, latency_ms=2.5)
    if suffix == ".csv":
        rows = read_csv(path)
        expect = [(f, t, tr) for f, t, trs in sent for tr in trs]
        assert len(rows) == len(expect)
        for r, (f, t, tr) in zip(rows, expect):
            assert (r["frame"], r["t"], r["id"], r["state"]) == (f, t, tr["id"], tr["state"])
            np.testing.assert_array_equal([r["x"], r["y"], r["z"]], tr["xyz"])
            np.testing.assert_array_equal([r["vx"], r["vy"], r["vz"]], tr["vel"])
            assert r["persistence"] == tr["persistence"]
    else:
        msgs = read_jsonl(path) if suffix == ".jsonl" else read_mcap(path)
        assert [(m["seq"], m["frame"], m["t"], m["tracks"], m["frame_id"]) for m in msgs] == \
            [(k, f, t, trs, "world") for k, (f, t, trs) in enumerate(sent)]


def test_mcap_is_a_standard_file_with_a_json_schema_channel(tmp_path):
    from mcap.reader import make_reader

    path = tmp_path / "t.mcap"
    with open_writer(path) as w:
        w.write(0, 0.0, [_track(2, 1.0)])
    with open(path, "rb") as f:
        r = make_reader(f)
        summary = r.get_summary()
        (ch,) = summary.channels.values()
        schema = summary.schemas[ch.schema_id]
        assert ch.topic == "/tracks3d" and ch.message_encoding == "json"
        assert schema.encoding == "jsonschema" and b'"tracker3d/tracks3d@1"' in schema.data
        assert summary.statistics.message_count == 1


def test_bad_outputs_are_clear(tmp_path):
    with pytest.raises(StreamError, match="expected a .jsonl, .csv or .mcap file"):
        open_writer(tmp_path / "t.txt")
    (tmp_path / "bad.mcap").write_bytes(b"\x89MCAP0\r\n garbage")
    with pytest.raises(StreamError, match="bad.mcap: not a readable MCAP file"):
        read_mcap(tmp_path / "bad.mcap")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(StreamError, match="bad.csv: expected the columns frame, t, id"):
        read_csv(tmp_path / "bad.csv")


def test_replay_exports_agree(tmp_path, capsys):
    rec = write_sim_recording(get_scene("default").with_(seconds=3.0), tmp_path / "rec", seed=4)
    for suffix in (".jsonl", ".csv", ".mcap"):
        assert main(["replay", str(rec), "--out", str(tmp_path / f"t{suffix}")]) == 0
    js, mc, rows = read_jsonl(tmp_path / "t.jsonl"), read_mcap(tmp_path / "t.mcap"), read_csv(tmp_path / "t.csv")
    assert len(js) == len(mc) == 90
    assert [m["tracks"] for m in js] == [m["tracks"] for m in mc]
    flat = [(m["frame"], tr["id"], tr["xyz"]) for m in js for tr in m["tracks"]]
    assert len(flat) == len(rows) > 50
    assert all((f, i, [r["x"], r["y"], r["z"]]) == (r["frame"], r["id"], xyz) or (f, i) != (r["frame"], r["id"])
               for (f, i, xyz), r in zip(flat, rows))
    assert [(f, i) for f, i, _ in flat] == [(r["frame"], r["id"]) for r in rows]
