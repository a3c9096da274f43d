"""Object motion in the synthetic world: walkers, ballistic throws, random-walk swarms.

State is position p and velocity v (camera 0 frame, metres, m/s) at the current step; within a
step motion is p + v dt + a dt^2 / 2 with a constant acceleration a (gravity for throws), so a
position at any time inside the step (a camera's capture time) is exact.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scene import SceneConfig

GRAVITY = np.array([0.0, 9.81, 0.0])  # OpenCV y axis points down


@dataclass
class SimObject:
    id: int
    motion: str
    p: np.ndarray
    v: np.ndarray
    a: np.ndarray
    radius: float
    color: tuple[int, int, int]
    born: float
    home: np.ndarray  # swarm centre

    def at(self, dt: float) -> np.ndarray:
        return self.p + self.v * dt + 0.5 * self.a * dt * dt


def _color(rng: np.random.Generator) -> tuple[int, int, int]:
    hue = rng.uniform(0, 180)
    import cv2

    hsv = np.uint8([[[hue, rng.uniform(170, 255), rng.uniform(215, 255)]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def spawn(rng: np.random.Generator, cfg: SceneConfig, oid: int, t: float, initial: bool) -> SimObject:
    """A new object. Initial objects start inside the volume; later ones enter from its edge."""
    motion = rng.choice([m for m, _ in cfg.motion_mix], p=_weights(cfg))
    (x0, x1), (y0, y1), (z0, z1) = cfg.volume_x, cfg.volume_y, cfg.volume_z
    r = rng.uniform(*cfg.radius)
    a = np.zeros(3)
    home = np.zeros(3)
    if motion == "walker":
        speed = rng.uniform(*cfg.speed)
        heading = rng.uniform(0, 2 * np.pi)
        v = np.array([np.cos(heading), rng.normal(0, 0.05), np.sin(heading)]) * speed
        if initial:
            p = np.array([rng.uniform(x0, x1), rng.uniform(y0, y1), rng.uniform(z0, z1)])
        else:  # enter at the side the velocity points away from
            v[0] = abs(v[0]) + 0.2 * speed
            side = rng.choice([-1.0, 1.0])
            v[0] *= -side
            p = np.array([x1 if side > 0 else x0, rng.uniform(y0, y1), rng.uniform(z0, z1)])
    elif motion == "ballistic":
        a = GRAVITY.copy()
        z = rng.uniform(z0, z1)
        p = np.array([rng.uniform(x0, x1) * 0.7, y1 + 0.3, z])
        # Apex above the view's middle: v_y^2 = 2 g h
        h = rng.uniform(1.0, (y1 - y0) + 0.8)
        v = np.array([rng.normal(0, 0.5), -np.sqrt(2 * 9.81 * h), rng.normal(0, 0.4)])
        if initial:  # start somewhere along the flight
            tau = rng.uniform(0, 2 * -v[1] / 9.81 * 0.8)
            p = p + v * tau + 0.5 * a * tau * tau
            v = v + a * tau
    else:  # swarm member: Ornstein-Uhlenbeck velocity around a home point
        home = np.array([rng.uniform(x0, x1) * 0.5, rng.uniform(y0, y1) * 0.5, rng.uniform(z0, z1)])
        p = home + rng.normal(0, 0.3, 3)
        v = rng.normal(0, 0.4, 3)
    return SimObject(oid, str(motion), p, v, a, r, _color(rng), t, home)


def _weights(cfg: SceneConfig) -> np.ndarray:
    w = np.array([w for _, w in cfg.motion_mix], dtype=float)
    return w / w.sum()


def advance(obj: SimObject, dt: float, rng: np.random.Generator) -> None:
    """Move an object one step of dt seconds."""
    obj.p = obj.at(dt)
    obj.v = obj.v + obj.a * dt
    if obj.motion == "swarm":
        theta, sigma = 0.8, 0.9  # 1/s, m/s/sqrt(s)
        obj.v = obj.v + (-theta * obj.v + 0.6 * (obj.home - obj.p)) * dt + rng.normal(0, sigma * np.sqrt(dt), 3)
    elif obj.motion == "walker":
        obj.v = obj.v + rng.normal(0, 0.15 * np.sqrt(dt), 3) * np.array([1.0, 0.2, 1.0])


def gone(obj: SimObject, cfg: SceneConfig) -> bool:
    """True when the object has left the world's volume (the world also checks that no camera
    still sees it before removing it)."""
    (x0, x1), (y0, y1), (z0, z1) = cfg.volume_x, cfg.volume_y, cfg.volume_z
    m = 0.5
    if obj.motion == "ballistic":
        return obj.v[1] > 0 and obj.p[1] > y1 + 0.4
    return not (x0 - m <= obj.p[0] <= x1 + m and y0 - m <= obj.p[1] <= y1 + m and z0 - m <= obj.p[2] <= z1 + m)
