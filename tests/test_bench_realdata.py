"""The real-data section of the bench on the WildTrack slice: rows computed against ground truth."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import DATA

from tracker3d.bench.realdata import naive_3d, oracle_3d, variant_dirs, wildtrack_rows
from tracker3d.cli import main
from tracker3d.errors import Tracker3DError

SLICE = DATA / "wildtrack_c1c2_slice"


def test_the_oracle_finds_the_persons_both_cameras_see():
    g = oracle_3d(SLICE / "clean")["ground"]
    # True matches and IDs: high precision, few switches; misses are persons one camera sees.
    assert g["precision"] > 0.9 and g["IDSW"] <= 2 and 0.5 < g["recall"] < 1.0
    assert g["mean_dist_m"] < 0.25


def test_the_naive_baseline_scores_between_nothing_and_the_oracle():
    naive = naive_3d(SLICE / "clean")["ground"]
    oracle = oracle_3d(SLICE / "clean")["ground"]
    assert 0.2 < naive["MOTA"] < oracle["MOTA"] and naive["IDF1"] < oracle["IDF1"]
    assert naive["IDSW"] > oracle["IDSW"]  # per-frame linking switches identities


def test_variant_dirs_takes_a_folder_or_its_clean_and_noisy(tmp_path):
    assert [n for n, _ in variant_dirs(SLICE)] == ["clean", "noisy"]
    assert [n for n, _ in variant_dirs(SLICE / "noisy")] == ["noisy"]
    with pytest.raises(Tracker3DError, match="not a detections folder"):
        variant_dirs(tmp_path)


def test_bench_wildtrack_prints_and_saves_finite_rows(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", "--wildtrack", str(SLICE / "clean"), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3D ground plane" in text and "2D view 0" in text
    rows = json.loads(out.read_text())["wildtrack"]
    methods = {r["method"] for r in rows}
    assert {"tracker3d", "oracle, box centers", "tracker3d (stereo pipeline)"} <= methods
    for r in rows:
        assert np.isfinite(r["MOTA"]) and r["MOTA"] <= 1 and 0 <= r["IDF1"] <= 1


def test_bench_wildtrack_never_writes_its_json_over_the_data(tmp_path, capsys):
    """--json onto one of the folder's own files is refused up front (it replaced meta.json)."""
    import shutil

    data = tmp_path / "wt"
    shutil.copytree(SLICE / "clean", data)
    target = data / "meta.json"
    kept = target.read_bytes()
    assert main(["bench", "--wildtrack", str(data), "--json", str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "an output never replaces an input" in err[0]
    assert target.read_bytes() == kept


def test_json_outputs_are_strict_and_make_their_folder(tmp_path):
    """NaN/inf figures become null (bare NaN is not JSON), and a new folder is made as for
    every other output, so a long bench never dies at its last line."""
    from tracker3d.commands.paths import write_json

    out = tmp_path / "new" / "deeper" / "b.json"
    write_json(out, {"a": float("nan"), "b": [1.5, float("inf"), {"c": -float("inf")}], "d": (1, 2), "e": "x"})
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.5, None, {"c": None}], "d": [1, 2], "e": "x"}


def test_the_row_maker_matches_what_eval_prints(tmp_path, capsys):
    rows = wildtrack_rows(SLICE / "clean")
    ours = next(r for r in rows if r["method"] == "tracker3d")
    assert main(["eval", str(SLICE / "clean"), "--json", str(tmp_path / "e.json")]) == 0
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["ground"]["MOTA"] == pytest.approx(ours["MOTA"]) and res["ground"]["FN"] == ours["FN"]


def test_bench_wildtrack_says_each_runs_note_once(capsys, caplog):
    """Six runs of the loop at WildTrack's 2 fps: the learned gate's fallback note was said six
    times among the tables; once now (the progress lines still each time)."""
    with caplog.at_level("INFO"):
        assert main(["bench", "--wildtrack", str(SLICE)]) == 0
    said = [r.getMessage() for r in caplog.records]
    fallback = [m for m in said if "outside the learned gate's" in m]
    assert len(fallback) == 1 and "2 fps" in fallback[0]
    assert sum("wildtrack" in m and "done" in m for m in said) >= 1
    caplog.clear()
    with caplog.at_level("INFO"):  # a later command in the same process says its notes again
        assert main(["eval", str(SLICE / "clean")]) == 0
    assert sum("outside the learned gate's" in r.getMessage() for r in caplog.records) == 1
