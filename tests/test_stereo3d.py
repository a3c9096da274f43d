"""Cross-camera association, 3D tracks, the pipeline on sim scenes, and the live/replay/demo commands."""
import json
import socket
import threading
import time

import numpy as np
import pytest

from calib.rigs import make_rig
from streams import subscribe
from tracker3d.cli import main
from tracker3d.detect.detections import Detections
from tracker3d.evaluation.runs import Collector, evaluate_recording
from tracker3d.outputs.files import read_jsonl
from tracker3d.pipeline import PipelineConfig, StereoPipeline, run
from tracker3d.sim import (
    SimStereoSource,
    SimWorld,
    get_scene,
    gt_columns,
    write_sim_recording,
)
from tracker3d.stereo.associate import StereoAssociator
from tracker3d.stereo.track3d import PairObservation, Tracker3D
from tracker3d.track2d.tracker import ByteTracker


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def blobs(uv, size=10.0):
    uv = np.asarray(uv, float).reshape(-1, 2)
    return Detections.from_boxes(np.column_stack([uv - size / 2, uv + size / 2]), np.ones(len(uv)), centroids=uv)


def test_association_separates_objects_on_one_epipolar_line():
    rig = make_rig(dist=(0, 0, 0, 0, 0))
    trk = [ByteTracker(image_size=(640, 480)), ByteTracker(image_size=(640, 480))]
    assoc = StereoAssociator(rig)
    fps = 30.0
    for k in range(20):
        t = k / fps
        # Two objects at the same height and similar depth: at k=10 both lie on one epipolar line;
        # one moves up, the other down, so their history tells them apart.
        X = np.array([[-0.4 + 0.04 * k, 0.1 - 0.01 * k, 3.0], [0.5 - 0.03 * k, 0.1 + 0.012 * k, 3.2]])
        uv0, uv1 = rig.project(X)
        order1 = [1, 0] if k % 2 else [0, 1]  # detection order must not matter
        trk[0].update(blobs(uv0), t)
        trk[1].update(blobs(uv1[order1]), t)
    i0 = np.arange(len(trk[0]))
    i1 = np.arange(len(trk[1]))
    pairs = assoc.associate(trk[0], i0, trk[1], i1, 19 / fps, 1 / fps)
    assert len(pairs) == 2
    for a, b, sampson in pairs:
        xa = trk[0].measured()[a, 0]
        xb = trk[1].measured()[b, 0]
        # The same object: camera 1 (to the right, toed in) sees it within a few tens of pixels.
        assert abs(xa - xb) < 60 and sampson < 0.5


def _obs(id0, id1, X, rig, cov=0.0004):
    uv0, uv1 = rig.project(np.asarray(X)[None])
    return PairObservation(id0, id1, True, True, uv0[0], uv1[0], 0.9, xyz=np.asarray(X, float),
                           cov=np.eye(3) * cov)


def test_2d_id_switch_keeps_the_3d_id():
    rig = make_rig()
    trk = Tracker3D(rig)
    ids = set()
    for k in range(40):
        X = [0.5 * k / 30, 0.0, 3.0]
        id1 = 7 if k < 20 else 9  # camera 1's 2D tracker switched identity at k=20
        id0 = 4 if k < 30 else 12  # and camera 0's at k=30
        trk.update(k / 30, [_obs(id0, id1, X, rig)])
        ids |= {tr.id for tr in trk.reported()}
    assert ids == {1}
    assert trk.tracks[0].pair == (12, 9)
    # A pair that jumps away is not the same object: new 3D id.
    trk.update(40 / 30, [_obs(12, 9, [2.0, 1.0, 6.0], rig)])
    trk.update(41 / 30, [_obs(12, 9, [2.0, 1.0, 6.0], rig)])
    assert {tr.id for tr in trk.tracks} >= {1, 2}


