"""What the viewer draws, built from tracks3d messages without any graphics library.

`ViewerState.apply(msg)` keeps, per track ID: its newest position and velocity (metres, m/s, in
the message's frame), persistence score, state, a fading trail of recent positions, and a colour
fixed by the ID. Messages older than the newest one applied are dropped (counted), except after a
publisher restart (seq back near 0 is a new stream). Tracks missing from the
newest message are gone.
"""
from __future__ import annotations

import colorsys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

GOLDEN = 0.618033988749895
RESTART_SEQ = 300  # a seq below this that goes backwards is a new publisher


def id_colour(track_id: int) -> tuple[float, float, float]:
    """A bright RGB colour in [0, 1] fixed by the ID (golden-ratio hue steps: neighbours differ)."""
    h = (int(track_id) * GOLDEN) % 1.0
    return colorsys.hsv_to_rgb(h, 0.85, 0.95)


@dataclass
class TrackView:
    id: int
    xyz: np.ndarray
    vel: np.ndarray
    persistence: float
    state: str
    colour: tuple[float, float, float]
    trail: deque = field(default_factory=deque)  # (t, xyz) oldest first


class ViewerState:
    def __init__(self, trail_s: float = 2.0, trail_max: int = 120):
        self.trail_s = float(trail_s)
        self.trail_max = int(trail_max)
        self.tracks: dict[int, TrackView] = {}
        self.t = float("nan")
        self.seq = -1
        self.frame_id = ""
        self.applied = 0
        self.stale = 0  # messages dropped because a newer one was already applied

    def apply(self, msg: dict) -> bool:
        """Take one decoded, validated message; False when it is stale and was dropped."""
        seq, t = int(msg["seq"]), float(msg["t"])
        # One publisher's messages arrive in order; a seq far back near 0 is a restarted publisher
        # (a late joiner may miss its first few), anything else older is stale.
        restart = seq < self.seq and seq < RESTART_SEQ
        if self.seq >= 0 and seq <= self.seq and not restart:
            self.stale += 1
            return False
        if restart:
            self.tracks.clear()
        self.seq, self.t, self.frame_id = seq, t, msg["frame_id"]
        self.applied += 1
        seen = set()
        for tr in msg["tracks"]:
            i = int(tr["id"])
            seen.add(i)
            xyz = np.asarray(tr["xyz"], float)
            v = self.tracks.get(i)
            if v is None:
                v = self.tracks[i] = TrackView(i, xyz, np.asarray(tr["vel"], float), float(tr["persistence"]),
                                               tr["state"], id_colour(i), deque(maxlen=self.trail_max))
            v.xyz, v.vel = xyz, np.asarray(tr["vel"], float)
            v.persistence, v.state = float(tr["persistence"]), tr["state"]
            v.trail.append((t, xyz))
            while v.trail and v.trail[0][0] < t - self.trail_s:
                v.trail.popleft()
        for i in [i for i in self.tracks if i not in seen]:
            del self.tracks[i]
        return True

    def trail_points(self, track_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(points (n, 3), fade (n,) in [0, 1]: 1 = newest) of a track's trail."""
        v = self.tracks[track_id]
        if not v.trail:
            return np.zeros((0, 3)), np.zeros(0)
        ts = np.array([t for t, _ in v.trail])
        pts = np.array([p for _, p in v.trail])
        fade = 1.0 - np.clip((self.t - ts) / max(self.trail_s, 1e-9), 0.0, 1.0)
        return pts, fade

    def info_text(self) -> str:
        lines = [f"t {self.t:.2f} s  seq {self.seq}  tracks {len(self.tracks)}  frame {self.frame_id}"]
        for i in sorted(self.tracks):
            v = self.tracks[i]
            lines.append(f"#{i:<4d} {v.state:9s} p={v.persistence:.2f}  "
                         f"({v.xyz[0]:+.2f}, {v.xyz[1]:+.2f}, {v.xyz[2]:+.2f}) m  {np.linalg.norm(v.vel):.2f} m/s")
        return "\n".join(lines)


class NewestMessage:
    """A one-message mailbox between the subscriber thread and the drawing loop: the newest
    message wins, so a slow viewer never builds up a queue (replaced ones are counted)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._msg: Optional[dict] = None
        self.replaced = 0

    def put(self, msg: dict) -> None:
        with self._lock:
            if self._msg is not None:
                self.replaced += 1
            self._msg = msg

    def take(self) -> Optional[dict]:
        with self._lock:
            msg, self._msg = self._msg, None
            return msg

    def waiting(self) -> bool:
        """A message is in the box, not yet taken."""
        with self._lock:
            return self._msg is not None


class RedrawPump:
    """The receiving side of a display: waits for messages (a poll with a timeout, no spinning),
    keeps only the newest (older queued ones are dropped undecoded: Subscriber.recv_newest), and
    calls `wake()` -- only when a new message arrived, at most `fps` times a second, and never
    while the previous wake is still undrawn -- so the display draws nothing when nothing changed
    and never falls behind. The display calls `take()` for the message to draw.

    `sub`: a streams Subscriber (or anything with recv_newest(timeout)). Run `run()` in a thread;
    `stop.set()` ends it within `poll_s` seconds."""

    def __init__(self, sub, wake: Callable[[], None], fps: float = 30.0, poll_s: float = 0.25):
        self.sub = sub
        self.wake = wake
        self.period = 1.0 / fps
        self.poll_s = poll_s
        self.box = NewestMessage()
        self.stop = threading.Event()
        self.wakes = 0
        self._drawn = threading.Event()  # set: the last wake was taken; a new one may be sent
        self._drawn.set()

    def run(self) -> None:
        last = float("-inf")
        while not self.stop.is_set():
            # Waiting only for messages: poll_s; with one undrawn (a draw pending): a frame at most.
            msg = self.sub.recv_newest(timeout=self.period if self.box.waiting() else self.poll_s)
            if msg is not None:
                self.box.put(msg)
            if not self.box.waiting():
                continue
            early = last + self.period - time.monotonic()
            if early > 0 and self.stop.wait(early):  # too soon after the last wake: wait, then
                break
            newer = self.sub.recv_newest(timeout=0)  # take what came meanwhile
            if newer is not None:
                self.box.put(newer)
            if self._drawn.is_set():  # else the pending draw will take the newest message anyway
                self._drawn.clear()
                last = time.monotonic()
                self.wakes += 1
                self.wake()

    def take(self) -> Optional[dict]:
        """For the display, when woken: the newest message (None if already taken)."""
        self._drawn.set()
        return self.box.take()
