"""The batched 3D filter (stereo.bank.KalmanBank, and Tracker3D on it) against one filterpy
KalmanFilter per track: same states and covariances to 1e-9 through births, deaths, stereo
(triangulated point) and one-view (extended Kalman, pixel) updates, and the same RTS smoothing."""
import numpy as np
import pytest
from filterpy.kalman import KalmanFilter, rts_smoother

from calib.rigs import make_rig
from calib.triangulate import _project_ideal
from tracker3d.stereo.bank import KalmanBank
from tracker3d.stereo.track3d import PairObservation, Track3DConfig, Tracker3D

TOL = dict(rtol=1e-9, atol=1e-9)


def _spd(rng, k, d, scale):
    A = rng.normal(size=(k, d, d)) * scale
    return A @ np.transpose(A, (0, 2, 1)) + np.eye(d) * scale ** 2


def _reference(x0, P0):
    kf = KalmanFilter(dim_x=len(x0), dim_z=3)
    kf.x, kf.P = x0.reshape(-1, 1).copy(), P0.copy()
    kf.H = np.hstack([np.eye(3), np.zeros((3, len(x0) - 3))])
    return kf


def _ekf_reference(kf: KalmanFilter, y, H, R) -> None:
    """filterpy's update on the linearised measurement z = y + H x (its innovation is then y)."""
    kf.update((y + H @ kf.x[:, 0]).reshape(-1, 1), R=R, H=H)


@pytest.mark.parametrize("dim", [6, 9])
def test_the_bank_equals_one_filterpy_filter_per_track(dim):
    rng = np.random.default_rng(dim)
    bank = KalmanBank(dim, capacity=2)  # grows while tracks are born
    refs, views, gone = [], [], []
    births = deaths = stereo = oneview = refused = 0
    for step in range(60):
        k = int(rng.integers(0, 4)) if step else 5
        if k:
            x0 = rng.normal(size=(k, dim))
            P0 = _spd(rng, k, dim, 0.3)
            views += bank.add(x0, P0)
            refs += [_reference(a, b) for a, b in zip(x0, P0)]
            births += k
        dt = float(rng.uniform(0.01, 0.1))
        F = np.eye(dim)
        F[:3, 3:6] = np.eye(3) * dt
        if dim == 9:
            F[3:6, 6:] = np.eye(3) * dt
        Q = _spd(rng, 1, dim, 0.05)[0]
        bank.predict(F, Q)
        for kf in refs:
            kf.predict(F=F, Q=Q)
        rows = np.flatnonzero(rng.random(len(refs)) < 0.5)
        z = bank.x[rows, :3] + rng.normal(size=(len(rows), 3)) * 0.1
        R = _spd(rng, len(rows), 3, 0.05)
        bank.update_position(rows, z, R)
        for r, zz, RR in zip(rows, z, R):
            refs[r].update(zz.reshape(3, 1), R=RR)
        stereo += len(rows)
        # One view on other rows: a pixel-like innovation through a random Jacobian, gated.
        rows = np.setdiff1d(np.flatnonzero(rng.random(len(refs)) < 0.5), rows)
        H = np.zeros((len(rows), 2, dim))
        H[:, :, :3] = rng.normal(size=(len(rows), 2, 3)) * 50
        y = rng.normal(size=(len(rows), 2)) * rng.choice([1.0, 30.0], size=(len(rows), 1))
        Rm = np.eye(2) * rng.uniform(0.2, 2.0, size=(len(rows), 1, 1))
        ok = bank.update_linearised(rows, y, H, Rm, gate_chi2=13.8)
        for r, yy, HH, RR, good in zip(rows, y, H, Rm, ok):
            S = HH @ refs[r].P @ HH.T + RR
            assert good == (yy @ np.linalg.solve(S, yy) <= 13.8)
            if good:
                _ekf_reference(refs[r], yy, HH, RR)
        oneview += int(ok.sum())
        refused += int((~ok).sum())
        keep = rng.random(len(refs)) > 0.1
        bank.keep(keep)
        gone += [(v, kf) for v, kf, kp in zip(views, refs, keep) if not kp]
        deaths += int((~keep).sum())
        refs = [kf for kf, kp in zip(refs, keep) if kp]
        views = [v for v, kp in zip(views, keep) if kp]
        assert len(bank) == len(refs)
        for i, (v, kf) in enumerate(zip(views, refs)):
            assert v.row == i
            np.testing.assert_allclose(v.x, kf.x, **TOL)
            np.testing.assert_allclose(v.P, kf.P, **TOL)
    assert births > 60 and deaths > 20 and stereo > 100 and oneview > 50 and refused > 5
    for v, kf in gone:  # a deleted track keeps its last state
        assert v.bank is None
        np.testing.assert_allclose(v.x, kf.x, **TOL)
        np.testing.assert_allclose(v.P, kf.P, **TOL)


