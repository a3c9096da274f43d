"""A newcomer's rough edges: plain-word summaries, honest latency, warnings and refusals that say why."""
import math

from streams.pairing import PairStats
from tracker3d.cli import main
from tracker3d.commands.common import format_summary
from tracker3d.evaluation.eval3d import describe_false_kinds, format_3d
from tracker3d.pipeline import PipelineConfig, RunStats


def _summary():
    st = RunStats(pairs_in=10, processed=10, published=10, tracks_max=3, wall_s=1.0)
    src = PairStats(pairs=10, single0=2, overwritten=3)
    src.skews.extend([0.001, 0.002])
    return st.summary(src.as_dict())


def test_run_summary_is_in_plain_words():
    text = format_summary(_summary())
    for jargon in ("overwritten", "single0", "skew_ms_p99", "{", "}", "dropped0"):
        assert jargon not in text, jargon
    assert "3 pairs dropped because the loop was busy" in text
    assert "2 pairs with only camera 0" in text
    assert "camera time skew within a pair, ms: median" in text


def test_false_track_kinds_are_explained_not_a_dict():
    words = describe_false_kinds({"other": 2, "flash": 1})
    assert "{" not in words and "2 other (near no simulated thing" in words and "1 flash (" in words
    m = {"MOTA": 1.0, "IDF1": 1.0, "HOTA": 1.0, "IDSW": 0, "rmse_m": 0.01, "rmse_raw_m": 0.01, "rmse_smooth_m": 0.01,
         "bound_m": 0.01, "pixel_sigma": 0.3, "false_tracks": 2, "false_track_s": 1.0, "false_by_kind": {"other": 2},
         "time_to_track_s_median": 0.1, "time_to_track_s_p90": 0.1, "objects": 3, "objects_never_tracked": 0}
    line = format_3d("3D", m)
    assert "{'other'" not in line and "ghost" in line


def test_demo_shorter_than_the_warmup_says_it_scored_nothing(capsys):
    assert main(["demo", "--fast", "--seconds", "1", "--no-publish", "--gate", "hits"]) == 0
    out = capsys.readouterr().out
    assert "scored nothing: the run" in out and "2.0 s warm-up" in out
    assert "nan" not in out.lower().replace("nanos", "")


def test_demo_never_prints_a_bare_nan(capsys):
    # 2.2 s: a few frames after the warm-up, too few for a confirmed track
    assert main(["demo", "--fast", "--seconds", "2.2", "--no-publish", "--gate", "hits", "--min-hits", "9"]) == 0
    out = capsys.readouterr().out
    assert " nan" not in out and "none (" in out


def test_summary_with_no_tracks_says_why_from_what_the_run_saw():
    """The reason names the first stage that had nothing (it used to blame the background
    warm-up in every case, also for outside detections)."""
    from types import SimpleNamespace

    from tracker3d.commands.common import run_summary

    st = RunStats(pairs_in=10, processed=10, published=10, tracks_max=0, wall_s=1.0)

    def why(det, conf, detector="bg", outside=False):
        pipe = SimpleNamespace(detections_seen=det, confirmed_max=conf, cfg=PipelineConfig(detector=detector),
                               outside_boxes=outside)
        return format_summary(run_summary(st, {}, None, pipe))

    assert "no 3D track at all: neither camera detected anything in 10 pairs (a background detector learns for its " \
        "first 2 s" in why([0, 0], [0, 0])
    assert "learns" not in why([0, 0], [0, 0], detector="marker")
    assert "learns" not in why([0, 0], [0, 0], outside=True)
    assert "camera 1 detected nothing in 10 pairs (camera 0: 7 detections)" in why([7, 0], [0, 0])
    assert "camera 0's 12 detections never made a confirmed 2D track" in why([12, 9], [0, 2])
    assert "confirmed in both cameras but none paired" in why([12, 9], [1, 2])
    ok = RunStats(pairs_in=10, processed=10, published=10, tracks_max=2, wall_s=1.0)
    assert "no 3D track" not in format_summary(run_summary(ok, {}, None, None))
    # A run without a publisher says so, not 'published 0'.
    quiet = RunStats(pairs_in=10, processed=10, published=0, tracks_max=2, wall_s=1.0)
    assert "not published (no ZMQ publisher in this run)" in format_summary(quiet.summary())
    assert "published 10," in format_summary(ok.summary())


def test_a_replay_of_outside_boxes_in_one_camera_says_which_camera_saw_nothing(tmp_path, capsys):
    import shutil

    from conftest import DATA

    d = tmp_path / "wt"
    shutil.copytree(DATA / "wildtrack_c1c2_slice" / "clean", d)
    (d / "det1.txt").write_text("")
    assert main(["replay", str(d), "--no-detect-processes"]) == 0
    out = capsys.readouterr().out
    assert "no 3D track at all: camera 1 detected nothing" in out and "background" not in out


