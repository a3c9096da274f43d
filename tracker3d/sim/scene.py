"""Scene descriptions for the synthetic stereo world, and the named presets."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional


@dataclass(frozen=True)
class SceneConfig:
    """Everything that defines a synthetic recording (with the seed, it defines it exactly).

    Units: metres (camera 0 frame, OpenCV axes: x right, y down, z forward), seconds, pixels;
    noise_sigma in grey levels.
    """

    name: str = "default"
    fps: float = 30.0  # the world's step rate; a pair is rendered every `stride` steps
    stride: int = 1  # keep every stride-th step: fps=30, stride=6 is 30 fps video read at 5 fps
    jitter: float = 0.0  # each pair's capture time moves by up to +-this many seconds (uniform)
    seconds: float = 10.0
    width: int = 640
    height: int = 480
    baseline: float = 0.2
    # Objects: how many exist at any time (one that leaves is replaced by a new one).
    n_objects: int = 8
    motion_mix: tuple[tuple[str, float], ...] = (("walker", 0.5), ("ballistic", 0.25), ("swarm", 0.25))
    radius: tuple[float, float] = (0.04, 0.08)  # metres
    speed: tuple[float, float] = (0.3, 1.2)  # walkers' speed, m/s
    volume_x: tuple[float, float] = (-2.0, 2.0)
    volume_y: tuple[float, float] = (-0.9, 0.9)
    volume_z: tuple[float, float] = (2.0, 7.0)
    # Image formation.
    noise_sigma: float = 3.0
    flicker: float = 0.02  # std of the per-frame global gain
    texture: float = 1.0  # background texture contrast (0 = flat grey)
    # Distractors a tracker must reject.
    flash_rate: float = 1.0  # brief flashes per second (1-3 frames each)
    flash_3d_fraction: float = 0.5  # share of flashes that exist in 3D (seen by both cameras)
    clutter_count: int = 3  # static blinking spots
    clutter_on_frames: tuple[int, int] = (1, 2)  # each blink lasts this many frames (inclusive range)
    clutter_off_frames: tuple[int, int] = (5, 40)
    noise_track_rate: float = 0.5  # short noise tracks per second (one camera only)
    # Rig faults.
    time_offset: float = 0.0  # camera 1 captures this many seconds after camera 0
    drop_prob: float = 0.0  # probability that a camera drops a frame
    dark: Optional[tuple[int, float, float]] = None  # (camera, t_start, t_end): that camera goes dark

    @property
    def frame_rate(self) -> float:
        """Pairs per second (Hz): fps / stride."""
        return self.fps / self.stride

    @property
    def n_frames(self) -> int:
        """Pairs in the recording."""
        return int(round(self.seconds * self.frame_rate))

    def with_(self, **kw) -> "SceneConfig":
        known = {f.name for f in fields(self)}
        bad = [k for k in kw if k not in known]
        if bad:
            raise ValueError(f"unknown scene parameter(s): {', '.join(bad)}")
        return replace(self, **kw)


SCENES: dict[str, SceneConfig] = {
    "default": SceneConfig(),
    "walkers": SceneConfig(name="walkers", n_objects=10, motion_mix=(("walker", 1.0),)),
    "throws": SceneConfig(name="throws", n_objects=4, motion_mix=(("ballistic", 1.0),), radius=(0.03, 0.06)),
    "swarm": SceneConfig(name="swarm", n_objects=50, motion_mix=(("swarm", 1.0),), radius=(0.02, 0.04),
                         flash_rate=2.0, clutter_count=5),
    "crowd": SceneConfig(name="crowd", n_objects=200, motion_mix=(("walker", 0.5), ("swarm", 0.5)),
                         radius=(0.015, 0.03), volume_x=(-3.0, 3.0), volume_z=(3.0, 9.0), flash_rate=3.0),
    "sparse": SceneConfig(name="sparse", n_objects=1, motion_mix=(("walker", 1.0),), flash_rate=0.5),
    "cluttered": SceneConfig(name="cluttered", n_objects=8, noise_sigma=6.0, flicker=0.05, flash_rate=6.0,
                             clutter_count=12, clutter_on_frames=(2, 8), noise_track_rate=3.0),
    "faults": SceneConfig(name="faults", n_objects=8, time_offset=0.008, drop_prob=0.02, dark=(1, 4.0, 5.5)),
}


def get_scene(name: str) -> SceneConfig:
    if name not in SCENES:
        raise KeyError(f"unknown scene {name!r}: expected one of {', '.join(SCENES)}")
    return SCENES[name]
