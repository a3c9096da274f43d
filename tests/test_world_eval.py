"""World-frame evaluation (tracker3d.evaluation.world): ground-plane and 3D scores against a world
gt.csv, checked on a case small enough to count by hand, and on the WildTrack slice end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import DATA

from tracker3d.cli import main
from tracker3d.errors import Tracker3DError
from tracker3d.evaluation.eval2d import FrameObjects
from tracker3d.evaluation.world import (
    evaluate_world,
    gt_kind,
    read_world_gt,
    world_gt_frames,
)

SLICE = DATA / "wildtrack_c1c2_slice"


def _objs(ids, pts):
    return FrameObjects(np.array(ids), points=np.array(pts, float).reshape(-1, 3))


def _tiny():
    """Two persons A (id 1, at x=0) and B (id 2, at x=5) on the ground for three frames; the
    tracks sit 0.9 m up, 0.1-0.2 m off, except track 11 in frame 1, 0.7 m off B."""
    gt = {f: _objs([1, 2], [[0, 0, 0], [5, 0, 0]]) for f in range(3)}
    tr = {0: _objs([10, 11], [[0.1, 0, 0.9], [5, 0.2, 0.9]]),
          1: _objs([10, 11], [[0, 0.1, 0.9], [5.7, 0, 0.9]]),
          2: _objs([10, 11], [[0.1, 0, 0.9], [5.2, 0, 0.9]])}
    return gt, tr


def test_ground_plane_scores_count_by_hand():
    gt, tr = _tiny()
    g = evaluate_world(tr, gt, [0, 1, 2], radius=0.5)["ground"]
    # 6 gt points: 5 matched, 1 missed (B in frame 1), 1 false (track 11 in frame 1), no switches.
    assert (g["FP"], g["FN"], g["IDSW"]) == (1, 1, 0)
    assert g["MOTA"] == pytest.approx(1 - 2 / 6)
    assert g["MODA"] == pytest.approx(1 - 2 / 6)
    assert g["precision"] == pytest.approx(5 / 6) and g["recall"] == pytest.approx(5 / 6)
    # Matched distances 0.1, 0.2, 0.1, 0.1, 0.2 m: mean 0.14 m; MODP = 1 - 0.14 / 0.5.
    assert g["mean_dist_m"] == pytest.approx(0.14)
    assert g["MODP"] == pytest.approx(0.72)


def test_3d_score_raises_the_ground_truth_to_the_tracked_height():
    gt, tr = _tiny()
    res = evaluate_world(tr, gt, [0, 1, 2], radius=0.5)
    assert res["3d"]["gt_height_m"] == pytest.approx(0.9)  # measured on the ground-plane matches
    assert res["3d"]["MOTA"] == pytest.approx(res["ground"]["MOTA"])
    flat = evaluate_world(tr, gt, [0, 1, 2], radius=0.5, gt_height=0.0)["3d"]
    assert flat["MOTA"] == pytest.approx(1 - 12 / 6)  # 0.9 m up: nothing within 0.5 m
    wide = evaluate_world(tr, gt, [0, 1, 2], radius=1.0, gt_height=0.0)["3d"]
    assert wide["FN"] == 1  # the 0.7 m track is 1.14 m off in 3D


def test_gt_kind_tells_world_from_sim_by_header(tmp_path):
    assert gt_kind(SLICE / "clean" / "gt.csv") == "world"
    sim = tmp_path / "sim.csv"
    sim.write_text("frame,t,id,kind,x,y,z,u0,v0,vis0,u1,v1,vis1\n")
    assert gt_kind(sim) == "sim"
    bad = tmp_path / "bad.csv"
    bad.write_text("frame,id,x,y\n")
    with pytest.raises(Tracker3DError, match="unknown ground truth header"):
        gt_kind(bad)
    bad.write_text("frame,t,id,x,y,z,vis0,vis1\n0,0.0,3,1.0,oops,0,1,1\n")
    with pytest.raises(Tracker3DError, match=r"bad.csv:2: field 'y'"):
        read_world_gt(bad)


def test_world_gt_visibility_selects_persons_by_view():
    gt = read_world_gt(SLICE / "clean" / "gt.csv")
    either, both = world_gt_frames(gt, "either"), world_gt_frames(gt, "both")
    n_either = sum(len(o.ids) for o in either.values())
    assert n_either == len(gt["id"])  # every row is seen by at least one view
    assert sum(len(o.ids) for o in both.values()) == int(((gt["vis0"] == 1) & (gt["vis1"] == 1)).sum())


def test_eval_on_the_wildtrack_slice_gives_sane_world_and_view_scores(tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["eval", str(SLICE / "clean"), "--gate", "hits", "--min-hits", "2", "--window", "3",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ground plane (x, y): MOTA" in text and "2D cam0" in text
    res = json.loads(out.read_text())
    g, v0 = res["ground"], res["2d_cam0"]
    assert res["gt"] == "world" and res["frame_id"] == "world"
    assert g["gt_dets"] == len(read_world_gt(SLICE / "clean" / "gt.csv")["id"])
    for m in (g, res["3d"], v0, res["2d_cam1"]):
        assert np.isfinite(m["MOTA"]) and -1 <= m["MOTA"] <= 1 and 0 <= m["IDF1"] <= 1
    # The tracks that exist are where the persons are (clean boxes: centimetres off).
    assert g["precision"] > 0.5 and g["mean_dist_m"] < 0.25
    assert 0.6 < res["3d"]["gt_height_m"] < 1.2
    # Exact annotated boxes in 2D: what is reported is nearly all correct.
    assert v0["precision"] > 0.9 and v0["recall"] > 0.3


def test_eval_with_a_bad_gt_csv_is_one_line(tmp_path, capsys):
    import shutil

    d = tmp_path / "dets"
    shutil.copytree(SLICE / "clean", d)
    (d / "gt.csv").write_text("frame,who,x\n1,2,3\n")
    assert main(["eval", str(d)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "gt.csv: unknown ground truth header" in err
