"""The synthetic world: ground truth is exact, distractors and faults appear as configured."""

import numpy as np

from tracker3d.cli import main
from tracker3d.sim import SimStereoSource, SimWorld, get_scene, read_gt


def test_ground_truth_reprojects_onto_rendered_blobs():
    cfg = get_scene("walkers").with_(noise_sigma=0.0, flicker=0.0, texture=0.0, flash_rate=0, clutter_count=0,
                                     noise_track_rate=0, radius=(0.06, 0.09))
    world = SimWorld(cfg, seed=3)
    checked = 0
    for _ in range(20):
        pair, gt = world.step()
        for c, img in ((0, pair.img0), (1, pair.img1)):
            bg = world.backgrounds[c]
            diff = np.abs(img.astype(int) - bg.astype(int)).sum(axis=2).astype(float)
            uvs = np.array([r.uv0 if c == 0 else r.uv1 for r in gt])
            for r, (u, v) in zip(gt, uvs):
                vis = r.vis0 if c == 0 else r.vis1
                if not vis or not (25 < u < cfg.width - 25 and 25 < v < cfg.height - 25):
                    continue
                others = np.delete(uvs, gt.index(r), axis=0)
                if len(others) and np.min(np.linalg.norm(others - [u, v], axis=1)) < 40:
                    continue  # another blob nearby: centroid would mix them
                x0, y0 = int(u) - 20, int(v) - 20
                win = diff[y0:y0 + 41, x0:x0 + 41]
                ys, xs = np.mgrid[y0:y0 + 41, x0:x0 + 41]
                cu, cv_ = (win * xs).sum() / win.sum(), (win * ys).sum() / win.sum()
                assert abs(cu - u) < 0.1 and abs(cv_ - v) < 0.1, (r.id, c, cu - u, cv_ - v)
                checked += 1
    assert checked > 50


def test_ground_truth_is_consistent_with_calibration():
    world = SimWorld(get_scene("default"), seed=1)
    for _ in range(5):
        pair, gt = world.step()
    objs = [r for r in gt if r.kind == "object"]
    X = np.array([r.xyz for r in objs])
    uv0, uv1 = world.calib.project(X)
    np.testing.assert_allclose(uv0, [r.uv0 for r in objs], atol=1e-6)
    np.testing.assert_allclose(uv1, [r.uv1 for r in objs], atol=1e-6)


def test_distractors_and_faults_appear():
    cfg = get_scene("cluttered").with_(seconds=6.0, drop_prob=0.1, dark=(1, 2.0, 3.0), time_offset=0.01)
    src = SimStereoSource(SimWorld(cfg, seed=2))
    pairs = list(src)
    kinds = {r.kind for r in src.gt}
    assert kinds == {"object", "flash", "clutter", "noise"}
    flashes = {}
    for r in src.gt:
        if r.kind == "flash":
            flashes.setdefault(r.id, 0)
            flashes[r.id] += 1
    assert flashes and max(flashes.values()) <= 3
    dropped = sum(p.img0 is None for p in pairs) + sum(p.img1 is None for p in pairs)
    assert 0.05 < dropped / (2 * len(pairs)) < 0.15
    both = [p for p in pairs if p.img0 is not None and p.img1 is not None]
    assert all(abs(p.skew - 0.01) < 1e-9 for p in both)
    dark = [p for p in both if 2.0 <= p.t1 < 3.0]
    assert dark and all(p.img1.mean() < 15 for p in dark)
    assert all(r.vis1 == 0 for r in src.gt if 2.0 <= r.t + 0.01 < 3.0)
    # Objects come and go: more ids than live objects at a time.
    assert len({r.id for r in src.gt if r.kind == "object"}) > cfg.n_objects


def test_time_offset_renders_camera1_later():
    cfg = get_scene("walkers").with_(time_offset=0.02)
    w = SimWorld(cfg, seed=5)
    pair, gt = w.step()
    # Camera 1's ground truth must be the projection of the position at t0 + offset.
    w2 = SimWorld(cfg, seed=5)
    obj = w2.objects[0]
    X1 = obj.at(0.02)
    _, uv1 = w2.calib.project(X1[None])
    assert np.allclose(gt[0].uv1, uv1[0], atol=1e-6)
    assert not np.allclose(gt[0].uv1, w2.calib.project(obj.p[None])[1][0], atol=1e-3)


