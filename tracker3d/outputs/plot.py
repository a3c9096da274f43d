"""Plots of 3D trajectories (top and side views) with matplotlib, headless (Agg)."""
from __future__ import annotations

import os
from collections import defaultdict

import numpy as np


def plot_trajectories(messages: list[dict], path: str | os.PathLike, title: str = "") -> int:
    """Draw every track's positions from tracks3d messages: top view (x right, z forward in a
    camera frame; x, y in a world frame) and side view (z forward, y down; or x, z). Returns the
    number of tracks drawn (with none, the figure says "no 3D tracks")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..viewer.state import id_colour

    paths: dict[int, list] = defaultdict(list)
    world = bool(messages) and messages[0].get("frame_id") == "world"
    for m in messages:
        for tr in m["tracks"]:
            paths[int(tr["id"])].append(tr["xyz"])
    fig, (top, side) = plt.subplots(1, 2, figsize=(12, 5.2))
    for i, pts in sorted(paths.items()):
        p = np.asarray(pts)
        c = id_colour(i)
        if world:
            top.plot(p[:, 0], p[:, 1], "-", color=c, lw=1.2)
            side.plot(p[:, 0], p[:, 2], "-", color=c, lw=1.2)
        else:
            top.plot(p[:, 0], p[:, 2], "-", color=c, lw=1.2)
            side.plot(p[:, 2], p[:, 1], "-", color=c, lw=1.2)
        top.annotate(str(i), (p[-1, 0], p[-1, 1] if world else p[-1, 2]), fontsize=7, color=c)
    if world:
        top.set(xlabel="x (m)", ylabel="y (m)", title="top view (world)")
        side.set(xlabel="x (m)", ylabel="z (m)", title="side view (world)")
    else:
        top.set(xlabel="x (m, right)", ylabel="z (m, forward)", title="top view (camera 0)")
        top.plot([0], [0], "k^", ms=8)
        side.set(xlabel="z (m, forward)", ylabel="y (m, down)", title="side view (camera 0)")
        side.invert_yaxis()
        side.plot([0], [0], "k>", ms=8)
    for ax in (top, side):
        ax.set_aspect("equal", adjustable="datalim" if paths else "box")
        ax.grid(True, alpha=0.3)
        if not paths:  # not an empty +-0.04 m frame that looks like a plot of nothing in particular
            ax.text(0.5, 0.7, "no 3D tracks", transform=ax.transAxes, ha="center", va="center", fontsize=20,
                    color="0.35")
    if not paths:  # a few metres around the rig instead
        top.set(xlim=(-3, 3), ylim=(-3, 3) if world else (-1, 8))
        side.set(xlim=(-3, 3) if world else (-1, 8), ylim=(0, 3) if world else (3, -3))
    fig.suptitle(title or f"{len(paths)} 3D tracks, {len(messages)} messages")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return len(paths)
