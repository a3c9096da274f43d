"""Nothing lost, nothing silent: outputs never replace inputs, bad output paths fail before the first
frame, SIGTERM/SIGINT stop in order with readable outputs and a telling exit status, a full disk
stops a recording loudly with an exact count, and our readers read a cut file to its last record."""
import errno
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import stop_with

from streams import RecordingReader, RecordingWriter
from streams.errors import OutputError
from streams.recording import JpegStreamSink
from tracker3d.cli import main
from tracker3d.outputs.files import (
    McapWriter,
    open_writer,
    read_csv,
    read_jsonl,
    read_mcap,
)
from tracker3d.sim import get_scene, write_sim_recording

SCENE = get_scene("default").with_(seconds=3.0)


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    """A 3 s sim recording (Motion-JPEG AVI, so its videos have an --overlay suffix)."""
    return write_sim_recording(SCENE, tmp_path_factory.mktemp("safety") / "rec", seed=5, codec="MJPG")


def _snapshot(d: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def _cli(*args: str, new_session: bool = False) -> subprocess.Popen:
    """The CLI as a child process (new_session: leading a process group of its own, like a shell job)."""
    return subprocess.Popen([sys.executable, "-m", "tracker3d.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1],
                            start_new_session=new_session)


# --- outputs never replace inputs, and are checked before the first frame --------------------------------

@pytest.mark.parametrize("option, target", [
    ("--out", "frames.csv"), ("--out", "gt.csv"), ("--out", "meta.json"), ("--overlay", "cam0.avi"),
    ("--out", "link-to-frames.csv"), ("--out", "hardlink-to-gt.csv")])
def test_replay_output_onto_an_input_is_refused_and_the_recording_is_untouched(rec, tmp_path, capsys, option,
                                                                                target):
    links = tmp_path / "links"
    links.mkdir(exist_ok=True)
    path = rec / target
    if target.startswith("link-"):
        path = links / target
        path.symlink_to(rec / "frames.csv")
    elif target.startswith("hardlink-"):
        path = links / target
        os.link(rec / "gt.csv", path)
    before = _snapshot(rec)
    assert main(["replay", str(rec), option, str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "an output never replaces an input" in err
    assert _snapshot(rec) == before
    assert len(RecordingReader(rec)) == SCENE.n_frames


def test_calib_file_is_protected_from_outputs_of_every_command(rec, tmp_path, capsys):
    calib = tmp_path / "rig.json"
    calib.write_bytes((rec / "calib.yaml").read_bytes())
    before = calib.read_bytes()
    assert main(["replay", str(rec), "--calib", str(calib), "--out", str(calib)]) == 2
    assert main(["eval", str(rec), "--json", str(rec / "meta.json")]) == 2
    assert main(["live", "--cam0", str(rec / "cam0.avi"), "--cam1", str(rec / "cam1.avi"), "--calib", str(calib),
                 "--out", str(calib)]) == 2
    assert main(["record", "--cam0", str(rec / "cam0.avi"), "--cam1", str(rec / "cam1.avi"), "--out", str(rec)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 4 and calib.read_bytes() == before


@pytest.mark.parametrize("extra, match", [
    (["--smooth", "--out", "{tmp}"], "is a folder"),
    (["--smooth", "--out", "{tmp}/adir.jsonl"], "is a folder"),
    (["--out", "{tmp}/t.txt"], "expected a .jsonl"),
    (["--plot", "{tmp}/plot.txt"], "expected a .png, .pdf, .svg file"),
    (["--plot", "{tmp}/afile/plot.png"], "is not a folder"),
    (["--overlay", "{tmp}/o.mkv"], "expected a .mp4, .avi file"),
    (["--out", "{tmp}/t.mcap", "--plot", "{tmp}/t.mcap"], "expected a .png"),
])
def test_bad_output_paths_fail_before_the_first_frame(rec, tmp_path, capsys, extra, match):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir.jsonl").mkdir()
    t = time.perf_counter()
    assert main(["replay", str(rec), *[a.format(tmp=tmp_path) for a in extra]]) == 2
    out, err = capsys.readouterr()
    assert match in err and "pairs in" not in out, "refused before the run, not after it"
    assert time.perf_counter() - t < 5.0


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_output_folder_fails_before_the_first_frame(rec, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["replay", str(rec), "--smooth", "--out", str(ro / "t.jsonl")]) == 2
        assert main(["replay", str(rec), "--plot", str(ro / "p.png")]) == 2
    finally:
        ro.chmod(0o755)
    out, err = capsys.readouterr()
    assert err.count("cannot write in the folder") == 2 and "pairs in" not in out


def test_smoothed_output_is_created_before_the_run(rec, tmp_path, capsys, monkeypatch):
    import tracker3d.commands.replay as replay

    created = []
    real = replay.run_pipeline

    def spy(*a, **kw):
        created.append((tmp_path / "s.jsonl").exists())
        return real(*a, **kw)

    monkeypatch.setattr(replay, "run_pipeline", spy)
    assert main(["replay", str(rec), "--gate", "hits", "--smooth", "--out", str(tmp_path / "s.jsonl")]) == 0
    assert created == [True]
    assert len(read_jsonl(tmp_path / "s.jsonl")) == SCENE.n_frames


# --- signals ---------------------------------------------------------------------------------------------

def _wait_for(pred, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig, rc, suffix", [(signal.SIGTERM, 143, ".mcap"), (signal.SIGINT, 130, ".jsonl")])
def test_signal_stops_replay_in_order_with_a_complete_output_and_telling_status(rec, tmp_path, sig, rc, suffix):
    out = tmp_path / f"t{suffix}"
    proc = _cli("replay", str(rec), "--realtime", "--gate", "hits", "--out", str(out))
    try:  # the first messages reach the file (MCAP: the first chunk) -> the run is under way
        assert _wait_for(lambda: out.exists() and out.stat().st_size > 2000), proc.communicate()
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == rc, stderr
    assert "pairs in" in stdout and f"stopped by {signal.Signals(sig).name}" in stderr
    processed = int(stdout.split("processed ")[1].split()[0])
    assert 0 < processed < SCENE.n_frames
    msgs = read_mcap(out) if suffix == ".mcap" else read_jsonl(out)
    assert len(msgs) == processed and msgs.cut == 0
    if suffix == ".mcap":  # finalized: the summary and index are there
        from mcap.reader import make_reader

        with open(out, "rb") as f:
            assert make_reader(f).get_summary().statistics.message_count == processed


def test_signal_during_a_paced_gap_stops_within_the_grace_period(tmp_path):
    rec = write_sim_recording(SCENE.with_(seconds=2.0), tmp_path / "gap", seed=1)
    fc = rec / "frames.csv"
    lines = fc.read_text().splitlines()
    shifted = [f"{i},{float(a) + 10:.6f},{float(b) + 10:.6f}" for i, a, b in (r.split(",") for r in lines[31:])]
    fc.write_text("\n".join(lines[:31] + shifted) + "\n")  # 10 s without frames after pair 29
    out = tmp_path / "t.jsonl"
    proc = _cli("replay", str(rec), "--realtime", "--gate", "hits", "--out", str(out))
    if not _wait_for(lambda: out.exists() and out.read_text().count("\n") >= 30):
        proc.kill()
        pytest.fail(f"no 30 messages written: {proc.communicate()}")
    stdout, stderr, waited = stop_with(proc, signal.SIGTERM)
    assert proc.returncode == 143 and "pairs in" in stdout, stderr
    # Never the rest of the 10 s gap: the realtime pacer sleeps at most 2 s over a time jump, and a
    # stop the loop does not reach within 3 s interrupts it ("did not stop within 3 s").
    assert waited < 7.0, "not the rest of the 10 s gap"
    msgs = read_jsonl(out)  # whole to the pair in hand when the stop was honoured, never the full run
    assert 30 <= len(msgs) < 60 and [m["seq"] for m in msgs] == list(range(len(msgs)))


def test_sigkilled_mcap_loses_at_most_one_chunk(tmp_path):
    out = tmp_path / "k.mcap"
    code = ("import sys, time\nfrom tracker3d.outputs.files import McapWriter\n"
            f"w = McapWriter({str(out)!r})\n"
            "for k in range(100000):\n"
            "    w.write(k, k / 30, [])\n"
            "    print(k, flush=True)\n"
            "    time.sleep(0.002)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    written = -1
    for line in proc.stdout:
        written = int(line)
        if written >= 200:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    msgs = read_mcap(out)
    assert written + 1 - 10 <= len(msgs) <= written + 2  # at most one chunk (10 messages) lost
    assert [m["seq"] for m in msgs] == list(range(len(msgs)))


def test_view_without_a_display_says_so_at_once_and_leaves_no_temp_file(rec, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for argv in (["replay", str(rec), "--view"], ["demo", "--fast", "--seconds", "1", "--view"]):
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("--view needs a display") == 2
    assert list(tmp_path.iterdir()) == []


def test_viewer_deletes_its_temporary_rig_file(rec, tmp_path):
    from calib import save_calibration

    tmp = tmp_path / "rig.yaml"
    save_calibration(RecordingReader(rec).calib, tmp)
    # no publisher: the view fails after reading the rig (--snapshot times out), the file is gone anyway
    main(["view", "--calib", str(tmp), "--calib-temp", "--connect", f"ipc://{tmp_path}/none", "--snapshot",
          str(tmp_path / "v.png"), "--timeout", "0.1"])
    assert not tmp.exists()


# --- disk full ---------------------------------------------------------------------------------------------

def _fail_after(real, n):
    """`real`, raising ENOSPC from its (n+1)-th call on: a full disk, for monkeypatching a write."""
    calls = [0]

    def call(*a, **kw):
        calls[0] += 1
        if calls[0] > n:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, **kw)

    return call


def _pairs(rec, n):
    r = RecordingReader(rec)
    return [r.read() for _ in range(n)]


def test_disk_full_mid_write_leaves_exactly_the_reported_pairs_readable(rec, tmp_path, monkeypatch):
    pairs = _pairs(rec, 20)
    # the Motion-JPEG stream: its flush (a real write to the file) fails at camera 1 of pair 13
    monkeypatch.setattr(JpegStreamSink, "flush", _fail_after(JpegStreamSink.flush, 25))
    w = RecordingWriter(tmp_path / "r", fps=30)
    with pytest.raises(OutputError, match="No space left on device; 12 of 12 pairs readable"):
        for p in pairs:
            w.write(p)
    w.close()
    assert w.readable == 12
    r = RecordingReader(tmp_path / "r")
    assert sum(1 for _ in r) == 12 and r.truncated == 0


@pytest.mark.parametrize("codec", ["MJPEG", "MJPG", "FFV1"])
def test_recording_stops_before_the_disk_is_full_with_every_pair_readable(rec, tmp_path, monkeypatch, codec):
    """The AVI/MKV muxers never report a failed write: the writer stops while there is room left."""
    pairs = _pairs(rec, 20)
    free = iter([10**12] * 15 + [10**6] * 100)
    monkeypatch.setattr(RecordingWriter, "free_bytes", lambda self: next(free))
    w = RecordingWriter(tmp_path / codec, fps=30, codec=codec)
    with pytest.raises(OutputError, match="disk nearly full: 1.0 MiB left.*15 of 15 pairs readable"):
        for p in pairs:
            w.write(p)
    r = RecordingReader(tmp_path / codec)
    assert sum(1 for _ in r) == 15 == w.readable and r.truncated == 0


@pytest.mark.parametrize("codec", ["MJPG", "FFV1"])
def test_frames_a_muxer_lost_silently_are_counted_by_reading_back(rec, tmp_path, monkeypatch, codec):
    """cv2.VideoWriter drops frames on a full disk without a word: the count comes from the file."""
    from streams.recording import CvVideoSink

    pairs = _pairs(rec, 20)
    real = CvVideoSink.write
    written = {}

    def lossy(self, img):  # the disk fills up after 12 frames: the muxer goes on as if nothing happened
        written[self.path] = written.get(self.path, 0) + 1
        if written[self.path] <= 12:
            real(self, img)

    monkeypatch.setattr(CvVideoSink, "write", lossy)
    w = RecordingWriter(tmp_path / codec, fps=30, codec=codec)
    for p in pairs:
        w.write(p)
    monkeypatch.setattr(RecordingWriter, "free_bytes", lambda self: 0)  # found full at close
    w.close()
    assert (w.count, w.readable) == (20, 12) and w.error is not None
    r = RecordingReader(tmp_path / codec)
    assert len(r) == 12 and sum(1 for _ in r) == 12 and r.truncated == 0


def test_record_command_on_a_full_disk_exits_non_zero_with_the_readable_count(rec, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(JpegStreamSink, "flush", _fail_after(JpegStreamSink.flush, 20))
    rc = main(["record", "--cam0", str(rec / "cam0.avi"), "--cam1", str(rec / "cam1.avi"), "--out",
               str(tmp_path / "r")])
    out, err = capsys.readouterr()
    assert rc == 1
    assert "wrote" not in out and "10 readable pairs" in out and "No space left on device" in err
    assert sum(1 for _ in RecordingReader(tmp_path / "r")) == 10


def test_live_record_on_a_full_disk_stops_recording_but_tracking_goes_on(rec, tmp_path, capsys, monkeypatch, caplog):
    monkeypatch.setattr(JpegStreamSink, "flush", _fail_after(JpegStreamSink.flush, 20))
    rc = main(["live", "--cam0", str(rec / "cam0.avi"), "--cam1", str(rec / "cam1.avi"), "--calib",
               str(rec / "calib.yaml"), "--gate", "hits", "--record", str(tmp_path / "r"), "--out",
               str(tmp_path / "t.jsonl"), "--publish", f"ipc://{tmp_path}/pub"])
    out = capsys.readouterr().out
    assert rc == 1, "a run that lost part of its output does not exit 0"
    processed = int(out.split("processed ")[1].split()[0])
    published = int(out.split("published ")[1].split(",")[0])
    assert processed > 60 and published == processed
    assert "--record" in out and "STOPPED after 10 readable" in out
    assert any("--record stopped" in r.getMessage() for r in caplog.records)
    assert sum(1 for _ in RecordingReader(tmp_path / "r")) == 10
    assert len(read_jsonl(tmp_path / "t.jsonl")) == processed


class _FullDiskFile:
    """A file whose flush fails (ENOSPC) after n flushes, like a real file on a full disk."""

    def __init__(self, f, n):
        self._f, self._flush = f, _fail_after(f.flush, n)

    def flush(self):
        self._flush()

    def __getattr__(self, name):
        return getattr(self._f, name)


def test_disk_full_on_a_tracks_file_is_one_line_and_exit_status_1(rec, tmp_path, capsys, monkeypatch):
    import tracker3d.outputs.files as files

    monkeypatch.setattr(files, "open", lambda *a, **kw: _FullDiskFile(open(*a, **kw), 40), raising=False)
    rc = main(["replay", str(rec), "--gate", "hits", "--out", str(tmp_path / "t.jsonl")])
    err = capsys.readouterr().err
    monkeypatch.undo()
    assert rc == 1 and "No space left on device" in err and "Traceback" not in err
    assert 40 <= len(read_jsonl(tmp_path / "t.jsonl")) <= 41  # close() writes the buffered one here


# --- partial outputs are readable ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def outputs(rec, tmp_path_factory):
    d = tmp_path_factory.mktemp("outs")
    for suffix in (".jsonl", ".csv", ".mcap"):
        assert main(["replay", str(rec), "--gate", "hits", "--out", str(d / f"t{suffix}")]) == 0
    return d


@pytest.mark.parametrize("suffix, reader", [(".jsonl", read_jsonl), (".csv", read_csv), (".mcap", read_mcap)])
def test_cut_output_reads_to_its_last_complete_record(outputs, tmp_path, suffix, reader, caplog):
    whole = reader(outputs / f"t{suffix}")
    assert whole.cut == 0 and len(whole) > 50
    data = (outputs / f"t{suffix}").read_bytes()
    for frac in (0.3, 0.77, 0.999):
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(data[:int(len(data) * frac)])
        got = reader(cut)
        assert got.cut == 1 and got.cut_bytes > 0
        assert 0 < len(got) < len(whole) or (suffix == ".mcap" and len(got) <= len(whole))
        assert list(got) == list(whole[:len(got)]), "the complete records, unchanged"
        if suffix != ".mcap":
            assert len(got) >= int(len(whole) * frac) - 2
    assert "file cut off mid-write" in caplog.text


def test_tracks_writers_flush_every_message(tmp_path):
    for suffix in (".jsonl", ".csv"):
        w = open_writer(tmp_path / f"f{suffix}")
        for k in range(5):
            w.write(k, k / 30, [{"id": 1, "xyz": [0, 0, 1], "vel": [0, 0, 0], "cov": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                                 "persistence": 1.0, "age_s": 0.1, "state": "tracked", "cam0": None, "cam1": None}])
            reader = read_jsonl if suffix == ".jsonl" else read_csv
            assert len(reader(tmp_path / f"f{suffix}")) == k + 1  # on disk before close()
        w.close()
    w = McapWriter(tmp_path / "f.mcap", flush_every=3)
    for k in range(7):
        w.write(k, k / 30, [])
    assert len(read_mcap(tmp_path / "f.mcap")) == 6  # two chunks on disk before close()
    w.close()
    assert len(read_mcap(tmp_path / "f.mcap")) == 7


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads the process tree from /proc (Linux)")
@pytest.mark.parametrize("sig, rc", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_to_the_whole_group_stops_replay_in_order_detector_processes_included(rec, tmp_path, sig, rc):
    """Ctrl-C in a terminal (and systemd's stop) signal every process of the group: the detector
    processes leave the shutdown to the command, which ends them after its last pair."""
    out = tmp_path / "g.jsonl"
    proc = _cli("replay", str(rec), "--realtime", "--gate", "hits", "--out", str(out), new_session=True)
    try:
        assert _wait_for(lambda: out.exists() and out.read_text().count("\n") >= 20), proc.communicate()
        children = _children(proc.pid)
        assert len(children) == 2  # one detector process per camera
        os.killpg(proc.pid, sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == rc, stderr
    assert "ended unexpectedly" not in stderr and "Traceback" not in stderr
    processed = int(stdout.split("processed ")[1].split()[0])
    assert 0 < processed < SCENE.n_frames and len(read_jsonl(out)) == processed
    assert _wait_for(lambda: not any(os.path.exists(f"/proc/{c}") and _state(c) != "Z" for c in children), 10)


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads the process tree from /proc (Linux)")
@pytest.mark.parametrize("sig, rc", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_to_the_group_while_the_detector_processes_start_is_a_stop_not_a_crash(rec, tmp_path, sig, rc):
    """Signalled while its children still import numpy and OpenCV (a second or so), the run ended
    as a failure (exit 1, 'the detector process ended unexpectedly') with the children's
    KeyboardInterrupt tracebacks: they ignored the signals only once their imports were done."""
    out = tmp_path / "s.jsonl"
    proc = _cli("replay", str(rec), "--realtime", "--gate", "hits", "--out", str(out), new_session=True)
    try:
        assert _wait_for(lambda: proc.poll() is not None or len(_children(proc.pid)) == 2, 30)
        time.sleep(0.2)  # the children are importing (they answer their start-up a second later)
        os.killpg(proc.pid, sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == rc, stderr
    assert "ended unexpectedly" not in stderr and "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert f"stopped by {signal.Signals(sig).name}" in stderr


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