def _scene_pairs(rig, rng, t, objects, k):
    """This frame's observations of the live objects: stereo (triangulated point and its
    covariance), camera 0 or camera 1 alone, both pixels but no point, or nothing."""
    out = []
    for j, (born, dies, X0, V) in enumerate(objects):
        if not born <= k < dies:
            continue
        X = X0 + V * t
        uv0, uv1 = rig.project(X[None])
        uv0 = uv0[0] + rng.normal(size=2) * 0.5
        uv1 = uv1[0] + rng.normal(size=2) * 0.5
        kind = rng.choice(["stereo", "cam0", "cam1", "pixels", "none"], p=[0.6, 0.12, 0.12, 0.08, 0.08])
        if k == born:
            kind = "stereo"
        if kind == "none":
            continue
        sigma = None if rng.random() < 0.5 else float(rng.uniform(0.4, 3.0))
        p = PairObservation(j, 100 + j, kind != "cam1", kind != "cam0", uv0, uv1, 0.9, sigma_px=sigma)
        if kind == "stereo":
            p.cov = _spd(rng, 1, 3, 0.01)[0]
            p.xyz = X + rng.multivariate_normal(np.zeros(3), p.cov)
        out.append(p)
    return out


@pytest.mark.parametrize("model", ["cv", "ca"])
def test_tracker3d_states_equal_a_filterpy_replay_of_its_updates(model):
    """Tracker3D on many objects that are born, observed in stereo or by one camera, and lost;
    each track's filter is replayed with filterpy (predict with the tracker's F, Q; update with
    R = the point's covariance, or the pixel's linearised measurement) from what the track got."""
    rig = make_rig()
    rng = np.random.default_rng(7)
    n, frames, fps = 24, 70, 30.0
    objects = []
    for j in range(n):
        born = int(rng.integers(0, 40))
        X0 = np.array([-0.9 + 0.45 * (j % 5), -0.5 + 0.35 * (j // 5), float(rng.uniform(3.0, 4.5))])
        objects.append((born, born + int(rng.integers(8, 40)), X0, rng.normal(size=3) * [0.1, 0.1, 0.05]))
    t3 = Tracker3D(rig, Track3DConfig(model=model), keep_log=True)
    refs: dict[int, KalmanFilter] = {}
    logs: dict[int, tuple[list, list, list, list]] = {}
    counts = dict(stereo=0, cam0=0, cam1=0, births=0, deaths=0)
    prev_t = None
    for k in range(frames):
        t = k / fps + float(rng.uniform(-0.003, 0.003))
        obs = _scene_pairs(rig, rng, t, objects, k)
        t3.update(t, obs, frame=k)
        F, Q = t3._FQ(t - prev_t if prev_t is not None else 0.0)
        by_pair = {(p.id0, p.id1): p for p in obs}
        live = {tr.id: tr for tr in t3.tracks}
        for i in list(refs):
            if i not in live:
                del refs[i]
                counts["deaths"] += 1
        for tr in t3.tracks:
            p = by_pair[tr.pair] if tr.pair in by_pair else None
            if tr.id not in refs:  # born now: the filter starts where the tracker started it
                assert tr.born_t == t and p is not None and p.xyz is not None
                refs[tr.id] = _reference(np.r_[p.xyz, np.zeros(t3.dim - 3)], tr.kf.P)
                logs[tr.id] = ([], [], [], [])
                counts["births"] += 1
            else:
                kf = refs[tr.id]
                kf.predict(F=F, Q=Q)
                if tr.last_stereo_t == t:
                    kf.update(p.xyz.reshape(3, 1), R=p.cov)
                    counts["stereo"] += 1
                elif tr.last_t == t:  # one view, or both pixels without a point: camera 0 first
                    for c, (cam, R, T) in enumerate(((rig.cam0, np.eye(3), np.zeros(3)), (rig.cam1, rig.R, rig.T))):
                        if getattr(tr, f"uv{c}") is getattr(p, f"uv{c}"):
                            pred, J = _project_ideal(cam.K, (R @ kf.x[:3, 0] + T)[None])
                            H = np.hstack([J[0] @ R, np.zeros((2, t3.dim - 3))])
                            y = cam.undistort_points(getattr(p, f"uv{c}")[None])[0] - pred[0]
                            s = t3.cfg.pixel_sigma if p.sigma_px is None else p.sigma_px
                            _ekf_reference(kf, y, H, np.eye(2) * s ** 2)
                            counts[f"cam{c}"] += 1
            kf = refs[tr.id]
            np.testing.assert_allclose(tr.kf.x, kf.x, **TOL)
            np.testing.assert_allclose(tr.kf.P, kf.P, **TOL)
            for lst, v in zip(logs[tr.id], (kf.x[:, 0].copy(), kf.P.copy(), F, Q)):
                lst.append(v)
        prev_t = t
    assert counts["births"] >= 20 and counts["deaths"] >= 10 and counts["stereo"] > 300, counts
    assert counts["cam0"] > 30 and counts["cam1"] > 30, counts
    t3.finish()
    smoothed = 0
    for tr in t3.finished:  # the logged filter states smooth as filterpy smooths the replayed ones
        xs, Ps, Fs, Qs = (np.array(v) for v in logs[tr.id])
        np.testing.assert_allclose(np.array(tr.log_x), xs, **TOL)
        if len(xs) >= 2:
            frames_, xs_s, Ps_s = tr.smoothed()
            ref_x, ref_P, _, _ = rts_smoother(xs, Ps, Fs, Qs)
            np.testing.assert_allclose(xs_s, ref_x, **TOL)
            np.testing.assert_allclose(Ps_s, ref_P, **TOL)
            smoothed += 1
    assert smoothed >= 20


def test_duplicate_pairs_from_the_kd_tree_are_all_close_pairs_in_order():
    rng = np.random.default_rng(3)
    X = rng.uniform(-1, 1, size=(400, 3))
    X[50] = X[7] + [0.1499999, 0, 0]  # just inside 0.15 m
    X[60] = X[8] + [0.1500001, 0, 0]  # just outside
    close = np.linalg.norm(X[:, None] - X[None], axis=2) < 0.15
    want = list(zip(*np.nonzero(np.triu(close, 1))))
    got = Tracker3D._close_pairs(X, 0.15)
    assert got == [(int(i), int(j)) for i, j in want] and (7, 50) in got and (8, 60) not in got
    X[3] = np.nan  # a non-finite state does not break it
    assert Tracker3D._close_pairs(X, 0.15) == [p for p in got if 3 not in p]


def test_a_takeover_picks_the_nearest_candidate_within_the_gate_as_a_full_search_does():
    """The bound that spares most candidates' solves never drops the one a full search picks."""
    rig = make_rig()
    rng = np.random.default_rng(5)
    t3 = Tracker3D(rig)
    pairs = [PairObservation(i, i, True, True, np.zeros(2), np.zeros(2), 0.9,
                             xyz=np.array([rng.uniform(-4, 4), rng.uniform(-1, 1), rng.uniform(3, 12)]),
                             cov=_spd(rng, 1, 3, 0.03)[0]) for i in range(150)]
    t3.update(0.0, pairs)
    t3.update(1 / 30, [])  # all coast
    rest = [PairObservation(1000 + i, 1000 + i, True, True, np.zeros(2), np.zeros(2), 0.9,
                            xyz=p.xyz + rng.normal(size=3) * rng.choice([0.02, 0.1, 1.0]), cov=_spd(rng, 1, 3, 0.03)[0])
            for i, p in enumerate(pairs[:60])]
    cands = t3._takeover_d2(rest, {}, {}, t3.t)
    rows = np.arange(len(t3.tracks))
    picked = 0
    for p in rest:
        full = t3.bank.position_d2(rows, np.repeat(p.xyz[None], len(rows), 0), np.repeat(p.cov[None], len(rows), 0))
        r, d2 = cands[id(p)]
        assert len(r) < len(rows) / 2  # most are ruled out without a solve
        if full.min() < t3.cfg.gate_chi2:
            assert r[np.argmin(d2)] == np.argmin(full) and d2.min() == full.min()
            picked += 1
        else:
            assert not len(d2) or d2.min() >= t3.cfg.gate_chi2
    assert 10 < picked < 60


def test_states_of_live_and_finished_tracks_are_their_filters_states():
    rig = make_rig()
    t3 = Tracker3D(rig, keep_log=True)
    for k in range(5):
        obs = [PairObservation(i, i, True, True, np.zeros(2), np.zeros(2), 0.9, xyz=np.array([0.5 * i, 0.0, 4.0 + 0.01 * k]),
                               cov=np.eye(3) * 1e-3) for i in range(3 if k < 4 else 2)]
        t3.update(k / 30, obs)
    X, V, C = t3.states(t3.tracks)
    assert np.array_equal(X, [tr.xyz for tr in t3.tracks]) and np.array_equal(C, [tr.cov for tr in t3.tracks])
    t3.finish()
    X, V, C = t3.states(t3.finished)
    assert len(X) == 3 and np.array_equal(V, [tr.vel for tr in t3.finished])
