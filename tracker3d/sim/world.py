"""The synthetic stereo world: moving objects and distractors rendered into both cameras of a
real calibration, with exact ground truth per frame."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Iterator, Optional

import cv2
import numpy as np

from calib import StereoCalibration
from calib.rigs import make_rig
from streams.frames import FramePair
from streams.pairing import StereoSource

from .motion import SimObject, advance, gone, spawn
from .render import NoiseBank, draw_discs, make_background, project_discs, visibility
from .scene import SceneConfig

log = logging.getLogger(__name__)

GT_HEADER = ["frame", "t", "id", "kind", "x", "y", "z", "u0", "v0", "vis0", "u1", "v1", "vis1"]
DISTRACTOR_ID_BASE = 1_000_000  # distractor ids never collide with object ids
FAR_FACTOR = 1.5  # objects beyond this times the volume's far depth leave the scene


@dataclass
class GTRow:
    """Ground truth of one object or distractor in one pair. xyz: camera 0 frame at t (metres),
    NaN for a distractor that exists in one image only; u/v: distorted pixels at each camera's
    capture time (NaN when behind the camera); vis: 1 if its centre is in the image, unoccluded,
    and that camera delivered a lit frame."""

    frame: int
    t: float
    id: int
    kind: str
    xyz: np.ndarray
    uv0: np.ndarray
    vis0: int
    uv1: np.ndarray
    vis1: int

    def csv(self) -> str:
        def f(v: float, nd: int) -> str:
            return "" if not math.isfinite(v) else f"{v:.{nd}f}"
        return ",".join([str(self.frame), f"{self.t:.6f}", str(self.id), self.kind,
                         *(f(v, 5) for v in self.xyz), f(self.uv0[0], 3), f(self.uv0[1], 3), str(self.vis0),
                         f(self.uv1[0], 3), f(self.uv1[1], 3), str(self.vis1)])


@dataclass
class Spot:
    """A distractor: 3D (X set, seen by both cameras) or 2D in camera `cam` only (uv set)."""

    id: int
    kind: str  # flash | clutter | noise
    frames_left: int
    color: tuple[int, int, int]
    X: Optional[np.ndarray] = None
    radius_m: float = 0.0
    cam: int = -1
    uv: Optional[np.ndarray] = None
    vel: Optional[np.ndarray] = None  # px per frame (noise tracks)
    radius_px: float = 0.0
    on: bool = True
    timer: int = 0


class SimWorld:
    """Steps a SceneConfig forward one stereo pair at a time. Same config and seed -> same output."""

    def __init__(self, cfg: SceneConfig, seed: int = 0, calib: Optional[StereoCalibration] = None):
        self.cfg = cfg
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.calib = calib or make_rig(cfg.width, cfg.height, cfg.baseline)
        if self.calib.cam0.image_size != (cfg.width, cfg.height):
            raise ValueError(f"scene is {cfg.width}x{cfg.height} but the calibration is "
                             f"{self.calib.cam0.image_size[0]}x{self.calib.cam0.image_size[1]}")
        self.size = (cfg.width, cfg.height)
        if cfg.stride < 1:
            raise ValueError(f"stride {cfg.stride}: expected an integer >= 1")
        self.dt = 1.0 / cfg.fps  # one world step (seconds)
        self.frame_dt = cfg.stride * self.dt  # between rendered pairs
        if not 0 <= cfg.jitter < self.frame_dt / 2:
            raise ValueError(f"jitter {cfg.jitter}: expected 0 <= jitter < half the frame interval "
                             f"({self.frame_dt / 2:.4g} s), so capture times keep their order")
        self.steps = 0  # world steps taken
        self.jitter_rng = np.random.default_rng([seed, 2])  # its own stream: other draws stay as they were
        img_rng = np.random.default_rng([seed, 1])
        self.backgrounds = [make_background(cfg.width, cfg.height, img_rng, cfg.texture) for _ in range(2)]
        self.noise = [NoiseBank((cfg.height, cfg.width, 3), cfg.noise_sigma, img_rng) for _ in range(2)]
        self.objects: list[SimObject] = []
        self.next_id = 1
        self.next_spot_id = DISTRACTOR_ID_BASE
        self.spots: list[Spot] = []
        self.k = 0
        self.gain = [1.0, 1.0]
        for _ in range(cfg.n_objects):
            self._add_object(initial=True)
        for _ in range(cfg.clutter_count):
            self._add_clutter()

    # ---- population -------------------------------------------------------------------------
    def _add_object(self, initial: bool) -> None:
        self.objects.append(spawn(self.rng, self.cfg, self.next_id, self.steps * self.dt, initial))
        self.next_id += 1

    def _new_spot_id(self) -> int:
        self.next_spot_id += 1
        return self.next_spot_id - 1

    def _random_point(self) -> np.ndarray:
        z = self.rng.uniform(*self.cfg.volume_z)
        # Inside camera 0's view cone at that depth.
        fx = self.calib.cam0.K[0, 0]
        hx, hy = 0.45 * self.cfg.width / fx * z, 0.45 * self.cfg.height / fx * z
        return np.array([self.rng.uniform(-hx, hx) + 0.5 * self.cfg.baseline, self.rng.uniform(-hy, hy), z])

    def _random_uv(self) -> np.ndarray:
        return np.array([self.rng.uniform(10, self.cfg.width - 10), self.rng.uniform(10, self.cfg.height - 10)])

    def _add_clutter(self) -> None:
        rng = self.rng
        s = Spot(self._new_spot_id(), "clutter", frames_left=1 << 30, color=(235, 235, 235),
                 on=False, timer=int(rng.integers(1, 30)))
        if rng.random() < 0.5:
            s.X, s.radius_m = self._random_point(), rng.uniform(0.02, 0.05)
        else:
            s.cam, s.uv, s.radius_px = int(rng.integers(2)), self._random_uv(), rng.uniform(3, 7)
        self.spots.append(s)

    def _spawn_distractors(self) -> None:
        rng, cfg = self.rng, self.cfg
        for _ in range(rng.poisson(cfg.flash_rate * self.dt)):
            s = Spot(self._new_spot_id(), "flash", int(rng.integers(1, 4)), (250, 250, 250))
            if rng.random() < cfg.flash_3d_fraction:
                s.X, s.radius_m = self._random_point(), rng.uniform(0.03, 0.08)
            else:
                s.cam, s.uv, s.radius_px = int(rng.integers(2)), self._random_uv(), rng.uniform(4, 10)
            self.spots.append(s)
        for _ in range(rng.poisson(cfg.noise_track_rate * self.dt)):
            s = Spot(self._new_spot_id(), "noise", int(rng.integers(3, 13)),
                     tuple(int(c) for c in rng.integers(150, 256, 3)), cam=int(rng.integers(2)),
                     uv=self._random_uv(), vel=rng.normal(0, 4, 2), radius_px=rng.uniform(3, 6))
            self.spots.append(s)

    # ---- one pair ---------------------------------------------------------------------------
    def _camera_points(self, cam: int, X0: np.ndarray) -> np.ndarray:
        return X0 if cam == 0 else X0 @ self.calib.R.T + self.calib.T

    def step(self) -> tuple[FramePair, list[GTRow]]:
        """Render the next pair and return it with its ground truth; then advance the world."""
        cfg, rng, k = self.cfg, self.rng, self.k
        jit = self.jitter_rng.uniform(-cfg.jitter, cfg.jitter) if cfg.jitter > 0 else 0.0
        t0 = self.steps * self.dt + jit
        offsets = (jit, jit + cfg.time_offset)
        self._spawn_distractors()
        objs = self.objects
        spots3d = [s for s in self.spots if s.X is not None and s.on]
        radii = np.array([o.radius for o in objs] + [s.radius_m for s in spots3d])
        colors = [o.color for o in objs] + [s.color for s in spots3d]
        images: list[Optional[np.ndarray]] = [None, None]
        uvs, viss, lit = [], [], []
        times = [t0 - jit + offsets[0], t0 - jit + offsets[1]]  # t0 is camera 0's capture time
        for c in (0, 1):
            X0 = np.array([o.at(offsets[c]) for o in objs] + [s.X for s in spots3d]).reshape(-1, 3)
            Xc = self._camera_points(c, X0)
            cam_model = self.calib.cam0 if c == 0 else self.calib.cam1
            uv, r_px, front = project_discs(cam_model, Xc, radii)
            depth = Xc[:, 2] if len(Xc) else np.zeros(0)
            vis = visibility(uv, r_px, depth, front, self.size).astype(int)
            dropped = rng.random() < cfg.drop_prob
            dark = cfg.dark is not None and cfg.dark[0] == c and cfg.dark[1] <= times[c] < cfg.dark[2]
            if dropped or dark:
                vis[:] = 0
            lit.append(not (dropped or dark))
            if not dropped:
                img = self.backgrounds[c].copy()
                order = np.argsort(-depth) if len(depth) else np.zeros(0, int)
                draw_discs(img, uv, r_px, colors, order)
                for s in self.spots:  # 2D-only distractors lie on top (they are near the lens)
                    if s.cam == c and s.on:
                        cv2.circle(img, (int(round(s.uv[0] * 16)), int(round(s.uv[1] * 16))),
                                   int(round(s.radius_px * 16)), s.color, -1, cv2.LINE_AA, 4)
                self.gain[c] = 1.0 + cfg.flicker * rng.normal() if cfg.flicker > 0 else 1.0
                g = 0.04 if dark else self.gain[c]
                if abs(g - 1.0) > 1e-3:
                    cv2.convertScaleAbs(img, dst=img, alpha=g)
                self.noise[c].apply(img, rng)
                images[c] = img
            else:
                times[c] = math.nan
            uvs.append(uv)
            viss.append(vis)
        pair = FramePair(k, times[0], times[1], images[0], images[1])
        gt = self._ground_truth(k, t0, objs, spots3d, uvs, viss, lit, jit)
        for i in range(cfg.stride):  # the steps between this pair and the next are not rendered
            if i:
                self._spawn_distractors()
            self._advance()
        self.k += 1
        return pair, gt

    def _ground_truth(self, k, t0, objs, spots3d, uvs, viss, lit, jit: float = 0.0) -> list[GTRow]:
        rows = []
        for i, o in enumerate(objs):
            rows.append(GTRow(k, t0, o.id, "object", o.at(jit) if jit else o.p.copy(), uvs[0][i], int(viss[0][i]), uvs[1][i],
                              int(viss[1][i])))
        n = len(objs)
        for j, s in enumerate(spots3d):
            rows.append(GTRow(k, t0, s.id, s.kind, s.X.copy(), uvs[0][n + j], int(viss[0][n + j]),
                              uvs[1][n + j], int(viss[1][n + j])))
        nan2 = np.array([np.nan, np.nan])
        for s in self.spots:
            if s.cam >= 0 and s.on:
                uv = s.uv.copy()
                w, h = self.size
                seen = int(lit[s.cam] and 0 <= uv[0] <= w - 1 and 0 <= uv[1] <= h - 1)
                row_uv = (uv, nan2) if s.cam == 0 else (nan2, uv)
                vis = (seen, 0) if s.cam == 0 else (0, seen)
                rows.append(GTRow(k, t0, s.id, s.kind, np.full(3, np.nan), row_uv[0], vis[0], row_uv[1], vis[1]))
        return rows

    def _advance(self) -> None:
        rng, cfg = self.rng, self.cfg
        for o in self.objects:
            advance(o, self.dt, rng)
        before = len(self.objects)
        self.objects = [o for o in self.objects if self._useful(o)]
        for _ in range(before - len(self.objects)):
            self._add_object(initial=False)
        keep = []
        for s in self.spots:
            if s.kind == "clutter":
                s.timer -= 1
                if s.timer <= 0:
                    s.on = not s.on
                    lo, hi = cfg.clutter_on_frames if s.on else cfg.clutter_off_frames
                    s.timer = int(rng.integers(lo, hi + 1))
                keep.append(s)
                continue
            s.frames_left -= 1
            if s.vel is not None:
                s.uv = s.uv + s.vel
                s.vel = s.vel + rng.normal(0, 1.0, 2)
            if s.frames_left > 0:
                keep.append(s)
        self.spots = keep
        self.steps += 1

    def _useful(self, o: SimObject) -> bool:
        """An object stays while it is inside the scene's volume, or outside it but still seen by a
        camera and not beyond the depth limit (FAR_FACTOR x the volume's far end): walkers that
        walk away leave the scene (and are replaced) instead of shrinking under a pixel."""
        if not gone(o, self.cfg):
            return True
        return o.p[2] <= FAR_FACTOR * self.cfg.volume_z[1] and self._in_view(o.p)

    def _in_view(self, X: np.ndarray, margin: float = 30.0) -> bool:
        """Whether a point (camera 0 frame) projects into either image (with a margin, pixels):
        objects leave the world only once no camera can see them."""
        w, h = self.size
        for c in (0, 1):
            Xc = self._camera_points(c, X[None])[0]
            if Xc[2] <= 0.05:
                continue
            u, v = (self.calib.cam0 if c == 0 else self.calib.cam1).project(Xc[None])[0]
            if -margin <= u <= w + margin and -margin <= v <= h + margin:
                return True
        return False

    def frames(self, n: Optional[int] = None) -> Iterator[tuple[FramePair, list[GTRow]]]:
        """The next n pairs (default: the scene's length from the current frame)."""
        n = self.cfg.n_frames - self.k if n is None else n
        for _ in range(n):
            yield self.step()


class SimStereoSource(StereoSource):
    """The synthetic world as a stereo source: lossless (as fast as possible) or live, paced at
    the scene's frame rate (latest pair wins, as with real cameras). Ground truth of the last
    pair read is in `last_gt`; all of it in `gt` when keep_gt."""

    def __init__(self, world: SimWorld, realtime: bool = False, n_frames: Optional[int] = None,
                 keep_gt: bool = True):
        super().__init__()
        self.world = world
        self.live = realtime
        self.realtime = realtime
        self.n_frames = world.cfg.n_frames if n_frames is None else n_frames
        self.image_size = world.size
        self.calib = world.calib
        self.keep_gt = keep_gt
        self.gt: list[GTRow] = []
        self.last_gt: list[GTRow] = []
        self._start: Optional[float] = None

    @property
    def ended(self) -> bool:
        return self.world.k >= self.n_frames

    def read(self, timeout: Optional[float] = None) -> Optional[FramePair]:
        if self.world.k >= self.n_frames:
            return None
        if self.realtime:
            now = time.monotonic()
            if self._start is None:
                self._start = now - self.world.k * self.world.frame_dt
            due = self._start + self.world.k * self.world.frame_dt
            # A consumer that fell behind gets the newest pair: the frames it missed are dropped.
            while now - due > self.world.frame_dt and self.world.k < self.n_frames - 1:
                _, gt = self.world.step()
                if self.keep_gt:
                    self.gt.extend(gt)
                self.stats.overwritten += 1
                due += self.world.frame_dt
            if due > now:
                time.sleep(due - now)
        pair, gt = self.world.step()
        pair.wall = time.time()  # when a camera would deliver it: after exposure and readout (rendering)
        self.last_gt = gt
        if self.keep_gt:
            self.gt.extend(gt)
        self.stats.pairs += 1
        if not math.isnan(pair.skew):
            self.stats.skews.append(pair.skew)
        return pair