def test_tracks_coast_then_end_without_views():
    rig = make_rig()
    trk = Tracker3D(rig)
    for k in range(10):
        trk.update(k / 30, [_obs(1, 1, [0.1 * k / 30, 0, 3.0], rig)])
    assert trk.reported()[0].state == "tracked"
    trk.update(10 / 30, [])
    assert trk.reported()[0].state == "coasting"
    for k in range(11, 40):
        trk.update(k / 30, [])
    assert trk.tracks == [] and trk.reported() == []


def _run_sim(cfg, seed, **pcfg):
    world = SimWorld(cfg, seed=seed)
    src = SimStereoSource(world)
    pipe = StereoPipeline(world.calib, PipelineConfig(**pcfg))
    col = Collector(pipe)
    stats = run(src, pipe, on_frame=col)
    pipe.close()
    return col.evaluate(gt_columns(src.gt), cfg.fps, 2.0), stats


def test_default_scene_accuracy():
    res, stats = _run_sim(get_scene("default").with_(seconds=8.0), seed=0)  # the demo scene
    m = res["3d"]
    assert m["IDF1"] >= 0.9
    assert not {k for k in m["false_by_kind"] if k in ("flash", "clutter")}
    assert m["rmse_m"] <= 1.2 * m["bound_m"]
    assert m["time_to_track_s_median"] <= 0.2
    assert stats.processed == 240


def test_shutter_skew_is_corrected():
    cfg = get_scene("walkers").with_(seconds=6.0, time_offset=0.015, speed=(1.0, 2.0))
    with_corr, _ = _run_sim(cfg, 4)
    without, _ = _run_sim(cfg, 4, sync_correction=False)
    assert with_corr["3d"]["rmse_m"] < 0.5 * without["3d"]["rmse_m"]
    assert with_corr["3d"]["IDF1"] > without["3d"]["IDF1"] + 0.2


def test_camera_going_dark_coasts_and_loop_continues():
    cfg = get_scene("default").with_(seconds=7.0, dark=(1, 3.5, 5.0), flash_rate=0.0)
    world = SimWorld(cfg, seed=1)
    src = SimStereoSource(world)
    pipe = StereoPipeline(world.calib)
    states = {}

    def on(f3):
        states[f3.index] = [t["state"] for t in f3.tracks]

    stats = run(src, pipe, on_frame=on)
    assert stats.processed == 210
    before = states[100]  # 3.3 s
    assert before and all(s == "tracked" for s in before)
    assert all(s == "coasting" for s in states[110]), "one view left: tracks coast"
    assert states[140] == [], "without stereo for longer than max_coast_s the tracks end"
    assert states[205].count("tracked") >= 3, "camera back: tracking resumes"


