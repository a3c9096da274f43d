"""Text labels on images (pixels, OpenCV's BGR): an outlined text, and the placement of many labels
so that none overlaps another (used by the overlay video and the viewer's snapshot)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass
class Label:
    """A text wanted with its baseline's left end at `org` (pixels); `colour` BGR 0..255."""

    text: str
    org: tuple[int, int]
    colour: tuple[int, int, int]
    scale: float = 0.4


def text_box(text: str, org: tuple[int, int], scale: float, thickness: int = 1) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) pixels covered by cv2.putText(text, org, scale), with a 1 px margin."""
    (w, h), base = cv2.getTextSize(text, FONT, scale, thickness)
    return org[0] - 1, org[1] - h - 1, org[0] + w + 1, org[1] + base + 1


def place_labels(labels: list[Label], size: tuple[int, int], max_shift: int = 8) -> list[tuple[int, int]]:
    """Baseline origins, one per label, in order: each label keeps its wanted place unless its box
    intersects one placed before, then it moves down or up by whole text heights (nearest first,
    at most `max_shift` steps each way) to the first free place inside the image (w, h). A label
    running off the left or right edge is first moved inside it."""
    w, h = size
    shifts = np.array([0] + [s for j in range(1, max_shift + 1) for s in (j, -j)])
    placed = np.zeros((len(labels), 4))
    out = []
    for n, lab in enumerate(labels):
        x0, y0, x1, y1 = text_box(lab.text, lab.org, lab.scale)
        x = lab.org[0] - max(x1 - w, 0)
        x -= min(x0 - (lab.org[0] - x), 0)
        dx = x - lab.org[0]
        ys = lab.org[1] + shifts * (y1 - y0)
        cand = np.stack([np.full(len(ys), x0 + dx), ys - (lab.org[1] - y0), np.full(len(ys), x1 + dx),
                         ys + (y1 - lab.org[1])], axis=1)  # (k, 4) boxes
        p = placed[:n]
        hit = ((cand[:, None, 0] < p[None, :, 2]) & (p[None, :, 0] < cand[:, None, 2])
               & (cand[:, None, 1] < p[None, :, 3]) & (p[None, :, 1] < cand[:, None, 3])).any(axis=1)
        free = np.flatnonzero(~hit & (cand[:, 1] >= 0) & (cand[:, 3] <= h))
        k = int(free[0]) if len(free) else 0
        placed[n] = cand[k]
        out.append((int(x), int(ys[k])))
    return out


def put_text(img: np.ndarray, text: str, org: tuple[int, int], colour, scale: float = 0.4,
             outline=(0, 0, 0)) -> None:
    """Text with a 1 px outline: the thin text drawn in the outline colour around its own place (a
    thicker stroke would not do: OpenCV advances each glyph further for thicker text, so the outline
    drifts right of the text along the line)."""
    x, y = org
    for dx, dy in ((-1, -1), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (0, 1), (1, 1)):
        cv2.putText(img, text, (x + dx, y + dy), FONT, scale, outline, 1, cv2.LINE_AA)
    cv2.putText(img, text, org, FONT, scale, colour, 1, cv2.LINE_AA)


def draw_labels(img: np.ndarray, labels: list[Label], outline=(0, 0, 0)) -> list[tuple[int, int]]:
    """Place (no overlaps) and draw the labels; returns where each went."""
    orgs = place_labels(labels, (img.shape[1], img.shape[0]))
    for lab, org in zip(labels, orgs):
        put_text(img, lab.text, org, lab.colour, lab.scale, outline)
    return orgs
