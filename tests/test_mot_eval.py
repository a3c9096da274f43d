"""MOTChallenge files, trackeval-backed metrics (checked by hand), and the track2d/eval commands."""
import numpy as np
import pytest

from tracker3d.cli import main
from tracker3d.errors import Tracker3DError
from tracker3d.evaluation.eval2d import FrameObjects, evaluate_2d
from tracker3d.sim import get_scene, write_sim_recording
from tracker3d.track2d.mot import read_mot, write_mot


def P(ids, pts):
    return FrameObjects(np.array(ids), points=np.array(pts, float).reshape(-1, 2))


def test_metrics_equal_hand_computation():
    gt = {f: P([1, 2], [[10 * f, 0], [10 * f, 100]]) for f in range(4)}
    # Object 1 changes track id half way (7 -> 9); object 2 is tracked by 8 throughout;
    # one false positive in frame 3; object 2 missed in frame 0.
    tr = {0: P([7], [[0, 0]]), 1: P([7, 8], [[10, 0], [10, 100]]), 2: P([9, 8], [[20, 0], [20, 100]]),
          3: P([9, 8, 5], [[30, 0], [30, 100], [500, 500]])}
    m = evaluate_2d(gt, tr, kind="centroid", dist_px=10.0)
    # CLEAR: TP 7, FN 1, FP 1, IDSW 1 -> MOTA = 1 - (1 + 1 + 1) / 8
    assert (m["FN"], m["FP"], m["IDSW"]) == (1, 1, 1)
    assert m["MOTA"] == pytest.approx(1 - 3 / 8)
    # Identity: best 1:1 map 1->7 (or 9, 2 frames each), 2->8 (3 frames): IDTP 5, IDFN 8-5, IDFP 8-5
    assert m["IDF1"] == pytest.approx(2 * 5 / (2 * 5 + 3 + 3))
    # HOTA (similarity exactly 1 for every TP, so all alpha agree): DetA = 7 / (7 + 1 + 1);
    # AssA = mean over TPs of TPA / (TPA + FNA + FPA): pairs (1,7) x2: 2/(2+2+0); (1,9) x2: 2/4;
    # (2,8) x3: 3/(3+1+0).
    det_a = 7 / 9
    ass_a = (2 * 0.5 + 2 * 0.5 + 3 * 0.75) / 7
    assert m["DetA"] == pytest.approx(det_a)
    assert m["AssA"] == pytest.approx(ass_a)
    assert m["HOTA"] == pytest.approx(np.sqrt(det_a * ass_a))


def test_iou_similarity():
    box = lambda ids, bs: FrameObjects(np.array(ids), boxes=np.array(bs, float))
    gt = {1: box([1], [[0, 0, 10, 10]])}
    assert evaluate_2d(gt, {1: box([3], [[0, 0, 10, 10]])}, kind="iou")["MOTA"] == 1.0
    assert evaluate_2d(gt, {1: box([3], [[6, 0, 16, 10]])}, kind="iou")["FP"] == 1  # IoU 0.25 < 0.5


def test_mot_round_trip_and_errors(tmp_path):
    rows = [(1, 3, 10.0, 20.0, 5.0, 6.0, 0.9), (2, 3, 11.5, 20.25, 5.0, 6.0, 0.8), (2, 4, 100.0, 50.0, 8.0, 8.0, 1.0)]
    p = tmp_path / "t.txt"
    write_mot(p, rows)
    m = read_mot(p)
    assert m.frame.tolist() == [1, 2, 2] and m.id.tolist() == [3, 3, 4]
    np.testing.assert_allclose(m.boxes[1], [11.5, 20.25, 5.0, 6.0])
    np.testing.assert_allclose(m.conf, [0.9, 0.8, 1.0])
    assert sorted(m.frames()) == [1, 2]
    p.write_text("1,2,3\n")
    with pytest.raises(Tracker3DError, match=r"t.txt:1: expected at least 6"):
        read_mot(p)
    p.write_text("1,1,1,1,1,1,1\n2,1,x,1,1,1,1\n")
    with pytest.raises(Tracker3DError, match=r"t.txt:2: field 'bb_left'"):
        read_mot(p)
    p.write_text("0,1,1,1,1,1,1\n")
    with pytest.raises(Tracker3DError, match="field 'frame'"):
        read_mot(p)