def test_smoothing_covers_tracks_dropped_as_duplicates():
    """replay --smooth says RTS-smoothed: every reported (track, frame) has a smoothed state, also
    for a track later removed as a duplicate of another (seed 0 makes two such tracks)."""
    import dataclasses

    from persistence import HitCountGate
    from tracker3d.pipeline import PipelineConfig, StereoPipeline, run
    from tracker3d.sim import SimStereoSource, SimWorld, get_scene

    world = SimWorld(dataclasses.replace(get_scene("default"), seconds=6.0), seed=0)
    pipe = StereoPipeline(world.calib, PipelineConfig(), gate=HitCountGate(3, 1.0), keep_log=True)
    reported = set()
    run(SimStereoSource(world, realtime=False), pipe,
        on_frame=lambda f3: reported.update((tr["id"], f3.index) for tr in f3.tracks))
    smoothed = pipe.smoothed_states()
    assert reported and not {k for k in reported if k not in smoothed}


def _small_recording(path, seconds=1.0):
    from tracker3d.sim import get_scene, write_sim_recording

    return write_sim_recording(get_scene("default").with_(seconds=seconds, width=320, height=240, n_objects=2),
                               path, seed=1)


def test_latency_is_null_without_a_capture_time_and_measured_with_one(tmp_path):
    """A recording has no capture wall time: replay's messages (ZMQ and --out alike) say null, not
    a made-up 0.0, and stay byte-reproducible; a source with capture times (the sim) gets numbers."""
    from persistence import HitCountGate
    from streams.messages import validate_message
    from tracker3d.outputs.files import read_jsonl
    from tracker3d.pipeline import PipelineConfig, StereoPipeline, run
    from tracker3d.sim import SimStereoSource, SimWorld, get_scene

    rec = _small_recording(tmp_path / "rec")
    assert main(["replay", str(rec), "--gate", "hits", "--out", str(tmp_path / "t.jsonl")]) == 0
    msgs = list(read_jsonl(tmp_path / "t.jsonl"))
    assert msgs and all(m["latency_ms"] is None for m in msgs)
    validate_message(msgs[0])
    world = SimWorld(get_scene("default").with_(seconds=0.3, width=320, height=240, n_objects=2), seed=1)
    got = []
    run(SimStereoSource(world, realtime=False), StereoPipeline(world.calib, PipelineConfig(), gate=HitCountGate()),
        on_frame=lambda f3: got.append(f3.latency_ms))
    assert got and all(v is not None and math.isfinite(v) and v > 0 for v in got)


