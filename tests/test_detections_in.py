"""Detections instead of images: detection files and folders through the whole stereo pipeline,
on the real WildTrack C1-C2 slice (tests/data/wildtrack_c1c2_slice)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import DATA

from streams.detections import Boxes2D, DetectionFolder, DetectionPair, read_det_file
from streams.errors import StreamError
from tracker3d.cli import main
from tracker3d.detect.detections import Detections
from tracker3d.pipeline import PipelineConfig, StereoPipeline

SLICE = DATA / "wildtrack_c1c2_slice"
HITS = ["--gate", "hits", "--min-hits", "2", "--window", "3"]  # a gate that confirms at 2 fps


def _messages(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_det_file_reads_mot_rows_as_xyxy_boxes_per_frame():
    dets = read_det_file(SLICE / "clean" / "det0.txt")
    assert min(dets) == 1 and max(dets) == 40
    first = dets[1]
    # 1,-1,1510.00,139.00,51.00,160.00,1.0,...
    assert np.allclose(first.boxes[0], [1510, 139, 1561, 299])
    assert first.scores[0] == 1.0 and first.classes is None  # column 8 is -1: no class


def test_det_file_conf_minus_one_means_not_given_and_scores_one(tmp_path):
    """MOTChallenge writes conf -1 for 'not given' (a tracker's output used as detections): it was
    clipped to a score of 0, so every box was a low-score one; read_mot already read it as 1."""
    from tracker3d.track2d.mot import read_mot

    f = tmp_path / "det.txt"
    f.write_text("1,-1,10,20,30,40,-1,-1,-1,-1\n1,-1,100,20,30,40,0.4,-1,-1,-1\n")
    assert read_det_file(f)[1].scores.tolist() == [1.0, 0.4]
    mot = read_mot(f)
    assert mot.detections(1, mot.frames()).scores.tolist() == [1.0, 0.4]  # the same reading


def test_det_file_with_a_bad_field_names_file_line_and_field(tmp_path):
    p = tmp_path / "det0.txt"
    p.write_text("1,-1,10,10,5,5,1\n2,-1,10,abc,5,5,1\n")
    with pytest.raises(StreamError, match=r"det0.txt:2: field 'y': expected a number"):
        read_det_file(p)
    p.write_text("1,-1,10,10,0,5,1\n")
    with pytest.raises(StreamError, match=r"det0.txt:1: fields 'w','h'"):
        read_det_file(p)


def test_a_det_file_cut_off_mid_line_keeps_its_whole_lines_and_says_so(tmp_path, caplog):
    """A detector killed mid-write leaves a partial last line (no newline after it): it was refused
    like any bad line, the run refused with no word of the cut; now the lines before it are read
    and the cut line is named. The same line with its newline is still an error."""
    p = tmp_path / "det0.txt"
    p.write_text("1,-1,10,10,5,5,1\n2,-1,10,10,5,5,1\n3,-1,11")
    with caplog.at_level("WARNING"):
        dets = read_det_file(p)
    assert sorted(dets) == [1, 2]
    assert any("det0.txt:3: ignoring a partial last line" in r.getMessage() for r in caplog.records)
    p.write_text("1,-1,10,10,5,5,1\n3,-1,11\n")
    with pytest.raises(StreamError, match=r"det0.txt:2: expected at least 6"):
        read_det_file(p)
    p.write_text("1,-1,10,10,5,5,1\n3,-1,11,12,5,5,1")  # a whole last line with no newline: read
    assert sorted(read_det_file(p)) == [1, 3]
    caplog.clear()
    p.write_text("1,-1,10,10,5,5,1.0,-1,-1,-1\n3,-1,11,12,5,1")  # cut inside 'h': parses, as a 5x1 box
    with caplog.at_level("WARNING"):
        assert sorted(read_det_file(p)) == [1]
    assert "det0.txt:2: ignoring a partial last line" in caplog.text and "6 fields where the line before has 10" \
        in caplog.text


def test_detection_folder_gives_one_pair_per_frames_csv_row_with_its_times():
    src = DetectionFolder.open_folder(SLICE / "clean")
    pairs = list(src)
    assert len(pairs) == len(src) == 40
    assert [p.index for p in pairs[:3]] == [0, 1, 2]
    assert pairs[1].t0 == pytest.approx(0.5) and pairs[1].t1 == pytest.approx(0.5)
    assert src.fps == pytest.approx(2.0)
    assert src.calib.has_world
    assert len(pairs[0].boxes0) == len(read_det_file(SLICE / "clean" / "det0.txt")[1])


def test_toml_calibration_is_used_when_the_folder_has_no_yaml(tmp_path):
    d = tmp_path / "dets"
    shutil.copytree(SLICE / "clean", d)
    (d / "calib.yaml").unlink()
    src = DetectionFolder.open_folder(d)
    ref = DetectionFolder.open_folder(SLICE / "clean")
    assert np.allclose(src.calib.R, ref.calib.R, atol=1e-6)
    assert np.allclose(src.calib.T, ref.calib.T, atol=1e-5)


def test_step_detections_is_the_same_path_as_a_detection_pair():
    src = DetectionFolder.open_folder(SLICE / "clean")
    pairs = list(src)
    cfg = PipelineConfig(threads=False)
    from persistence import HitCountGate

    a = StereoPipeline(src.calib, cfg, gate=HitCountGate(2, 3.0))
    b = StereoPipeline(src.calib, cfg, gate=HitCountGate(2, 3.0))
    n = 0
    for p in pairs:
        fa = a.step(p)
        fb = b.step_detections(p.index, p.t0, p.t1, Detections.from_boxes(p.boxes0.boxes, p.boxes0.scores),
                               Detections.from_boxes(p.boxes1.boxes, p.boxes1.scores))
        assert [t["id"] for t in fa.tracks] == [t["id"] for t in fb.tracks]
        assert [t["xyz"] for t in fa.tracks] == [t["xyz"] for t in fb.tracks]
        n += len(fa.tracks)
    assert n > 0


def test_replay_on_a_detections_folder_writes_world_frame_tracks_on_the_square(tmp_path):
    out = tmp_path / "tracks.jsonl"
    assert main(["replay", str(SLICE / "clean"), "--out", str(out), *HITS]) == 0
    msgs = _messages(out)
    assert len(msgs) == 40 and all(m["frame_id"] == "world" for m in msgs)
    xyz = np.array([t["xyz"] for m in msgs for t in m["tracks"]])
    assert len(xyz) > 20
    # WildTrack's square: x -3..9 m, y -9..27 m; box centres triangulate at about 0.9 m height.
    assert np.all((xyz[:, 0] > -4) & (xyz[:, 0] < 10) & (xyz[:, 1] > -10) & (xyz[:, 1] < 28))
    assert 0.5 < np.median(xyz[:, 2]) < 1.3


def test_replay_on_loose_detection_files_with_fps_matches_the_folder(tmp_path):
    d = SLICE / "clean"
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert main(["replay", str(d), "--out", str(a), *HITS]) == 0
    assert main(["replay", "--det0", str(d / "det0.txt"), "--det1", str(d / "det1.txt"), "--calib",
                 str(d / "calib.yaml"), "--fps", "2", "--out", str(b), *HITS]) == 0
    ma, mb = _messages(a), _messages(b)
    assert [m["tracks"] for m in ma] == [m["tracks"] for m in mb]


def test_a_detections_folder_missing_a_file_is_one_line(tmp_path, capsys):
    d = tmp_path / "dets"
    shutil.copytree(SLICE / "clean", d)
    (d / "frames.csv").unlink()
    assert main(["replay", str(d)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "frames.csv: missing" in err
    for name in ("det1.txt", "det0.txt"):  # one det file gone: named (it said "no cam0 video")
        d = tmp_path / f"no_{name}"
        shutil.copytree(SLICE / "clean", d)
        (d / name).unlink()
        assert main(["replay", str(d)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"{name}: missing" in err


def test_loose_files_without_times_is_one_line(capsys):
    d = SLICE / "clean"
    assert main(["replay", "--det0", str(d / "det0.txt"), "--det1", str(d / "det1.txt"),
                 "--calib", str(d / "calib.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--frames" in err


def test_a_missing_camera_side_coasts_without_error():
    src = DetectionFolder.open_folder(SLICE / "clean")
    pipe = StereoPipeline(src.calib, PipelineConfig(threads=False))
    p = next(iter(src))
    f = pipe.step(DetectionPair(0, p.t0, float("nan"), p.boxes0, None))
    assert f.t == p.t0
    f = pipe.step(DetectionPair(1, float("nan"), 0.5, None, Boxes2D.empty()))
    assert f.t == 0.5


def test_a_bad_field_in_a_det_file_is_one_line_from_replay(tmp_path, capsys):
    d = tmp_path / "dets"
    shutil.copytree(SLICE / "clean", d)
    with open(d / "det1.txt", "a") as f:
        f.write("41,-1,10,20,x,40,1.0,-1,-1,-1\n")
    assert main(["replay", str(d)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "det1.txt:" in err and "field 'w'" in err


def test_eval_on_loose_files_equals_eval_on_the_folder(tmp_path):
    d = SLICE / "clean"
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["eval", str(d), "--json", str(a), *HITS]) == 0
    assert main(["eval", "--det0", str(d / "det0.txt"), "--det1", str(d / "det1.txt"), "--calib", str(d / "calib.toml"),
                 "--frames", str(d / "frames.csv"), "--gt-csv", str(d / "gt.csv"), "--json", str(b), *HITS]) == 0
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    assert rb["ground"]["MOTA"] == pytest.approx(ra["ground"]["MOTA"], abs=0.02)  # yaml vs toml rounding
    assert "2d_cam0" in ra and "2d_cam0" not in rb  # loose files: no per-view ground truth given


def test_live_with_a_malformed_det_source_endpoint_is_one_line(capsys):
    assert main(["live", "--det-source", "nonsense", "--calib", str(SLICE / "clean" / "calib.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nonsense" in err


def test_detection_frames_without_a_time_are_counted_and_logged(tmp_path, caplog):
    d = tmp_path / "dets"
    shutil.copytree(SLICE / "clean", d)
    rows = (d / "frames.csv").read_text().splitlines()
    (d / "frames.csv").write_text("\n".join(rows[:31]) + "\n")  # 30 of the 40 frames
    with caplog.at_level("WARNING"):
        src = DetectionFolder.open_folder(d)
    assert len(src) == 30 and src.unlisted == (10, 10)
    assert "10 frames of det0 have no row" in caplog.text