def test_replay_smooth_and_eval_on_a_recording(tmp_path, capsys):
    rec = write_sim_recording(get_scene("default").with_(seconds=7.0), tmp_path / "rec", seed=5)
    res = evaluate_recording(str(rec), show_progress=False)
    m = res["3d"]
    assert m["IDF1"] > 0.85 and m["rmse_m"] <= 1.2 * m["bound_m"]
    assert m["rmse_smooth_m"] < m["rmse_raw_m"]
    out = tmp_path / "tracks.jsonl"
    assert main(["replay", str(rec), "--smooth", "--out", str(out)]) == 0
    msgs = read_jsonl(out)
    assert len(msgs) == 210 and [m_["seq"] for m_ in msgs] == list(range(210))
    assert sum(len(m_["tracks"]) for m_ in msgs) > 500
    text = capsys.readouterr().out
    assert "pairs/s" in text and "RTS-smoothed" in text
    assert main(["eval", str(rec), "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["3d"]["IDF1"] > 0.85


def test_demo_publishes_to_a_real_subscriber(capsys):
    ep = f"tcp://127.0.0.1:{free_port()}"
    got = []
    sub = subscribe(ep)
    finished = threading.Event()

    def listen():
        # The socket is used by this thread only, and closed here: a ZMQ socket must never be
        # closed from one thread while another polls it.
        try:
            while True:
                msg = sub.recv(timeout=0.2)
                if msg is not None:
                    got.append(msg)
                elif finished.is_set():
                    return  # the demo is over and nothing more is in flight
        finally:
            sub.close()

    th = threading.Thread(target=listen, daemon=True)
    th.start()
    time.sleep(0.3)
    try:
        assert main(["demo", "--fast", "--seconds", "4", "--publish", ep]) == 0
    finally:
        finished.set()
        th.join(30)
    assert not th.is_alive()
    assert got, "the subscriber received messages"
    with_tracks = [m for m in got if m["tracks"]]
    assert with_tracks and all(m["schema"] == "tracker3d/tracks3d@1" for m in got)
    tr = with_tracks[-1]["tracks"][0]
    assert len(tr["xyz"]) == 3 and 0 <= tr["persistence"] <= 1 and tr["cam0"]["track"] >= 1
    out = capsys.readouterr().out
    assert "3D IDF1" in out and "latency" in out


def test_live_from_two_files(tmp_path, capsys):
    rec = write_sim_recording(get_scene("sparse").with_(seconds=3.0), tmp_path / "rec", seed=1)
    ep = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "live.jsonl"
    rc = main(["live", "--cam0", str(rec / "cam0.mjpg"), "--cam1", str(rec / "cam1.mjpg"), "--calib",
               str(rec / "calib.yaml"), "--publish", ep, "--out", str(out), "--record", str(tmp_path / "again")])
    assert rc == 0
    assert len(read_jsonl(out)) == 90
    text = capsys.readouterr().out
    assert "processed 90" in text and "zmq: sent 90" in text
    assert (tmp_path / "again" / "frames.csv").read_text().count("\n") == 91


def test_live_bad_inputs_are_clear(tmp_path, capsys):
    rec = write_sim_recording(get_scene("sparse").with_(seconds=0.5, width=320, height=240), tmp_path / "small",
                              seed=1)
    big = write_sim_recording(get_scene("sparse").with_(seconds=0.5), tmp_path / "big", seed=1)
    assert main(["live", "--cam0", str(rec / "cam0.mjpg"), "--cam1", str(rec / "cam1.mjpg"), "--calib",
                 str(big / "calib.yaml")]) == 2
    assert "frames are 320x240 but the calibration expects 640x480" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "nothing")]) == 2
    assert main(["live", "--cam0", "0", "--cam1", str(rec / "cam1.mjpg"), "--calib", str(big / "calib.yaml")]) == 2
    assert "mix of a live camera and a file" in capsys.readouterr().err


def test_a_pair_with_neither_view_is_coasted_not_fatal():
    """Both cameras dropping the same frame (no image, no time) must not stop the loop."""
    from streams.frames import FramePair

    world = SimWorld(get_scene("default").with_(seconds=4.0, flash_rate=0.0), seed=2)
    pipe = StereoPipeline(world.calib)
    n_before = None
    for k in range(world.cfg.n_frames):
        pair, _ = world.step()
        if k == 100:
            pair = FramePair(pair.index, float("nan"), float("nan"), None, None)
            n_before = len(f3.tracks)
        f3 = pipe.step(pair)
        if k == 100:
            assert np.isfinite(f3.t) and len(f3.tracks) == n_before > 0
    assert len(f3.tracks) >= 3


def test_tracks_start_when_every_time_is_below_minus_one_second():
    rig = make_rig()
    trk = Tracker3D(rig)
    for k in range(10):
        trk.update(-100.0 + k / 30, [_obs(1, 1, [0.1 * k / 30, 0, 3.0], rig)])
    assert [tr.id for tr in trk.reported()] == [1]


