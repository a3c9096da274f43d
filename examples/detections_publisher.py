"""Publish two cameras' detections as detections2d messages, the way your own detector would, for
`tracker3d live --det-source`. Here the detections come from MOTChallenge det files (a detections
folder); in your program they come from your detector, one message per camera and image.

    python examples/detections_publisher.py DIR [--endpoint tcp://127.0.0.1:5557] [--speed 1]
    tracker3d live --det-source tcp://127.0.0.1:5557 --calib DIR/calib.yaml      # in another shell

The message (UTF-8 JSON, ZMQ multipart [b"detections2d", payload]):

    {"schema": "tracker3d/detections2d@1", "camera": 0, "t": 12.5, "frame": 25,
     "boxes": [[x, y, w, h], ...], "scores": [0.9, ...], "classes": [0, ...]}

t is the capture time in seconds (one clock for both cameras), boxes are pixels (top-left corner,
width, height); frame and classes are optional. This program binds; the tracker connects.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import zmq

from streams.detections import read_det_file
from streams.recording import read_frames_csv


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir", help="detections folder: det0.txt, det1.txt, frames.csv")
    p.add_argument("--endpoint", default="tcp://127.0.0.1:5557", help="where to bind the PUB socket")
    p.add_argument("--speed", type=float, default=1.0, help="1 = at the capture times, 2 = twice as fast")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for a subscriber before starting")
    p.add_argument("--limit", type=int, help="publish only the first N frames")
    args = p.parse_args()
    d = Path(args.dir)
    dets = [read_det_file(d / "det0.txt"), read_det_file(d / "det1.txt")]
    rows = read_frames_csv(d / "frames.csv")[: args.limit]

    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.XPUB)  # a PUB socket that also tells us when a subscriber arrives
    sock.setsockopt(zmq.LINGER, 1000)
    sock.setsockopt(zmq.SNDHWM, 100000)
    sock.bind(args.endpoint)
    if sock.poll(int(args.wait * 1000)):  # the subscription message
        sock.recv()
        time.sleep(0.2)
    else:
        print(f"no subscriber on {args.endpoint} after {args.wait} s; publishing anyway", file=sys.stderr)
    start = time.monotonic()
    t_first = None
    sent = 0
    for index, t0, t1 in rows:
        for cam, t in ((0, t0), (1, t1)):
            if math.isnan(t):
                continue  # this camera took no image for this frame
            t_first = t if t_first is None else t_first
            delay = (t - t_first) / args.speed - (time.monotonic() - start)
            if delay > 0:
                time.sleep(delay)
            boxes = dets[cam].get(index + 1)  # det files count frames from 1
            msg = {"schema": "tracker3d/detections2d@1", "camera": cam, "t": t, "frame": index,
                   "boxes": [], "scores": []}
            if boxes is not None:
                b = boxes.boxes
                msg["boxes"] = [[x0, y0, x1 - x0, y1 - y0] for x0, y0, x1, y1 in b.tolist()]
                msg["scores"] = boxes.scores.tolist()
                if boxes.classes is not None:
                    msg["classes"] = [None if c == -1 else c for c in boxes.classes.tolist()]
            sock.send_multipart([b"detections2d", json.dumps(msg).encode("utf-8")])
            sent += 1
    print(f"published {sent} detections2d messages ({len(rows)} frames) on {args.endpoint}")
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
