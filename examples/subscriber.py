"""Print the 3D tracks that a running tracker3d publishes (copy this into your own program).

    python examples/subscriber.py [tcp://127.0.0.1:5556] [max_messages]
"""
import sys

from streams import subscribe

endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:5556"
limit = int(sys.argv[2]) if len(sys.argv) > 2 else None
with subscribe(endpoint, timeout=10.0) as sub:  # timeout: stop after 10 s of silence
    for n, msg in enumerate(sub, start=1):
        ids = [(tr["id"], [round(v, 3) for v in tr["xyz"]]) for tr in msg["tracks"]]
        print(f"frame {msg['frame']} t={msg['t']:.3f}s missed={sub.missed} tracks={ids}", flush=True)
        if limit and n >= limit:
            break
