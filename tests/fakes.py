"""Test doubles of capture devices (not of our code): they behave like cv2.VideoCapture."""
from __future__ import annotations

import time

import numpy as np

from streams.frames import Frame
from streams.sources import FrameSource


class FakeCamera:
    """A device producing numbered frames at `fps`. A shared `plan` can make it fail:
    plan['fail_after']: grab fails once this many frames were delivered (device unplugged);
    plan['down_for']: seconds during which opening fails after a failure."""

    def __init__(self, spec, plan: dict, size=(64, 48), fps=200.0):
        self.plan = plan
        self.size = size
        self.period = 1.0 / fps
        self.opened = time.monotonic() >= plan.get("down_until", 0.0)
        plan["opens"] = plan.get("opens", 0) + 1
        self._next = time.monotonic()

    def isOpened(self):
        return self.opened

    def set(self, *a):
        return True

    def grab(self):
        if not self.opened:
            return False
        delivered = self.plan.get("delivered", 0)
        fail_after = self.plan.get("fail_after")
        if fail_after is not None and delivered >= fail_after:
            self.plan["fail_after"] = None
            self.plan["down_until"] = time.monotonic() + self.plan.get("down_for", 0.3)
            self.opened = False
            return False
        now = time.monotonic()
        if self._next > now:
            time.sleep(self._next - now)
        self._next = max(self._next + self.period, time.monotonic())
        self.plan["delivered"] = delivered + 1
        return True

    def retrieve(self):
        img = np.full((self.size[1], self.size[0], 3), self.plan.get("delivered", 0) % 256, np.uint8)
        return True, img

    def read(self):
        return (self.retrieve() if self.grab() else (False, None))

    def release(self):
        self.opened = False
        self.plan["released"] = self.plan.get("released", 0) + 1


class ListSource(FrameSource):
    """Frames at given times (a lossless source)."""

    def __init__(self, times, size=(32, 24), name="list"):
        super().__init__()
        self.times = list(times)
        self.size = size
        self.name = name
        self.i = 0

    def read(self, timeout=None):
        if self.i >= len(self.times):
            return None
        t = self.times[self.i]
        self.i += 1
        return Frame(self.i - 1, t, np.zeros((self.size[1], self.size[0], 3), np.uint8))
