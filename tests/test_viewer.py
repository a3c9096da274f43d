"""The viewer: message handling without a window, a headless snapshot checked by its pixels,
the overlay video and the trajectory plot."""
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from tracker3d.cli import main
from tracker3d.viewer.state import NewestMessage, ViewerState, id_colour


def msg(seq, t, tracks, frame_id="cam0"):
    return {"seq": seq, "t": t, "frame_id": frame_id, "tracks": tracks}


def tr(i, xyz, vel=(0.0, 0.0, 0.0), p=0.9, state="tracked"):
    return {"id": i, "xyz": list(xyz), "vel": list(vel), "cov": [[0.0] * 3] * 3, "persistence": p, "age_s": 1.0,
            "state": state}


def test_state_trails_colours_stale_and_restart():
    st = ViewerState(trail_s=0.5)
    for k in range(30):
        tracks = [tr(1, (k * 0.01, 0, 3)), tr(2, (0, 0, 4))] if k < 20 else [tr(1, (k * 0.01, 0, 3))]
        assert st.apply(msg(1000 + k, k / 30, tracks))
    assert set(st.tracks) == {1}, "a track missing from the newest message is gone"
    pts, fade = st.trail_points(1)
    assert len(pts) == 16 and fade[-1] == 1.0 and fade[0] < fade[-1], "0.5 s of trail at 30 Hz, newest brightest"
    np.testing.assert_allclose(pts[-1], [0.29, 0, 3])
    assert not st.apply(msg(1012, 0.4, [tr(9, (1, 1, 1))])), "an older message is dropped"
    assert st.stale == 1 and 9 not in st.tracks
    assert st.apply(msg(0, 0.0, [tr(5, (1, 1, 1))])), "a publisher restart starts over"
    assert set(st.tracks) == {5} and len(st.tracks[5].trail) == 1
    cols = [id_colour(i) for i in range(50)]
    assert id_colour(7) == id_colour(7)
    assert min(np.abs(np.subtract(a, b)).sum() for a, b in zip(cols, cols[1:])) > 0.2, "neighbour IDs differ"
    assert "#5" in st.info_text() and "p=0.90" in st.info_text()


def test_newest_message_wins():
    box = NewestMessage()
    for k in range(5):
        box.put({"seq": k})
    assert box.take() == {"seq": 4} and box.replaced == 4 and box.take() is None


def _publish_forever(ep, tracks, stop):
    from streams import TrackPublisher

    with TrackPublisher(ep) as pub:
        k = 0
        while not stop.is_set():
            pub.publish(k, k / 30, tracks)
            k += 1
            time.sleep(0.01)


def test_snapshot_shows_each_track_where_it_should(tmp_path, capsys):
    pytest.importorskip("open3d")
    from calib import save_calibration
    from calib.rigs import make_rig
    from tracker3d.viewer.snapshot import default_camera

    calib = make_rig()
    save_calibration(calib, tmp_path / "rig.yaml")
    tracks = [tr(i, (-1.0 + 0.8 * i, 0.3 * (i % 2), 3.0 + 0.5 * i), vel=(0.2, 0, 0)) for i in range(4)]
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ep = f"tcp://127.0.0.1:{port}"
    stop = threading.Event()
    th = threading.Thread(target=_publish_forever, args=(ep, tracks, stop), daemon=True)
    th.start()
    try:
        # The viewer runs as its own process, as `--view` starts it (Open3D's renderer stays out
        # of the test process).
        png = tmp_path / "snap.png"
        r = subprocess.run([sys.executable, "-m", "tracker3d.cli", "view", "--connect", ep, "--calib",
                            str(tmp_path / "rig.yaml"), "--snapshot", str(png), "--frames", "5", "--size", "640x360"],
                           capture_output=True, text=True, timeout=120)
        # A file the image writer cannot make is an error, not "wrote ..." (it used to be rc 0).
        bad = subprocess.run([sys.executable, "-m", "tracker3d.cli", "view", "--connect", ep, "--snapshot",
                              str(tmp_path / "snap.nosuchformat"), "--frames", "1", "--size", "64x36"],
                             capture_output=True, text=True, timeout=120)
    finally:
        stop.set()
        th.join(5)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "4 tracks after 5 messages" in r.stdout
    assert bad.returncode == 2 and "could not write" in bad.stderr and "wrote" not in bad.stdout, bad.stderr[-2000:]
    img = cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB)
    assert img.shape == (360, 640, 3)
    st = ViewerState()
    st.apply(msg(0, 0.0, tracks))
    cam = default_camera(st, calib, 640, 360)
    for t, (u, v) in zip(tracks, cam.project(np.array([t["xyz"] for t in tracks]))):
        want = np.array(id_colour(t["id"])) * 255
        got = img[int(round(v)), int(round(u))].astype(float)
        assert np.abs(got - want).max() < 12, f"track {t['id']}: pixel {got} at ({u:.0f}, {v:.0f}), want {want}"
        # ... and a sphere, not a stray pixel: its colour covers a disc around the centre.
        patch = img[int(v) - 3:int(v) + 4, int(u) - 3:int(u) + 4].reshape(-1, 3).astype(float)
        assert (np.abs(patch - want).max(axis=1) < 12).mean() > 0.8
        # ... with its ID written beside it (dark text right of the sphere; nothing else is near black).
        label = img[int(v) - 16:int(v) + 12, int(u) + 4:int(u) + 70]
        assert (label.max(axis=2) < 90).sum() >= 15, f"no ID label beside track {t['id']}"
    absent = np.array(id_colour(99)) * 255
    assert (np.abs(img.astype(float) - absent).max(axis=2) < 6).sum() < 20, "no sphere for an ID not sent"