def test_replay_refuses_a_calibration_for_another_image_size(tmp_path, capsys):
    from calib import load_calibration, save_calibration

    rec = _small_recording(tmp_path / "rec", seconds=0.3)
    other = _small_recording(tmp_path / "big", seconds=0.1)  # same rig, then scaled to another size
    cal = load_calibration(other / "calib.yaml")
    import dataclasses

    big = dataclasses.replace(cal, cam0=dataclasses.replace(cal.cam0, image_size=(640, 480)),
                              cam1=dataclasses.replace(cal.cam1, image_size=(640, 480)))
    save_calibration(big, tmp_path / "other.yaml")
    assert main(["replay", str(rec), "--gate", "hits", "--calib", str(tmp_path / "other.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "frames are 320x240" in err[0] and "expects 640x480" in err[0]


def test_recording_videos_keep_the_recordings_frame_times(tmp_path):
    """Our own cam0.mjpg/cam1.mjpg carry no rate (OpenCV says 25 fps): the recording's frames.csv
    times stamp them, and an explicit --fps wins."""
    from streams import open_stereo
    from streams.recording import read_frames_csv

    rec = _small_recording(tmp_path / "rec", seconds=0.5)
    want = [r[1] for r in read_frames_csv(rec / "frames.csv")]
    src = open_stereo(str(rec / "cam0.mjpg"), str(rec / "cam1.mjpg"))
    got = [p.t0 for p in src]
    assert got == want and "30 fps from the recording's meta.json and frames.csv" in src.rate_note()
    src = open_stereo(str(rec / "cam0.mjpg"), str(rec / "cam1.mjpg"), fps=15.0)
    got = [p.t0 for p in src]
    assert abs(got[1] - got[0] - 1 / 15) < 1e-9 and "15 fps from --fps" in src.rate_note()


def test_record_from_files_takes_seconds_of_their_frame_time(tmp_path, capsys):
    """Files are read as fast as they decode, so --seconds counted wall time and the length of
    the recording depended on the machine (2 s gave 332 pairs); now it is their frame time."""
    rec = _small_recording(tmp_path / "rec", seconds=1.0)
    out = tmp_path / "rec2"
    assert main(["record", "--cam0", str(rec / "cam0.mjpg"), "--cam1", str(rec / "cam1.mjpg"), "--out", str(out),
                 "--calib", str(rec / "calib.yaml"), "--seconds", "0.5"]) == 0
    times = [float(line.split(",")[1]) for line in (out / "frames.csv").read_text().splitlines()[1:]]
    assert len(times) == 15 and times[-1] - times[0] < 0.5


def test_record_without_calib_warns_how_to_add_it(tmp_path, capsys):
    rec = _small_recording(tmp_path / "rec", seconds=0.3)
    assert main(["record", "--cam0", str(rec / "cam0.mjpg"), "--cam1", str(rec / "cam1.mjpg"),
                 "--out", str(tmp_path / "rec2")]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert len(err) == 1 and "no --calib" in err[0] and "calib.yaml" in err[0]
    assert main(["record", "--cam0", str(rec / "cam0.mjpg"), "--cam1", str(rec / "cam1.mjpg"),
                 "--out", str(tmp_path / "rec3"), "--calib", str(rec / "calib.yaml")]) == 0
    assert "warning" not in capsys.readouterr().err


def _taken_port():
    import zmq

    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PUB)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    return sock, f"tcp://127.0.0.1:{port}"


def test_a_taken_port_is_refused_before_the_gate_loads(tmp_path, monkeypatch, capsys):
    import tracker3d.commands.common as common

    def no_gate(args):
        raise AssertionError("the gate loaded before the socket was bound")

    monkeypatch.setattr(common, "make_gate", no_gate)
    rec = _small_recording(tmp_path / "rec", seconds=0.3)
    sock, ep = _taken_port()
    try:
        for argv in (["demo", "--publish", ep, "--seconds", "1"],
                     ["replay", str(rec), "--publish", ep],
                     ["live", "--cam0", str(rec / "cam0.mjpg"), "--cam1", str(rec / "cam1.mjpg"),
                      "--calib", str(rec / "calib.yaml"), "--publish", ep]):
            assert main(argv) == 2, argv
            assert "address already in use" in capsys.readouterr().err, argv
    finally:
        sock.close(0)


def test_live_no_publish_lets_two_lives_run_at_once(tmp_path, capsys):
    rec = _small_recording(tmp_path / "rec", seconds=0.5)
    sock, ep = _taken_port()  # as if another live held the default port
    try:
        argv = ["live", "--cam0", str(rec / "cam0.mjpg"), "--cam1", str(rec / "cam1.mjpg"), "--calib",
                str(rec / "calib.yaml"), "--gate", "hits", "--no-publish", "--out", str(tmp_path / "a.jsonl")]
        assert main(argv) == 0
    finally:
        sock.close(0)
    assert "not publishing (--no-publish)" in capsys.readouterr().out
    assert (tmp_path / "a.jsonl").stat().st_size > 0


def test_demo_accepts_the_allow_remote_its_error_asks_for(capsys):
    assert main(["demo", "--publish", "tcp://0.0.0.0:1", "--seconds", "1"]) == 2
    assert "--allow-remote" in capsys.readouterr().err
    from tracker3d.cli import build_parser

    assert build_parser().parse_args(["demo", "--allow-remote"]).allow_remote


def test_eval_without_ground_truth_says_what_to_use_instead(tmp_path, capsys):
    rec = _small_recording(tmp_path / "rec", seconds=0.2)
    (rec / "gt.csv").unlink()  # as a recording of your own cameras
    assert main(["eval", str(rec)]) == 2
    err = capsys.readouterr().err
    assert "ground truth file not found" in err and "replay --out" in err and len(err.strip().splitlines()) == 1


def test_a_snapshot_of_no_tracks_says_why():
    from tracker3d.commands.view import snapshot_line
    from tracker3d.viewer.state import ViewerState

    state = ViewerState(trail_s=2.0)
    state.apply({"schema": "tracker3d/tracks3d@1", "seq": 0, "frame": 0, "t": 0.5, "frame_id": "cam0",
                 "latency_ms": 1.0, "tracks": []})
    line = snapshot_line("x.png", state)
    assert line.startswith("wrote x.png: 0 tracks") and "first 2 s" in line


def test_eval_line_never_prints_a_bare_nan():
    nan = float("nan")
    m = {"MOTA": 0.0, "IDF1": 0.0, "HOTA": 0.0, "IDSW": 0, "rmse_m": nan, "rmse_raw_m": nan, "rmse_smooth_m": nan,
         "bound_m": nan, "pixel_sigma": nan, "false_tracks": 0, "false_track_s": 0.0, "false_by_kind": {},
         "time_to_track_s_median": nan, "time_to_track_s_p90": nan, "objects": 3, "objects_never_tracked": 3}
    line = format_3d("3D", m)
    assert "nan" not in line and "RMSE none (no 3D track matched an object)  false tracks 0" in line
    assert "cm (raw none" not in line  # one reason, not nested in a sentence about centimetres
    # Nothing to score (a run inside the warm-up, an empty gt.csv): said so, not MOTA 0.000.
    line = format_3d("3D", m | {"objects": 0, "objects_never_tracked": 0})
    assert line.startswith("3D: scored nothing: no ground-truth object") and "MOTA" not in line