def test_a_one_hour_time_jump_does_not_blind_the_tracker():
    """+1 h between two pairs (a clock jump in frames.csv): tracks end there, tracking resumes
    as fast as at the start (the frame-period estimate used to be poisoned for seconds), and the
    jump is said once in the run summary."""
    def reported_after(jump):
        world = SimWorld(get_scene("default").with_(seconds=6.0), seed=0)
        src = SimStereoSource(world)
        pipe = StereoPipeline(world.calib, PipelineConfig(threads=False))
        counts = []

        class Shifted:
            live = False

            def read(self, timeout=None):
                p = src.read()
                if p is not None and p.index >= 90:
                    p.t0, p.t1 = p.t0 + jump, p.t1 + jump
                return p

        st = run(Shifted(), pipe, on_frame=lambda f3: counts.append(len(f3.tracks)))
        pipe.close()
        return counts, st

    base, _ = reported_after(0.0)
    jumped, st = reported_after(3600.0)
    # 1 s after the jump, as many objects are tracked as 1 s after the start of the run.
    assert sum(jumped[120:150]) >= 0.8 * sum(base[120:150]) > 0
    assert len(st.warnings) == 1 and "time jumps by 3600.0 s" in st.warnings[0]


@pytest.mark.parametrize("option, value, match", [
    ("--gate-on", "5", "--gate-on 5.0: expected a score in (0, 1]"),
    ("--gate-on", "nan", "--gate-on nan: expected"),
    ("--gate-off", "0.9", "--gate-off 0.9: expected a score below --gate-on 0.5"),
    ("--pixel-sigma", "0", "--pixel-sigma 0.0: expected pixels > 0"),
    ("--pixel-sigma", "nan", "--pixel-sigma nan"),
    ("--gate-device", "tpu", "--gate-device tpu: expected auto, cpu, cuda or cuda:N"),
    ("--max-coast", "-1", "--max-coast -1.0: expected seconds >= 0"),
    ("--window", "inf", "--window inf"),
    ("--min-hits", "0", "--min-hits 0"),
    ("--min-area", "nan", "--min-area nan: expected pixels^2 >= 0"),
    ("--max-area", "nan", "--max-area nan: expected pixels^2 > 0"),
    ("--max-area", "4", "--max-area 4.0: expected pixels^2 above --min-area 10"),
    ("--merge-px", "nan", "--merge-px nan: expected pixels >= 0"),
    ("--seconds", "nan", "--seconds nan: expected a number > 0"),
    ("--seconds", "inf", "--seconds inf: expected a number > 0"),
])
def test_bad_option_values_are_refused_in_one_line(capsys, option, value, match):
    extra = ["--gate-on", "0.5"] if option == "--gate-off" else ["--min-area", "10"] if value == "4" else []
    seconds = [] if option == "--seconds" else ["--seconds", "0.5"]
    assert main(["demo", "--fast", *seconds, "--no-publish", *extra, option, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0]


@pytest.mark.parametrize("argv, match", [
    (["sim", "--seconds", "nan"], "--seconds nan: expected a number > 0"),
    (["sim", "--seconds", "inf"], "--seconds inf: expected a number > 0"),
    (["sim", "--set", "drop_prob=2"], "--set drop_prob=2.0: expected a value in [0, 1]"),
    (["replay", "REC", "--fps", "-5"], "--fps -5.0: expected frames per second > 0"),
    (["replay", "REC", "--min-area", "nan"], "--min-area nan"),
    (["live", "--cam0", "REC/cam0.mjpg", "--cam1", "REC/cam1.mjpg", "--calib", "REC/calib.yaml", "--seconds", "-3"],
     "--seconds -3.0: expected a number of seconds > 0"),
    (["record", "--cam0", "REC/cam0.mjpg", "--cam1", "REC/cam1.mjpg", "--seconds", "nan"],
     "--seconds nan: expected a number of seconds > 0"),
])
def test_bad_values_of_every_command_are_refused_before_anything_is_written(tmp_path, capsys, argv, match):
    """NaN, infinities, negative rates and durations, probabilities over 1: one line, exit 2,
    nothing written (they used to crash, run zero pairs with exit 0, or write an empty recording)."""
    rec = tmp_path / "rec"
    assert main(["sim", "--out", str(rec), "--seconds", "0.5"]) == 0
    capsys.readouterr()
    out = tmp_path / "out"
    argv = [a.replace("REC", str(rec)) for a in argv]
    if argv[0] in ("sim", "record"):
        argv += ["--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err
    assert not out.exists()


def _run_with_calib(calib_of, seconds=6.0):
    world = SimWorld(get_scene("default").with_(seconds=seconds), seed=0)
    src = SimStereoSource(world)
    pipe = StereoPipeline(calib_of(world.calib), PipelineConfig(threads=False))
    st = run(src, pipe)
    pipe.close()
    return st


def test_a_wrong_calibration_that_pairs_nothing_is_said_in_the_run_summary():
    """T's sign flipped (or cameras swapped): both cameras track objects, nothing pairs, zero 3D
    tracks; the run says why instead of exiting quietly with nothing."""
    from calib import StereoCalibration

    flipped = _run_with_calib(lambda c: StereoCalibration(c.cam0, c.cam1, c.R, -c.T))
    assert flipped.tracks_max == 0
    assert len(flipped.warnings) == 1 and "none paired across the cameras into a 3D point: check the " \
        "calibration" in flipped.warnings[0]
    assert _run_with_calib(lambda c: c).warnings == []


@pytest.mark.parametrize("world", [False, True])
def test_message_state_fields_round_as_one_by_one(world):
    """states_fields formats in batch; each field must be the float the one-by-one rounding gives
    (round 5 / round 4 / 6 significant digits), signs of zero, NaN and inf included."""
    import cv2

    from persistence import HitCountGate

    rig = make_rig()
    if world:
        rig = rig.with_world(cv2.Rodrigues(np.array([0.3, -0.2, 1.0]))[0], np.array([0.5, -1.0, 4.0]))
    pipe = StereoPipeline(rig, PipelineConfig(threads=False), gate=HitCountGate(3, 1.0))
    rng = np.random.default_rng(4)
    n = 40
    xyz = rng.normal(0, 1, (n, 3)) * 10.0 ** rng.uniform(-7, 4, (n, 1))
    vel = rng.normal(0, 1, (n, 3)) * 10.0 ** rng.uniform(-7, 3, (n, 1))
    A = rng.normal(0, 1, (n, 3, 3)) * 10.0 ** rng.uniform(-8, 2, (n, 1, 1))
    cov = A @ A.transpose(0, 2, 1)
    xyz[0, 0], vel[1, 1], cov[2, 0, 1], cov[3, 2, 2], cov[4, 1, 1] = np.nan, -np.inf, -0.0, 1e-320, np.inf
    xyz[5, 2] = -0.0
    with np.errstate(invalid="ignore"):  # inf entries through the world rotation
        if world:
            Rw = rig.R_world.T
            xyz_w, vel_w, cov_w = rig.to_world(xyz), (Rw @ vel[:, :, None])[:, :, 0], Rw @ cov @ Rw.T
        else:
            xyz_w, vel_w, cov_w = xyz, vel, cov
        got = pipe.states_fields(xyz, vel, cov)
    want = [{"xyz": [round(v, 5) for v in x], "vel": [round(v, 4) for v in w],
             "cov": [[float(f"{v:.6g}") for v in row] for row in c]}
            for x, w, c in zip(xyz_w.tolist(), vel_w.tolist(), cov_w.tolist())]
    assert repr(got) == repr(want)
    assert pipe.state_fields(xyz[7], vel[7], cov[7]) == want[7]
    assert pipe.states_fields(xyz[:0], vel[:0], cov[:0]) == []
