"""3D tracks: a Kalman filter per object on triangulated stereo pairs, all of them rows of one
KalmanBank (stereo.bank: stacked arrays, filterpy's arithmetic) predicted and updated in batch.

Camera 0 frame, metres, seconds. Each frame, every 3D track is predicted to the pair's time; a
track whose 2D pair saw it in both views is updated with the triangulated point (its first-order
covariance is the measurement noise), a track seen in one view only gets an extended-Kalman
update from that view's pixel (so a camera going dark does not stop a track), and a track seen
in neither coasts until `max_coast_s`. Measurements outside the Mahalanobis gate are refused.
A new pair whose triangulated point continues a coasting 3D track (a 2D ID switch in one camera)
takes over that track instead of starting a new ID. Finished tracks can be RTS-smoothed
(filterpy's rts_smoother) for offline replay.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy.spatial import cKDTree

from calib import StereoCalibration
from calib.triangulate import _project_ideal

from ..track2d.tracker import median0
from .bank import BankRow, KalmanBank
from .boxcut import axis_sigma

log = logging.getLogger(__name__)


@dataclass
class Track3DConfig:
    model: str = "cv"  # "cv" constant velocity, "ca" constant acceleration
    accel_std: float = 4.0  # m/s^2, white acceleration noise of the CV model (at noise_ref_dt steps)
    jerk_std: float = 40.0  # m/s^3, white jerk noise of the CA model (at noise_ref_dt steps)
    noise_ref_dt: Optional[float] = 1 / 30  # continuous white noise of density std^2 x this (the same
    # uncertainty per second at any frame rate); None: piecewise constant per step
    gate_chi2: float = 30.0  # Mahalanobis^2 beyond which a 3D measurement is refused (chi2(3) 99.9 % is 16.3)
    gate_chi2_2d: float = 13.8  # chi2(2) at 99.9 % for one-view updates
    max_coast_s: float = 0.5  # a track without a stereo update this long is deleted ...
    max_coast_frames: float = 2.0  # ... but may always miss this many frame intervals (low rates)
    report_coast_s: float = 0.2  # a track seen by neither camera is still reported this long
    max_pos_std: float = 0.5  # m: a track whose position is this uncertain is deleted ...
    max_pos_rel: Optional[float] = None  # ... unless that is within this many times its last triangulation's
    # std (None: chosen by the pipeline, by where the boxes come from)
    # (a wide-baseline rig sees people 30 m away: one triangulation is decimetres uncertain)
    init_vel_std: float = 2.0  # m/s
    pixel_sigma: float = 0.5  # centroid noise assumed for the one-view update, pixels
    min_updates: int = 2  # stereo updates before a track is reported (a 3-frame glint never is) ...
    report_evidence_s: float = 0.5  # ... unless its first pair was seen jointly this long (the association's
    # window): at low frame rates min_common joint observations span a second, no glint
    report_pos_std: Optional[float] = None  # m: a track without a stereo update now is reported only while
    # its position is at most this uncertain (sqrt of the trace), None: always
    duplicate_m: float = 0.15  # a younger track this close to an older one is a duplicate (deleted)
    # Planar motion (people, vehicles, animals on the ground): the vertical (the calibration world's
    # z axis) gets this acceleration noise instead of accel_std/jerk_std, so a track's height stays
    # put and one view's pixel alone fixes its position: a one-view update then keeps it alive like
    # a stereo one. None: isotropic (no ground). Needs `up`, set by the pipeline from the calibration.
    vertical_accel_std: Optional[float] = None  # m/s^2 (CV) or m/s^3 (CA)
    init_vertical_vel_std: float = 0.1  # m/s: with planar motion, a new track's vertical speed uncertainty


@dataclass
class PairObservation:
    """One associated pair this frame: 2D track ids, whether each view observed its object now,
    and pixel positions (distorted) at the common time t (camera 1 moved to camera 0's time)."""

    id0: int
    id1: int
    seen0: bool
    seen1: bool
    uv0: np.ndarray
    uv1: np.ndarray
    persistence: float
    xyz: Optional[np.ndarray] = None  # triangulated (both views seen), camera 0 frame
    cov: Optional[np.ndarray] = None
    truncated: bool = False  # a view's blob touches the image border (not triangulated)
    # Per view, per image axis (x, y): extra std (pixels) of the box centre where the box was cut by
    # the image border and completed (boxcut.complete_boxes); inf: that coordinate is unknown
    cut_sigma: tuple[tuple[float, float], tuple[float, float]] = ((0.0, 0.0), (0.0, 0.0))
    size_px: float = 0.0  # the boxes' size, rms over the views of sqrt(w h), pixels
    evidence_s: float = 0.0  # seconds over which the association saw the pair jointly
    track3d: Optional[int] = None  # the 3D track that claimed these detections (claim.py), or None: a 2D pair
    sigma_px: Optional[float] = None  # pixel noise of a one-view update (None: the config's pixel_sigma)
    size_m: float = 0.0  # the object's size in metres (sqrt of box area x depth / f), both views seen
    view_size_px: tuple[float, float] = (0.0, 0.0)  # each view's box size sqrt(w h), pixels
    claim_d2: tuple[float, float] = (math.inf, math.inf)  # a claim's Mahalanobis^2 in each view
    claimed: tuple[bool, bool] = (False, False)  # which views' pixels a 3D track claimed (not its 2D pair's)


@dataclass
class Track3D:
    id: int
    kf: BankRow  # its filter (x (dim, 1), P (dim, dim)): a row of the tracker's KalmanBank while it lives
    pair: tuple[int, int]
    born_t: float
    last_t: float  # last update with any view
    last_stereo_t: float
    updates: int = 0
    state: str = "tracked"
    meas_std: float = 0.0  # sqrt(trace) of the last triangulated point's covariance, metres
    persistence: float = 0.0
    uv0: Optional[np.ndarray] = None
    uv1: Optional[np.ndarray] = None
    evidence_s: float = 0.0  # seconds of joint 2D evidence of the pair that started it
    size_m: float = 0.0  # object size (sqrt of box area, scaled to metres by depth); 0 = unknown
    # For RTS smoothing: per step (t, x, P, F, Q) after the update.
    log_t: list = field(default_factory=list)
    log_frame: list = field(default_factory=list)
    log_x: list = field(default_factory=list)
    log_P: list = field(default_factory=list)
    log_F: list = field(default_factory=list)
    log_Q: list = field(default_factory=list)
    log_stereo: list = field(default_factory=list)  # per step: triangulated by both views then
    log_last_t: list = field(default_factory=list)  # per step: time of the last update by any view, s

    @property
    def xyz(self) -> np.ndarray:
        return self.kf.x[:3, 0].copy()

    @property
    def vel(self) -> np.ndarray:
        return self.kf.x[3:6, 0].copy()

    @property
    def cov(self) -> np.ndarray:
        return self.kf.P[:3, :3].copy()

    def smoothed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(frames, RTS-smoothed states (n, dim), covariances (n, dim, dim)) over the track's life
        (filterpy's rts_smoother over the logged filter states)."""
        xs = np.array(self.log_x)
        Ps = np.array(self.log_P)
        if len(xs) < 2:
            return np.array(self.log_frame), xs, Ps
        # Imported here: filterpy imports scipy.stats (0.3 s), which every command paid at start-up
        # (`tracker3d --help` 1.38 s) for the --smooth/--offline replays that use it.
        from filterpy.kalman import rts_smoother

        xs_s, Ps_s, _, _ = rts_smoother(xs, Ps, np.array(self.log_F), np.array(self.log_Q))
        return np.array(self.log_frame), xs_s, Ps_s


class Tracker3D:
    def __init__(self, calib: StereoCalibration, config: Optional[Track3DConfig] = None, keep_log: bool = False):
        self.calib = calib
        self.cfg = config or Track3DConfig()
        if self.cfg.model not in ("cv", "ca"):
            raise ValueError(f"3D model {self.cfg.model!r}: expected cv or ca")
        self.dim = 6 if self.cfg.model == "cv" else 9
        self.bank = KalmanBank(self.dim)  # row i: the filter of tracks[i]
        self.tracks: list[Track3D] = []
        self.finished: list[Track3D] = []  # deleted tracks (kept when keep_log)
        self.keep_log = keep_log
        self.next_id = 1
        self.t: Optional[float] = None
        self.intervals = np.zeros(0)  # the last frame intervals, seconds
        self.suppressed: dict[tuple[int, int], float] = {}  # pair -> time until which it starts no track
        self.max_pos_rel = self.cfg.max_pos_rel or 0.0  # the pipeline resolves None
        self.up: Optional[np.ndarray] = None  # unit vertical (world z) in camera 0's frame, for planar motion
        if self.cfg.vertical_accel_std is not None:
            if not calib.has_world:
                raise ValueError("planar motion needs a calibration with a world frame (R_world, t_world) "
                                 "whose z axis is the vertical")
            self.up = np.asarray(calib.R_world, float)[:, 2].copy()
        # This frame's observations, applied in batch (_flush): track id -> (track, pair, its Mahalanobis^2 or None)
        self._pending: dict[int, tuple[Track3D, PairObservation, Optional[float]]] = {}
        self._flushed = False  # a track's state changed since this frame's prediction (precomputed gates stale)
    # ---- model -------------------------------------------------------------------------------------
    def _FQ(self, dt: float) -> tuple[np.ndarray, np.ndarray]:
        if self.cfg.model == "cv":
            F = np.eye(6)
            F[:3, 3:] = np.eye(3) * dt
            q = self.cfg.accel_std ** 2
            if self.cfg.noise_ref_dt is None:
                G = np.array([[dt * dt / 2], [dt]])
                blk = (G @ G.T) * q
            else:
                blk = q * self.cfg.noise_ref_dt * np.array([[dt ** 3 / 3, dt * dt / 2], [dt * dt / 2, dt]])
        else:
            F = np.eye(9)
            F[:3, 3:6] = np.eye(3) * dt
            F[:3, 6:] = np.eye(3) * dt * dt / 2
            F[3:6, 6:] = np.eye(3) * dt
            q = self.cfg.jerk_std ** 2
            if self.cfg.noise_ref_dt is None:
                G = np.array([[dt ** 3 / 6], [dt * dt / 2], [dt]])
                blk = (G @ G.T) * q
            else:
                blk = q * self.cfg.noise_ref_dt * np.array([[dt ** 5 / 20, dt ** 4 / 8, dt ** 3 / 6],
                                                            [dt ** 4 / 8, dt ** 3 / 3, dt * dt / 2],
                                                            [dt ** 3 / 6, dt * dt / 2, dt]])
        k = blk.shape[0]
        # Per-axis shape of the noise: isotropic, or (planar) the vertical scaled down.
        A = np.eye(3)
        if self.cfg.vertical_accel_std is not None and self.up is not None:
            u = self.up.reshape(3, 1)
            A = A - (1.0 - (self.cfg.vertical_accel_std ** 2) / q) * (u @ u.T)
        Q = np.zeros((self.dim, self.dim))
        for a in range(k):
            for b in range(k):
                Q[a * 3:(a + 1) * 3, b * 3:(b + 1) * 3] = A * blk[a, b]
        return F, Q

    @property
    def planar(self) -> bool:
        return self.cfg.vertical_accel_std is not None and self.up is not None

    def predicted(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Every live track's position (n,3, camera 0 frame, metres) and its covariance (n,3,3)
        predicted to time t (seconds), without changing the tracks."""
        if not self.tracks:
            return np.zeros((0, 3)), np.zeros((0, 3, 3))
        x, P = self.bank.x, self.bank.P
        dt = 0.0 if self.t is None else max(0.0, t - self.t)
        if dt > 0:
            F, Q = self._FQ(dt)
            x = x @ F.T
            P = F @ P @ F.T + Q
        return x[:, :3].copy(), P[:, :3, :3].copy()

    def states(self, tracks: list[Track3D]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Live tracks' positions (n,3), velocities (n,3) and position covariances (n,3,3), camera 0
        frame, metres and seconds (copies)."""
        if all(tr.kf.bank is self.bank for tr in tracks):
            rows = np.array([tr.kf.row for tr in tracks], np.int64)
            x, P = self.bank.x[rows], self.bank.P[rows]
        else:  # finished tracks among them: their own copies
            x = np.array([tr.kf.x[:, 0] for tr in tracks]).reshape(-1, self.dim)
            P = np.array([tr.kf.P for tr in tracks]).reshape(-1, self.dim, self.dim)
        return np.ascontiguousarray(x[:, :3]), np.ascontiguousarray(x[:, 3:6]), np.ascontiguousarray(P[:, :3, :3])

    def _init_state(self, xyz: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A new track's state (dim,) and covariance (dim, dim) at a triangulated point."""
        x = np.zeros(self.dim)
        x[:3] = xyz
        P = np.eye(self.dim) * self.cfg.init_vel_std ** 2
        P[:3, :3] = cov
        if self.planar:  # on the ground the vertical speed starts near zero too
            u = self.up.reshape(3, 1)
            P[3:6, 3:6] -= (self.cfg.init_vel_std ** 2 - self.cfg.init_vertical_vel_std ** 2) * (u @ u.T)
        if self.dim == 9:
            P[6:, 6:] = np.eye(3) * 25.0
        return x, P

    def _pos_std(self) -> np.ndarray:
        """Each live track's position uncertainty sqrt(trace(P_pos)), metres (n,)."""
        return np.sqrt(np.trace(self.bank.P[:, :3, :3], axis1=1, axis2=2))

    # ---- per frame ---------------------------------------------------------------------------------
    def update(self, t: float, pairs: list[PairObservation], frame: int = -1) -> list[Track3D]:
        """Advance to time t (seconds) with this frame's associated pairs; returns live tracks.
        frame (the pair's index) labels the smoothing log.

        Decisions (which pair updates which track) are taken pair by pair on the predicted states;
        the updates they call for are applied together afterwards (_flush), as each track gets at
        most one observation per frame."""
        dt = 0.0 if self.t is None else max(0.0, t - self.t)
        if dt > 0:
            self.intervals = np.append(self.intervals[-15:], dt)
        self.t = t
        F, Q = self._FQ(dt)
        max_coast = max(self.cfg.max_coast_s,
                        self.cfg.max_coast_frames * (float(median0(self.intervals)) if len(self.intervals) else 0.0))
        if dt > 0:
            self.bank.predict(F, Q)
        self._pending, self._flushed = {}, False
        used: set[int] = set()
        rest = []
        by_id = {tr.id: tr for tr in self.tracks}
        claims = [p for p in pairs if p.track3d is not None]
        if claims:
            pairs = [p for p in pairs if p.track3d is None]
            for p in claims:
                tr = by_id.get(p.track3d)
                if tr is None or tr.id in used:
                    continue
                used.add(tr.id)
                tr.pair = (p.id0 if p.seen0 and p.id0 >= 0 else tr.pair[0],
                           p.id1 if p.seen1 and p.id1 >= 0 else tr.pair[1])
                self._observe(tr, p)
        by_pair = {tr.pair: tr for tr in self.tracks if tr.id not in used}
        by_id0 = {tr.pair[0]: tr for tr in self.tracks}
        by_id1 = {tr.pair[1]: tr for tr in self.tracks}
        # First the pairs that continue their own 3D track, so that a new pair's takeover (below)
        # never takes a track whose pair is here this frame (it would get two updates, and its own
        # pair's object none).
        own = [by_pair.get((p.id0, p.id1)) for p in pairs]
        gated = [k for k, (p, tr) in enumerate(zip(pairs, own)) if tr is not None and p.xyz is not None]
        d2_own = dict(zip(gated, self._gate_d2([own[k] for k in gated], [pairs[k] for k in gated])))
        for k, (p, tr) in enumerate(zip(pairs, own)):
            d2 = None
            if tr is not None and p.xyz is not None:
                if tr.id in self._pending:  # a second pair with the same 2D ids: see its first update
                    self._flush(t)
                d2 = d2_own[k] if not self._flushed else self._mahalanobis(tr, p.xyz, p.cov)
                if d2 > self.cfg.gate_chi2:
                    # The pair now sees something else (both 2D tracks switched objects): the 3D track
                    # lets go of it and coasts; the pair continues another track or starts a new one.
                    used.add(tr.id)
                    tr.pair = (-1, -1)
                    tr = None
            if tr is None:
                rest.append(p)
                continue
            used.add(tr.id)
            self._observe(tr, p, d2)
        takeover = self._takeover_d2(rest, by_id0, by_id1, t)
        used_row = np.array([tr.id in used for tr in self.tracks], bool)
        for p in rest:  # new pairs: a 2D ID switch continues a track, or a new track starts
            tr, d2 = self._takeover(p, takeover.get(id(p)), used_row)
            if tr is None:
                if p.xyz is not None and self.suppressed.get((p.id0, p.id1), -math.inf) < t:
                    self._start(p, t)
                continue
            used.add(tr.id)
            self._observe(tr, p, d2)
        self._flush(t)
        self._drop_duplicates(t)
        # Coast or delete.
        in_view = self._in_view()
        pos_std = self._pos_std()
        n = len(self.tracks)
        last = np.fromiter((tr.last_t for tr in self.tracks), float, n)
        since = t - (last if self.planar else np.fromiter((tr.last_stereo_t for tr in self.tracks), float, n))
        # fmax: Python's max(limit, nan) is the limit
        limit = np.fmax(self.cfg.max_pos_std, self.max_pos_rel * np.fromiter((tr.meas_std for tr in self.tracks),
                                                                            float, n))
        alive = ~((since > max_coast) | ~in_view | (pos_std > limit))
        for i, (tr, stale, a) in enumerate(zip(self.tracks, (last < t).tolist(), alive.tolist())):
            if stale:
                tr.state = "coasting"
            if not a:
                tr.state = "lost"
                continue
            if self.keep_log:
                tr.log_t.append(t)
                tr.log_frame.append(frame)
                tr.log_x.append(self.bank.x[i].copy())
                tr.log_P.append(self.bank.P[i].copy())
                tr.log_F.append(F.copy())
                tr.log_Q.append(Q.copy())
                tr.log_stereo.append(tr.last_stereo_t == t)
                tr.log_last_t.append(tr.last_t)
        self._keep(alive)
        return self.tracks

    def _keep(self, alive: np.ndarray) -> None:
        """Keep the tracks (and bank rows) where alive; the others are finished (kept when keep_log)."""
        if alive.all():
            return
        if self.keep_log:
            self.finished.extend(tr for tr, a in zip(self.tracks, alive) if not a)
        self.bank.keep(alive)
        self.tracks = [tr for tr, a in zip(self.tracks, alive) if a]

    def _drop_duplicates(self, t: float) -> None:
        """Two 3D tracks on one object (a split blob or a second pairing of the same 2D track in
        one camera): the younger one goes, and its pair starts no new track for a second."""
        if len(self.tracks) < 2:
            return
        drop = set()
        for i, j in self._close_pairs(self.bank.x[:, :3], self.cfg.duplicate_m):
            a, b = self.tracks[i], self.tracks[j]
            young = a if (a.updates, -a.born_t) < (b.updates, -b.born_t) else b
            if young.updates < 10 and young.id not in drop:
                drop.add(young.id)
                self.suppressed[young.pair] = t + 1.0
        if drop:  # with keep_log their reported frames are RTS-smoothed like every other track's
            self._keep(np.array([tr.id not in drop for tr in self.tracks], bool))
        self.suppressed = {k: v for k, v in self.suppressed.items() if v >= t}

    @staticmethod
    def _close_pairs(X: np.ndarray, r: float) -> list[tuple[int, int]]:
        """Index pairs i < j (in row-major order) of points X (n,3) closer than r, through a k-d
        tree (a slightly wider query, then the exact distance), not all n^2 distances."""
        if not np.isfinite(X).all():  # a k-d tree takes finite points only
            close = np.linalg.norm(X[:, None] - X[None], axis=2) < r
            return list(zip(*np.nonzero(np.triu(close, 1))))
        cand = cKDTree(X).query_pairs(r * (1 + 1e-6) + 1e-12, output_type="ndarray")
        if not len(cand):
            return []
        cand = np.sort(cand, axis=1)
        cand = cand[np.lexsort((cand[:, 1], cand[:, 0]))]
        i, j = cand[:, 0], cand[:, 1]
        keep = np.linalg.norm(X[i] - X[j], axis=1) < r
        return list(zip(i[keep].tolist(), j[keep].tolist()))

    def finish(self) -> None:
        """End of input: every live track is finished (for smoothing)."""
        self._keep(np.zeros(len(self.tracks), bool))

    def offline(self, reported: set[int]) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
        """After the input ended (finish() and keep_log): the offline tracks. Every track that was
        reported at least once (`reported`: its ids) over its whole logged life, RTS-smoothed:
        {(3D id, frame): (state, covariance)} on the frames the live reporting rule accepts, bar
        min_updates: at most report_coast_s after an update by either view, and a stereo update
        then or a *filtered* position std (sqrt of the trace, metres) within report_pos_std (the
        smoothed covariance is over-confident where a track drifted on one view: measured in
        docs/DESIGN.md). So a confirmed track also covers its frames before confirmation; a track
        that was never reported (a flash) stays out."""
        lim = self.cfg.report_pos_std
        out = {}
        for tr in self.finished:
            if tr.id not in reported or not tr.log_t:
                continue
            frames, xs, Ps = tr.smoothed()
            keep = np.array(tr.log_t) - np.array(tr.log_last_t) <= self.cfg.report_coast_s + 1e-9
            if lim is not None:
                P = np.array(tr.log_P)[:, :3, :3]
                keep &= np.array(tr.log_stereo, bool) | (np.sqrt(np.trace(P, axis1=1, axis2=2)) <= lim)
            for f, x, P in zip(frames[keep], xs[keep], Ps[keep]):
                out[(tr.id, int(f))] = (x, P)
        return out

    def reported(self) -> list[Track3D]:
        """Tracks with enough stereo updates that were seen recently: by both cameras or by one
        this frame (state 'coasting', until max_coast_s), or by none for at most report_coast_s."""
        t = self.t if self.t is not None else 0.0
        lim = self.cfg.report_pos_std
        pos_std = self._pos_std() if lim is not None else np.zeros(len(self.tracks))
        return [tr for tr, s in zip(self.tracks, pos_std) if (tr.updates >= self.cfg.min_updates
                                                             or tr.evidence_s >= self.cfg.report_evidence_s)
                and (t - tr.last_t <= self.cfg.report_coast_s)
                and (lim is None or tr.last_stereo_t == t or s <= lim)]

    def _in_view(self, margin: float = 20.0) -> np.ndarray:
        """For each live track: is its position in front of and inside at least one image?"""
        X = self.bank.x[:, :3]
        seen = np.zeros(len(X), bool)
        if not len(X):
            return seen
        for cam, Xc in ((self.calib.cam0, X), (self.calib.cam1, X @ self.calib.R.T + self.calib.T)):
            front = Xc[:, 2] > 0.05
            if front.any():
                uv = cam.project(Xc[front])
                ok = (uv[:, 0] >= -margin) & (uv[:, 0] <= cam.width + margin) & (uv[:, 1] >= -margin) & \
                     (uv[:, 1] <= cam.height + margin)
                seen[np.flatnonzero(front)[ok]] = True
        return seen

    def _gate_d2(self, tracks: list[Track3D], obs: list[PairObservation]) -> np.ndarray:
        """Mahalanobis^2 of each observation's triangulated point from its track's position."""
        if not tracks:
            return np.zeros(0)
        return self.bank.position_d2(np.array([tr.kf.row for tr in tracks]), np.array([p.xyz for p in obs]),
                                     np.array([p.cov for p in obs]))

    def _mahalanobis(self, tr: Track3D, xyz: np.ndarray, cov: np.ndarray) -> float:
        return float(self.bank.position_d2(np.array([tr.kf.row]), xyz[None], cov[None])[0])

    def _takeover_d2(self, rest: list[PairObservation], by_id0, by_id1,
                     t: float) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """For each new pair with a point (by id()): its takeover candidates' rows, in the order they
        are tried (the tracks sharing its 2D tracks, then every track without a stereo update now
        that a cheap bound does not rule out), and their Mahalanobis^2 from the pair's point, all
        in one batch."""
        pts = [p for p in rest if p.xyz is not None]
        if not pts or not self.tracks:
            return {}
        coasting = np.array([i for i, tr in enumerate(self.tracks) if tr.last_stereo_t < t], np.int64)
        # A coasting track cannot be within the gate where |y|^2 > gate x trace(S) (trace(S) bounds
        # S's largest eigenvalue): those are never tried, saving their solves.
        Z = np.array([p.xyz for p in pts])
        y2 = ((Z[:, None, :] - self.bank.x[coasting, :3][None]) ** 2).sum(-1)
        tr_S = np.trace(self.bank.P[coasting, :3, :3], axis1=1, axis2=2)[None] + \
            np.array([np.trace(p.cov) for p in pts])[:, None]
        near = ~(y2 > self.cfg.gate_chi2 * tr_S * (1 + 1e-6))
        # Candidates as (point, row) entries, the shared tracks' first: a stable sort by point keeps
        # each point's shared rows, then its coasting rows in order.
        shared = [(k, tr.kf.row) for k, p in enumerate(pts)
                  for tr in (by_id0.get(p.id0), by_id1.get(p.id1)) if tr is not None]
        pk, ck = np.nonzero(near)
        owner = np.concatenate([np.array([k for k, _ in shared], np.int64), pk])
        order = np.argsort(owner, kind="stable")
        owner = owner[order]
        rows = np.concatenate([np.array([r for _, r in shared], np.int64), coasting[ck]])[order]
        d2 = self.bank.position_d2(rows, Z[owner], np.array([p.cov for p in pts])[owner])
        ends = np.searchsorted(owner, np.arange(len(pts) + 1)).tolist()
        return {id(p): (rows[ends[k]:ends[k + 1]], d2[ends[k]:ends[k + 1]]) for k, p in enumerate(pts)}

    def _takeover(self, p: PairObservation, cands: Optional[tuple[np.ndarray, np.ndarray]],
                  used_row: np.ndarray) -> tuple[Optional[Track3D], Optional[float]]:
        """A new pair that shares a 2D track with a 3D track, or continues a coasting one: the
        nearest candidate not used this frame within the gate (the first of equals), and its
        Mahalanobis^2. Marks it used."""
        if cands is None or not len(cands[0]):
            return None, None
        rows, d2 = cands
        d = np.where(used_row[rows] | np.isnan(d2), np.inf, d2)
        j = int(np.argmin(d))
        if not d[j] < self.cfg.gate_chi2:
            return None, None
        best = self.tracks[rows[j]]
        used_row[rows[j]] = True
        log.debug("3D track %d re-paired %s -> %s", best.id, best.pair, (p.id0, p.id1))
        best.pair = (p.id0, p.id1)
        return best, float(d2[j])

    def _start(self, p: PairObservation, t: float) -> Track3D:
        x0, P0 = self._init_state(p.xyz, p.cov)
        tr = Track3D(self.next_id, self.bank.add(x0[None], P0[None])[0], (p.id0, p.id1), t, t, t, updates=1,
                     persistence=p.persistence, uv0=p.uv0, uv1=p.uv1, meas_std=float(np.sqrt(np.trace(p.cov))),
                     evidence_s=p.evidence_s, size_m=p.size_m)
        self.next_id += 1
        self.tracks.append(tr)
        return tr

    def _observe(self, tr: Track3D, p: PairObservation, d2: Optional[float] = None) -> None:
        """Queue track tr's update with observation p (d2: its Mahalanobis^2 if known); _flush applies it."""
        tr.persistence = p.persistence
        if tr.id in self._pending:
            self._flush(self.t)
        self._pending[tr.id] = (tr, p, d2)

    def _flush(self, t: float) -> None:
        """Apply the queued observations together: stereo updates with the triangulated point,
        then one-view extended-Kalman updates, camera 0's before camera 1's."""
        pending = list(self._pending.values())
        self._pending = {}
        if not pending:
            return
        self._flushed = True
        stereo = [(tr, p, d2) for tr, p, d2 in pending if p.xyz is not None]
        if stereo:
            todo = [k for k, (_, _, d2) in enumerate(stereo) if d2 is None]
            d2 = np.array([s[2] if s[2] is not None else np.nan for s in stereo])
            d2[todo] = self._gate_d2([stereo[k][0] for k in todo], [stereo[k][1] for k in todo])
            ok = [s for s, d in zip(stereo, d2) if not d > self.cfg.gate_chi2]  # beyond: coast this frame
            if ok:
                covs = np.array([p.cov for _, p, _ in ok])
                self.bank.update_position(np.array([tr.kf.row for tr, _, _ in ok]), np.array([p.xyz for _, p, _ in ok]),
                                          covs)
                stds = np.sqrt(np.trace(covs, axis1=1, axis2=2)).tolist()
            for (tr, p, _), std in zip(ok, stds if ok else ()):
                tr.meas_std = std
                if p.size_m > 0:
                    tr.size_m = p.size_m if tr.size_m <= 0 else 0.7 * tr.size_m + 0.3 * p.size_m
                tr.updates += 1
                tr.last_t = tr.last_stereo_t = t
                tr.state = "tracked"
                tr.uv0, tr.uv1 = p.uv0, p.uv1
        views = [(tr, p) for tr, p, _ in pending if p.xyz is None]
        for cam_i in (0, 1):
            self._observe_view(cam_i, [(tr, p) for tr, p in views if (p.seen0 if cam_i == 0 else p.seen1)
                                       and (p.uv0 if cam_i == 0 else p.uv1) is not None], t)

    def _observe_view(self, cam_i: int, items: list[tuple[Track3D, PairObservation]], t: float) -> None:
        """One view: extended Kalman updates with that camera's (undistorted) pixels, gated."""
        if not items:
            return
        cam = self.calib.cam0 if cam_i == 0 else self.calib.cam1
        rows = np.array([tr.kf.row for tr, _ in items])
        X = self.bank.x[rows, :3]
        if cam_i == 0:
            R_, Xc = np.eye(3), X
        else:
            R_ = self.calib.R
            Xc = (R_ @ X[:, :, None])[:, :, 0] + self.calib.T.reshape(3)
        front = ~(Xc[:, 2] <= 0.05)
        if not front.any():
            return
        items = [it for it, f in zip(items, front) if f]
        rows = rows[front]
        pred, J = _project_ideal(cam.K, Xc[front])
        H = np.zeros((len(rows), 2, self.dim))
        H[:, :, :3] = J @ R_
        uv = [p.uv0 if cam_i == 0 else p.uv1 for _, p in items]
        y = cam.undistort_points(np.array([np.asarray(u, float).reshape(2) for u in uv])) - pred
        sigma = np.array([self.cfg.pixel_sigma if p.sigma_px is None else p.sigma_px for _, p in items])
        s = axis_sigma(sigma, np.array([p.cut_sigma[cam_i] for _, p in items]),
                       np.array([p.view_size_px[cam_i] for _, p in items]))
        Rm = np.zeros((len(items), 2, 2))
        Rm[:, 0, 0], Rm[:, 1, 1] = s[:, 0] ** 2, s[:, 1] ** 2
        ok = self.bank.update_linearised(rows, y, H, Rm, gate_chi2=self.cfg.gate_chi2_2d)
        for (tr, _), u, good in zip(items, uv, ok):
            if not good:
                continue
            tr.last_t = t
            tr.state = "coasting"  # one view: reported, but flagged
            if cam_i == 0:
                tr.uv0 = u
            else:
                tr.uv1 = u