def test_cli_sim_and_replay(tmp_path, capsys):
    out = tmp_path / "rec"
    assert main(["sim", "--scene", "sparse", "--seconds", "1", "--seed", "3", "--out", str(out)]) == 0
    assert main(["replay", str(out)]) == 0
    text = capsys.readouterr().out
    assert "30 pairs" in text and "pairs/s" in text
    gt = read_gt(out / "gt.csv")
    assert (gt["kind"] == "object").sum() == 30
    assert main(["sim", "--out", str(tmp_path / "x"), "--set", "dark=1,2"]) == 2
    assert "cannot parse" in capsys.readouterr().err


def test_live_sim_source_paces_and_drops_for_slow_consumer():
    import time
    cfg = get_scene("sparse").with_(fps=50.0, seconds=1.0)
    src = SimStereoSource(SimWorld(cfg, seed=0), realtime=True)
    t = time.monotonic()
    got = []
    while (p := src.read()) is not None:
        got.append(p.index)
        time.sleep(0.045)  # slower than the 20 ms frame period
    assert time.monotonic() - t >= 0.9
    assert src.stats.overwritten > 10 and got == sorted(got)
    assert len({r.frame for r in src.gt}) == 50, "ground truth is kept for skipped frames too"


def test_sim_out_on_a_non_empty_folder_names_overwrite(tmp_path, capsys):
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "keep.txt").write_text("mine")
    assert main(["sim", "--scene", "sparse", "--seconds", "0.2", "--out", str(tmp_path / "rec")]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert main(["sim", "--scene", "sparse", "--seconds", "0.2", "--out", str(tmp_path / "rec"), "--overwrite"]) == 0
    assert (tmp_path / "rec" / "gt.csv").exists() and (tmp_path / "rec" / "keep.txt").read_text() == "mine"


def test_walkers_that_walk_away_leave_the_scene_and_are_replaced():
    """150 s of the default scene: objects that walk out of the useful volume are replaced (they
    used to walk away forever, 200 m off, still 'visible' in gt.csv, never replaced)."""
    cfg = get_scene("default")
    world = SimWorld(cfg, seed=0)
    far = 1.5 * cfg.volume_z[1]  # tracker3d.sim.world.FAR_FACTOR
    ids = set()
    for _ in range(int(150 * cfg.fps)):
        world._advance()  # motion only (rendering 4500 pairs is the demo's job)
        ids |= {o.id for o in world.objects}
        assert len(world.objects) == cfg.n_objects
        assert max(o.p[2] for o in world.objects) <= far + 0.1
    assert len(ids) > cfg.n_objects  # some left and new ones came in
    _, gt = world.step()
    for row in gt:
        if row.kind == "object" and (row.vis0 or row.vis1):
            assert row.xyz[2] <= far + 0.1


def test_a_stopped_sim_recording_says_so_in_meta_json(tmp_path, caplog):
    """Ctrl-C (or a full disk) in the middle of `tracker3d sim`: the folder holds the pairs written
    and meta.json says how many of how many (it said the seconds asked for), gt.csv the same frames."""
    import json

    import pytest

    from streams import RecordingReader
    from tracker3d.sim import write_sim_recording

    cfg = get_scene("default").with_(seconds=1.0, width=320, height=240)

    def stop_after(frames, n=7):
        for k in frames:
            if k == n:
                raise KeyboardInterrupt
            yield k

    with caplog.at_level("WARNING"), pytest.raises(KeyboardInterrupt):
        write_sim_recording(cfg, tmp_path / "rec", progress=stop_after)
    meta = json.loads((tmp_path / "rec" / "meta.json").read_text())
    assert (meta["pairs"], meta["pairs_asked"], meta["complete"]) == (7, cfg.n_frames, False)
    assert any("stopped after 7 of 30 pairs" in r.getMessage() for r in caplog.records)
    src = RecordingReader(tmp_path / "rec")
    n = 0
    while src.read() is not None:
        n += 1
    src.close()
    assert n == 7 and set(read_gt(tmp_path / "rec" / "gt.csv")["frame"].tolist()) == set(range(7))
    write_sim_recording(cfg, tmp_path / "whole")
    meta = json.loads((tmp_path / "whole" / "meta.json").read_text())
    assert (meta["pairs"], meta["pairs_asked"], meta["complete"]) == (30, 30, True)


def test_sim_out_that_is_a_file_or_goes_through_one_is_one_line(tmp_path, capsys):
    """--out naming a file, or a folder inside a file, is refused in one line (it was a traceback),
    as is a --seconds that gives no pair."""
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile", tmp_path / "afile" / "rec"):
        assert main(["sim", "--seconds", "1", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--out" in err and "Traceback" not in err
    assert main(["sim", "--seconds", "0.01", "--out", str(tmp_path / "short")]) == 2
    assert "gives no pair" in capsys.readouterr().err and not (tmp_path / "short").exists()