def test_view_without_publisher_is_a_clear_error(tmp_path):
    pytest.importorskip("open3d")
    r = subprocess.run([sys.executable, "-m", "tracker3d.cli", "view", "--connect", "tcp://127.0.0.1:1",
                        "--snapshot", str(tmp_path / "x.png"), "--frames", "2", "--timeout", "0.5"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "0 of 2 messages within 0.5 s" in r.stderr


def _view(args, env=None, timeout=30):
    import os

    return subprocess.run([sys.executable, "-m", "tracker3d.cli", "view", "--connect", "tcp://127.0.0.1:1", *args],
                          capture_output=True, text=True, timeout=timeout, env=dict(os.environ, **(env or {})))


@pytest.mark.parametrize("display", ["", ":47913"])  # unset; an X display nobody serves
def test_view_window_without_a_display_says_so_at_once(display):
    """It used to abort in Open3D (rc 134) or, with no publisher, spin a core forever."""
    t0 = time.monotonic()
    r = _view([], env={"DISPLAY": display, "WAYLAND_DISPLAY": ""})
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr[-2000:]
    assert "no display" in r.stderr and "--snapshot" in r.stderr and "Xvfb" in r.stderr
    assert time.monotonic() - t0 < 20


def test_snapshot_into_a_missing_folder_is_refused_before_waiting(tmp_path):
    """It used to wait for messages, print "wrote ..." with rc 0 and write nothing."""
    r = _view(["--snapshot", str(tmp_path / "no" / "such" / "x.png"), "--timeout", "30"])
    assert r.returncode == 2 and "folder" in r.stderr and "does not exist" in r.stderr and "wrote" not in r.stdout


def test_snapshot_without_a_vulkan_driver_is_one_line(tmp_path):
    """Open3D's renderer aborts the process (rc 134) when no Vulkan driver loads; we say so first."""
    pytest.importorskip("open3d")
    r = _view(["--snapshot", str(tmp_path / "x.png")], env={"VK_ICD_FILENAMES": str(tmp_path / "none.json"),
                                                              "VK_DRIVER_FILES": str(tmp_path / "none.json")})
    assert r.returncode == 2, r.stderr[-1000:]
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "needs a Vulkan driver" in r.stderr
    assert "mesa-vulkan-drivers" in r.stderr


def test_open3d_installed_but_a_system_library_missing_names_the_library(monkeypatch):
    import builtins
    import importlib.util

    from tracker3d.errors import Tracker3DError
    from tracker3d.viewer import require_open3d

    real_import = builtins.__import__

    def broken(name, *a, **kw):
        if name == "open3d":
            raise ImportError("libusb-1.0.so.0: cannot open shared object file: No such file or directory")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", broken)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "open3d" else None)
    with pytest.raises(Tracker3DError) as e:
        require_open3d()
    msg = str(e.value)
    assert "libusb-1.0.so.0" in msg and "apt-get install libusb-1.0-0" in msg and "pip install" not in msg
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)  # really not installed: pip
    with pytest.raises(Tracker3DError, match=r"pip install 'tracker3d\[viewer\]'"):
        require_open3d()


def test_replay_overlay_and_plot(tmp_path, capsys):
    from tracker3d.sim import get_scene, write_sim_recording

    rec = write_sim_recording(get_scene("default").with_(seconds=3.0, flash_rate=0.0), tmp_path / "rec", seed=1)
    assert main(["replay", str(rec), "--overlay", str(tmp_path / "o.avi"), "--plot", str(tmp_path / "p.png"),
                 "--out", str(tmp_path / "t.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "90 overlay frames" in out
    cap = cv2.VideoCapture(str(tmp_path / "o.avi"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 90
    cap.set(cv2.CAP_PROP_POS_FRAMES, 89)
    ok, frame = cap.read()
    assert ok and frame.shape == (480, 1280, 3)
    # The last message's 3D tracks: each is marked in both halves near its reprojection.
    from tracker3d.outputs.files import read_jsonl
    last = read_jsonl(tmp_path / "t.jsonl")[-1]
    assert last["tracks"]
    for t in last["tracks"]:
        for cam, off in (("cam0", 0), ("cam1", 640)):
            if t.get(cam) is None:
                continue
            u, v = t[cam]["uv"]
            patch = frame[max(int(v) - 8, 0):int(v) + 9, max(int(u) - 8 + off, off):int(u) + 9 + off]
            assert (patch.min(axis=2) > 200).sum() >= 4, f"white 3D marker near track {t['id']} in {cam}"
    plot = cv2.imread(str(tmp_path / "p.png"))
    assert plot is not None and plot.shape[0] > 300
    n = int(out.split("p.png: ")[1].split()[0])
    assert n >= 3


def test_overlay_text_outline_lines_up_with_its_text():
    """The header's dark outline used to be a thicker stroke, which OpenCV advances further per
    glyph: by the end of "3D tracks 9" it had drifted a whole digit right ("99")."""
    from tracker3d.outputs.labels import put_text

    img = np.full((40, 420, 3), 128, np.uint8)
    put_text(img, "cam0  frame 12  t 0.40 s  3D tracks 9", (8, 18), (255, 255, 255), 0.5)
    white = np.where((img.min(axis=2) > 200).any(axis=0))[0]
    dark = np.where((img.max(axis=2) < 60).any(axis=0))[0]
    assert dark.max() <= white.max() + 2 and dark.min() >= white.min() - 2


def test_labels_of_nearby_objects_do_not_overlap():
    from tracker3d.outputs.labels import Label, place_labels, text_box

    # Five objects a few pixels apart, one label running off the right edge.
    labels = [Label(f"3D {i}", (300 + 3 * i, 200 + 2 * i), (255, 255, 255)) for i in range(5)]
    labels.append(Label("3D 99", (635, 100), (255, 255, 255)))
    orgs = place_labels(labels, (640, 480))
    boxes = [text_box(lab.text, o, lab.scale) for lab, o in zip(labels, orgs)]
    for a in range(len(boxes)):
        assert 0 <= boxes[a][0] and boxes[a][2] <= 640 and 0 <= boxes[a][1] and boxes[a][3] <= 480
        for b in range(a):
            A, B = boxes[a], boxes[b]
            assert not (A[0] < B[2] and B[0] < A[2] and A[1] < B[3] and B[1] < A[3]), f"labels {a} and {b} overlap"
    assert orgs[0] == labels[0].org, "a label with room keeps its place"
    assert all(abs(o[1] - lab.org[1]) <= 60 for lab, o in zip(labels, orgs)), "moved labels stay near"


def test_view_option_without_a_display_fails_at_once(monkeypatch):
    """`demo --view` (and live/replay --view) used to lose the viewer process silently."""
    from calib.rigs import make_rig
    from tracker3d.commands.common import start_viewer
    from tracker3d.errors import Tracker3DError

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(Tracker3DError, match="no display.*--snapshot.*Xvfb"):
        start_viewer("tcp://127.0.0.1:5556", make_rig())


def test_view_timeout_with_curve_keys_hints_at_the_keys(tmp_path):
    pytest.importorskip("open3d")
    import zmq

    if not zmq.has("curve"):
        pytest.skip("libzmq without CURVE")
    assert main(["keys", "--out", str(tmp_path / "keys")]) == 0
    r = _view(["--snapshot", str(tmp_path / "x.png"), "--frames", "2", "--timeout", "0.5",
               "--curve-keys", str(tmp_path / "keys")])
    assert r.returncode == 2 and "0 of 2 messages" in r.stderr and "server.key" in r.stderr \
        and "authorized/" in r.stderr


def test_empty_plot_says_no_3d_tracks(tmp_path, capsys):
    """It used to be an empty +-0.04 m frame, and the CLI said "0 3D trajectories"."""
    from tracker3d.sim import get_scene, write_sim_recording

    rec = write_sim_recording(get_scene("default").with_(seconds=1.0, flash_rate=0.0, n_objects=0), tmp_path / "rec",
                              seed=1)
    assert main(["replay", str(rec), "--plot", str(tmp_path / "p.png")]) == 0
    assert f"wrote {tmp_path / 'p.png'}: no 3D tracks to draw" in capsys.readouterr().out
    img = cv2.imread(str(tmp_path / "p.png"))
    h, w = img.shape[:2]
    band = img[int(0.2 * h):int(0.5 * h)]  # where "no 3D tracks" is written, in 35 % grey, in both views
    grey = (np.abs(band.astype(int) - 89).max(axis=2) < 20)
    assert grey[:, : w // 2].sum() > 150 and grey[:, w // 2:].sum() > 150


def _free_endpoint():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def test_recv_newest_skips_the_backlog_undecoded():
    import zmq

    from streams import TrackPublisher
    from streams.publisher import Subscriber

    ep = _free_endpoint()
    with TrackPublisher(ep) as pub, Subscriber(ep, context=zmq.Context()) as sub:
        time.sleep(0.3)
        for k in range(50):
            pub.publish(k, k / 30, [])
        time.sleep(0.3)
        assert sub.recv_newest(timeout=1.0)["seq"] == 49
        assert sub.skipped == 49 and sub.missed == 0 and sub.received == 1
        assert sub.recv_newest(timeout=0.05) is None
        pub.publish(50, 50 / 30, [])
        assert sub.recv_newest(timeout=1.0)["seq"] == 50 and sub.missed == 0


def test_viewer_redraws_only_for_new_messages_and_always_the_newest():
    """The window used to post a redraw 30 times a second whether or not a message came (Open3D
    redraws after every posted call: 60-80 % CPU idle), and to fall tens of seconds behind a fast
    publisher under load. A slow display here (80 ms a draw) facing a 200 Hz publisher."""
    import zmq

    from streams import TrackPublisher
    from streams.publisher import Subscriber
    from tracker3d.viewer.state import RedrawPump

    ep = _free_endpoint()
    woken, drawn, published = threading.Event(), [], []
    with TrackPublisher(ep) as pub, Subscriber(ep, context=zmq.Context()) as sub:
        pump = RedrawPump(sub, wake=woken.set, fps=30.0, poll_s=0.1)

        def display():
            while not pump.stop.is_set():
                if woken.wait(0.1):
                    woken.clear()
                    time.sleep(0.08)  # a slow draw
                    msg = pump.take()
                    if msg is not None:
                        drawn.append((time.monotonic(), msg["seq"]))

        threads = [threading.Thread(target=pump.run), threading.Thread(target=display)]
        for th in threads:
            th.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        for k in range(300):  # 1.5 s at 200 Hz
            pub.publish(k, k / 200, [])
            published.append((time.monotonic(), k))
            time.sleep(0.005)
        busy = time.monotonic() - t0
        time.sleep(0.5)
        wakes_after_publisher_stopped = pump.wakes
        time.sleep(1.0)  # silence: nothing new, nothing drawn
        pump.stop.set()
        for th in threads:
            th.join(5)
    assert pump.wakes == wakes_after_publisher_stopped, "woken with no new message"
    assert pump.wakes <= busy * 30 + 3, f"{pump.wakes} wakes in {busy:.1f} s: more than 30 a second"
    assert drawn and drawn[-1][1] == 299, "the last message is drawn"
    seqs = [s for _, s in drawn]
    assert seqs == sorted(set(seqs)), "each draw is a newer message"
    ts = np.array([t for t, _ in published])
    for t, s in drawn:  # what was drawn was at most ~0.5 s old when drawn (no backlog)
        newest = int(np.searchsorted(ts, t, side="right")) - 1
        assert newest - s <= 100, f"drew seq {s} when {newest} was out"