def test_cli_track2d_on_detections_and_eval(tmp_path, capsys):
    # Two objects moving in straight lines as MOT detections, plus a one-frame false alarm.
    det = tmp_path / "det.txt"
    gt = tmp_path / "gt.txt"
    with open(det, "w") as fd, open(gt, "w") as fg:
        for f in range(1, 41):
            for oid, (x, y) in ((1, (10 + 4 * f, 50)), (2, (300 - 3 * f, 120))):
                fd.write(f"{f},-1,{x},{y},20,20,0.9,-1,-1,-1\n")
                fg.write(f"{f},{oid},{x},{y},20,20,1,1,1\n")
            if f == 17:
                fd.write(f"{f},-1,200,200,20,20,0.95,-1,-1,-1\n")
    out = tmp_path / "tracks.txt"
    assert main(["track2d", "--det", str(det), "--out", str(out)]) == 0
    tr = read_mot(out)
    assert set(tr.id) == {1, 2}, "the one-frame false alarm never became a track"
    assert main(["eval", "--gt", str(gt), "--tracks", str(out), "--json", str(tmp_path / "m.json")]) == 0
    text = capsys.readouterr().out
    assert "HOTA" in text
    import json
    m = json.loads((tmp_path / "m.json").read_text())["2d"]
    assert m["IDSW"] == 0 and m["FP"] == 0 and m["FN"] == 0  # the 2 frames before confirmation back-filled
    online = tmp_path / "online.txt"
    assert main(["track2d", "--det", str(det), "--out", str(online), "--no-backfill"]) == 0
    assert main(["eval", "--gt", str(gt), "--tracks", str(online), "--json", str(tmp_path / "o.json")]) == 0
    assert json.loads((tmp_path / "o.json").read_text())["2d"]["FN"] == 4  # 2 frames x 2 objects before confirmation
    assert m["MOTA"] == pytest.approx(1.0)


def test_cli_track2d_video_and_eval_recording(tmp_path, capsys):
    rec = write_sim_recording(get_scene("sparse").with_(seconds=5.0, flash_rate=0.0, clutter_count=0,
                                                        noise_track_rate=0.0), tmp_path / "rec", seed=2)
    out = tmp_path / "t.txt"
    assert main(["track2d", "--video", str(rec / "cam0.mjpg"), "--out", str(out),
                 "--det-out", str(tmp_path / "d.txt")]) == 0
    assert len(set(read_mot(out).id)) >= 1 and read_mot(tmp_path / "d.txt").frame.max() == 150
    assert main(["eval", str(rec), "--json", str(tmp_path / "e.json")]) == 0
    import json
    m = json.loads((tmp_path / "e.json").read_text())
    for cam in ("2d_cam0", "2d_cam1"):
        assert m[cam]["HOTA"] > 0.7 and m[cam]["IDSW"] == 0
    assert m["3d"]["IDF1"] > 0.8
    assert main(["eval"]) == 2
    assert "give a recording DIR" in capsys.readouterr().err


def test_mot_and_detection_files_share_one_parser_each_with_its_own_names(tmp_path):
    from streams.detections import read_det_file
    from streams.errors import StreamError

    p = tmp_path / "det.txt"
    p.write_text("# a comment\n2 -1 10 20 30 40 0.5\n1,-1,1,2,3,4,-1,7\n\n2\t-1\t5\t5\t5\t5\n")
    m, d = read_mot(p), read_det_file(p)
    assert m.frame.tolist() == [2, 1, 2] and m.cls.tolist() == [-1, 7, -1]
    assert list(d) == [2, 1]  # frames in the order they first appear
    np.testing.assert_allclose(d[2].boxes, [[10, 20, 40, 60], [5, 5, 10, 10]])
    assert d[2].scores.tolist() == [0.5, 1.0] and list(d[1].classes) == [7]
    np.testing.assert_allclose(m.detections(2, m.frames()).boxes, d[2].boxes)
    p.write_text("1,-1,nan,2,3,4\n")  # not finite: each reader names the field its own way
    with pytest.raises(Tracker3DError, match=r"det.txt:1: field 'bb_left': expected a finite number"):
        read_mot(p)
    with pytest.raises(StreamError, match=r"det.txt:1: field 'x': expected a finite number"):
        read_det_file(p)
    p.unlink()
    with pytest.raises(Tracker3DError, match="MOT file not found"):
        read_mot(p)
    with pytest.raises(StreamError, match="detection file not found"):
        read_det_file(p)
