"""Recording and replay: round trip, SIGKILL mid-write, truncation, malformed folders."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from streams import FramePair, RecordingReader, RecordingWriter, StreamError
from streams.recording import read_frames_csv
from tracker3d.cli import main
from tracker3d.sim import SimWorld, get_scene, read_gt, write_sim_recording

SMALL = get_scene("default").with_(seconds=1.0, width=160, height=120, n_objects=3)


def _calib():
    from calib.rigs import make_rig
    return make_rig(160, 120)


def test_round_trip_with_missing_views(tmp_path):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(6)]
    with RecordingWriter(tmp_path / "r", calib=_calib(), fps=10, codec="FFV1") as w:
        for i in range(6):
            w.write(FramePair(i, i * 0.1, i * 0.1 + 0.002 if i != 3 else float("nan"), imgs[i],
                              imgs[i][::-1].copy() if i != 3 else None))
    rec = RecordingReader(tmp_path / "r")
    pairs = list(rec)
    assert len(pairs) == 6 and rec.calib is not None
    assert pairs[3].img1 is None and np.isnan(pairs[3].t1)
    assert pairs[2].t1 == pytest.approx(0.202)
    np.testing.assert_array_equal(pairs[5].img0, imgs[5])  # FFV1 is lossless
    np.testing.assert_array_equal(pairs[4].img1, imgs[4][::-1])


def test_sim_recording_replays_with_ground_truth(tmp_path):
    out = write_sim_recording(SMALL, tmp_path / "sim", seed=4)
    rec = RecordingReader(out)
    assert len(rec) == 30 == len(list(rec))
    gt = read_gt(out / "gt.csv")
    assert set(gt["frame"]) <= set(range(30)) and (gt["kind"] == "object").sum() == 3 * 30


def test_same_seed_same_recording():
    a, b, c = SimWorld(SMALL, seed=7), SimWorld(SMALL, seed=7), SimWorld(SMALL, seed=8)
    for _ in range(10):
        (pa, ga), (pb, gb), (pc, _) = a.step(), b.step(), c.step()
        np.testing.assert_array_equal(pa.img0, pb.img0)
        np.testing.assert_array_equal(pa.img1, pb.img1)
        assert [r.csv() for r in ga] == [r.csv() for r in gb]
    assert not np.array_equal(pa.img0, pc.img0)


def test_sigkill_mid_write_stays_readable(tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "tracker3d.cli", "sim", "--seconds", "60", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            fc = out / "frames.csv"
            if fc.exists() and fc.read_text().count("\n") > 40:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    rows = read_frames_csv(out / "frames.csv")
    assert 40 <= len(rows) < 1800
    rec = RecordingReader(out)
    n = sum(1 for _ in rec)
    assert n == len(rows) and rec.truncated == 0, "every pair listed in frames.csv is readable"
    assert [r[0] for r in rows] == list(range(len(rows)))
    gt = read_gt(out / "gt.csv")  # a cut-off last line is ignored
    assert gt["frame"].max() >= len(rows) - 1


def test_truncated_video_ends_cleanly(tmp_path, capsys):
    out = write_sim_recording(SMALL, tmp_path / "t", seed=1)
    fc = out / "frames.csv"
    lines = fc.read_text().splitlines()
    last_t = float(lines[-1].split(",")[1])
    extra = [f"{30 + i},{last_t + (i + 1) / 30:.6f},{last_t + (i + 1) / 30:.6f}" for i in range(5)]
    fc.write_text("\n".join(lines + extra) + "\n")
    rec = RecordingReader(out)
    assert sum(1 for _ in rec) == 30 and rec.truncated == 5
    assert main(["replay", str(out)]) == 0
    assert "5 listed pairs missing" in capsys.readouterr().out


@pytest.mark.parametrize("content, match", [
    ("index,t0\n0,1\n", "header 'index,t0,t1'"),
    ("index,t0,t1\n0,0.0,0.0\nx,0.1,0.1\n", r"frames.csv:3: field 'index'"),
    ("index,t0,t1\n0,0.0,0.0\n1,abc,0.1\n", r"frames.csv:3: field 't0'"),
    ("index,t0,t1\n0,0.0,0.0\n0,0.1,0.1\n", "does not increase"),
    ("index,t0,t1\n0,,\n", "both t0 and t1 are empty"),
    ("index,t0,t1\n0,nan,0.0\n", "finite time"),
    ("index,t0,t1\n", "no pairs listed"),  # replay said 'pairs in 0 ... 0 tracks' and exited 0
])
def test_malformed_frames_csv(tmp_path, content, match, capsys):
    out = write_sim_recording(SMALL.with_(seconds=0.2), tmp_path / "m", seed=1)
    (out / "frames.csv").write_text(content)
    with pytest.raises(StreamError, match=match):
        RecordingReader(out)
    capsys.readouterr()
    assert main(["replay", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "frames.csv" in err[0]


def test_missing_parts_are_clear(tmp_path, capsys):
    out = write_sim_recording(SMALL.with_(seconds=0.2), tmp_path / "m", seed=1)
    (out / "cam1.mjpg").unlink()
    with pytest.raises(StreamError, match="no cam1"):
        RecordingReader(out)
    assert main(["replay", str(tmp_path / "nowhere")]) == 2
    assert "recording folder not found" in capsys.readouterr().err
    assert main(["replay", __file__]) == 2
    assert "is a file, not a recording folder" in capsys.readouterr().err
    (out / "meta.json").write_text("[1, 2")
    with pytest.raises(StreamError, match="meta.json: not a JSON object"):
        RecordingReader(out)


def test_partial_last_line_ignored(tmp_path):
    p = tmp_path / "frames.csv"
    p.write_text("index,t0,t1\n0,0.0,0.0\n1,0.03")
    assert read_frames_csv(p) == [(0, 0.0, 0.0)]


@pytest.mark.parametrize("times, match", [
    ("0,1.0,1.0\n1,1.0,1.0\n2,1.1,1.1\n", r"frames.csv:3: field 't0': time 1.000000 repeats 1.000000 \(line 2\)"),
    ("0,1.0,1.0\n1,1.1,1.1\n2,1.2,1.05\n", r"frames.csv:4: field 't1': time 1.050000 goes back from 1.100000"),
    ("0,0,0\n1,0,0\n2,0,0\n", r"every t0 and t1 is 0 \(lines 2-4\)"),
])
def test_non_increasing_times_are_refused_at_load_naming_the_line(tmp_path, times, match):
    out = write_sim_recording(SMALL.with_(seconds=0.2), tmp_path / "m", seed=1)
    (out / "frames.csv").write_text("index,t0,t1\n" + times)
    with pytest.raises(StreamError, match=match):
        RecordingReader(out)


def test_a_time_jump_is_named_at_load_and_not_slept_in_realtime(tmp_path, caplog):
    rows = [(i, i / 30 + (3600.0 if i >= 4 else 0.0)) for i in range(6)]
    out = write_sim_recording(SMALL.with_(seconds=0.2), tmp_path / "m", seed=1)
    (out / "frames.csv").write_text("index,t0,t1\n" + "".join(f"{i},{t:.6f},{t:.6f}\n" for i, t in rows))
    with caplog.at_level("WARNING"):
        rec = RecordingReader(out, realtime=True)
    assert any("frames.csv:6: time jumps by 3600.0 s" in r.getMessage() for r in caplog.records)
    start = time.monotonic()
    n = sum(1 for _ in rec)
    rec.close()
    assert n == 6 and time.monotonic() - start < 3.0
    assert rec._pacer.jumps == 1


@pytest.mark.parametrize("fps", ['"abc"', "null", "[30]", "0", "-5", "NaN", "true"])
def test_bad_fps_in_meta_json_is_one_line_naming_the_field(tmp_path, fps, capsys):
    out = write_sim_recording(SMALL.with_(seconds=0.2), tmp_path / "m", seed=1)
    meta = (out / "meta.json").read_text()
    m = json.loads(meta)
    m["fps"] = "PLACEHOLDER"
    (out / "meta.json").write_text(json.dumps(m).replace('"PLACEHOLDER"', fps))
    with pytest.raises(StreamError, match=r"meta.json: field 'fps': expected a number of frames per second > 0"):
        RecordingReader(out)
    assert main(["replay", str(out), "--gate", "hits"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "meta.json" in err[0] and "fps" in err[0]


def _jpeg_offsets(path):
    """Start offsets of the JPEG images of a .mjpg stream, by the markers (streams.jpegstream)."""
    from streams.jpegstream import JpegStreamIndex

    ix, out = JpegStreamIndex(path), []
    while (img := ix.next()) is not None:
        assert img.kind == "whole"
        out.append(img.start)
    ix.close()
    return out


def test_damage_inside_a_video_stops_at_that_pair_instead_of_pairing_frames_wrongly(tmp_path, capsys):
    """Random bytes over image 12 of cam0: OpenCV's decoder skipped it silently and every later
    pair joined cam0's image k+n with cam1's image k (3D IDF1 0.95 -> 0.03, exit 0). Now the
    pairs before it come out whole and the damage is one line naming the image and the byte."""
    out = write_sim_recording(SMALL, tmp_path / "d", seed=2)
    offs = _jpeg_offsets(out / "cam0.mjpg")
    assert len(offs) == 30
    with open(out / "cam0.mjpg", "r+b") as f:
        f.seek(offs[12] + 700)
        f.write(np.random.default_rng(0).integers(0, 256, offs[14] - offs[12], dtype=np.uint8).tobytes())
    rec = RecordingReader(out)
    pairs = []
    with pytest.raises(StreamError, match=r"cam0.mjpg: image 12 \(byte \d+\) is damaged.*first 12 rows of frames"):
        while (p := rec.read()) is not None:
            pairs.append(p)
    rec.close()
    assert len(pairs) == 12
    assert main(["replay", str(out)]) == 2
    assert "is damaged" in capsys.readouterr().err
    # Keeping the rows before the damage replays them (the damage lies past the listed pairs).
    lines = (out / "frames.csv").read_text().splitlines()
    (out / "frames.csv").write_text("\n".join(lines[:13]) + "\n")
    clean = RecordingReader(out)
    assert sum(1 for _ in clean) == 12 and clean.truncated == 0


def test_a_video_cut_inside_an_image_ends_at_the_last_whole_one(tmp_path):
    """The decoder made a mix of the cut image and the one before it and tracked it; now the
    replay ends at the last whole image and counts the rest as missing."""
    out = write_sim_recording(SMALL, tmp_path / "c", seed=3)
    offs = _jpeg_offsets(out / "cam1.mjpg")
    ref = [p.img1.copy() for p in RecordingReader(out)]
    os.truncate(out / "cam1.mjpg", offs[20] + (offs[21] - offs[20]) // 2)
    rec = RecordingReader(out)
    got = [p.img1 for p in rec]
    assert len(got) == 20 and rec.truncated == 10
    assert all(np.array_equal(a, b) for a, b in zip(got, ref))
    # The run's summary says it too, for scripts that read it rather than the console.
    assert main(["replay", str(out), "--summary-json", str(tmp_path / "s.json")]) == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert (s["pairs_listed"], s["pairs_missing"], s["pairs_in"]) == (30, 10, 20)
    assert s["complete"] is False and s["stopped_by"] is None


def test_replay_summary_json_says_whether_the_run_was_whole_or_stopped(tmp_path, monkeypatch):
    """A script reading --summary-json tells a whole run from one stopped by a signal (it saw
    processed 5 of 30 pairs listed, none missing, and nothing else)."""
    import signal

    from tracker3d.commands import replay
    from tracker3d.commands.signals import STOP
    from tracker3d.sim import write_sim_recording

    out = write_sim_recording(SMALL, tmp_path / "r", seed=3)
    assert main(["replay", str(out), "--gate", "hits", "--summary-json", str(tmp_path / "whole.json")]) == 0
    s = json.loads((tmp_path / "whole.json").read_text())
    assert (s["complete"], s["stopped_by"], s["processed"]) == (True, None, 30)
    real = replay.run_pipeline

    def stopped_at_the_fifth(*args, on_frame=None, **kw):
        def frame(f3):
            on_frame(f3)
            if f3.index == 4:
                STOP._handle(signal.SIGINT, None)
        return real(*args, on_frame=frame, **kw)

    monkeypatch.setattr(replay, "run_pipeline", stopped_at_the_fifth)
    try:
        assert main(["replay", str(out), "--gate", "hits", "--summary-json", str(tmp_path / "cut.json")]) == 130
    finally:
        STOP.signum = None  # main() resets it at its next call; nothing else may see this one
    s = json.loads((tmp_path / "cut.json").read_text())
    assert (s["complete"], s["stopped_by"], s["pairs_missing"]) == (False, "SIGINT", 0) and s["processed"] < 30


@pytest.mark.parametrize("cut", ["none", "header", "entropy", "after_eoi_garbage"])
def test_jpeg_stream_index_tells_whole_cut_and_damaged_images(tmp_path, cut):
    import cv2

    from streams.jpegstream import JpegStreamIndex

    rng = np.random.default_rng(1)
    imgs = [cv2.imencode(".jpg", rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))[1].tobytes() for _ in range(3)]
    data = b"".join(imgs)
    if cut == "header":
        data = data[:len(imgs[0]) + len(imgs[1]) + 100]
    elif cut == "entropy":
        data = data[:-50]
    elif cut == "after_eoi_garbage":
        data += b"\x00\x01\x02garbage"
    p = tmp_path / "s.mjpg"
    p.write_bytes(data)
    ix = JpegStreamIndex(p)
    kinds = []
    while (img := ix.next()) is not None:
        kinds.append(img.kind)
    expected = {"none": ["whole"] * 3, "header": ["whole", "whole", "cut"], "entropy": ["whole", "whole", "cut"],
                "after_eoi_garbage": ["whole"] * 3 + ["damaged"]}[cut]
    assert kinds == expected
    ix.close()
