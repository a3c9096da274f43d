"""Person detector with no downloaded weights: OpenCV's HOG + linear SVM (Dalal-Triggs), run only
on person-sized moving regions found by background subtraction."""
from __future__ import annotations

import cv2
import numpy as np

from ..errors import Tracker3DError
from .background import BackgroundSubtractionDetector
from .base import check_image
from .detections import Detections

WIN_W, WIN_H = 64, 128  # the HOG window, pixels
PERSON = (16, 16, 48, 112)  # the person inside the window (x0, y0, x1, y1): about the central 32x96


def tighten(rects: np.ndarray) -> np.ndarray:
    """HOG windows (N,4) x, y, w, h -> person boxes (N,4) xyxy: the window's central 32x96 share."""
    r = np.asarray(rects, np.float64).reshape(-1, 4)
    sx, sy = r[:, 2] / WIN_W, r[:, 3] / WIN_H
    return np.column_stack([r[:, 0] + PERSON[0] * sx, r[:, 1] + PERSON[1] * sy,
                            r[:, 0] + PERSON[2] * sx, r[:, 1] + PERSON[3] * sy])


def margin_score(margin: np.ndarray) -> np.ndarray:
    """SVM margin -> score in [0,1]: 1 / (1 + exp(-2 margin)); margin 0 (the SVM's own boundary)
    scores 0.5, the tracker's first-stage threshold; margins down to hit_threshold (-0.5: 0.27)
    are kept as low-score detections for the tracker's second stage."""
    return 1.0 / (1.0 + np.exp(-2.0 * np.asarray(margin, np.float64)))


class HogPersonDetector:
    """People as boxes, no weights to download: background subtraction proposes moving regions
    (blobs of min_area..max_area pixels^2, fragments within merge_px merged), each region grown by
    half its width and a quarter of its height is upscaled so a person in it is about `person_px`
    tall (by at most max_upscale; HOG needs people >= 96 px tall) and searched with OpenCV's
    default people detector (HOGDescriptor_getDefaultPeopleDetector, `nlevels` scales 1.05 apart,
    stride 8 px); windows are tightened to the person (`tighten`), scored from the SVM margin
    (`margin_score`), and overlapping ones suppressed (NMS at IoU nms_iou). A group walking
    together is one region but comes out as one box per person. With full_frame=True the whole
    frame is searched at `full_upscale` (no background subtraction; slow: a benchmark reference).
    Centroids are box centres."""

    def __init__(self, min_area: float = 150.0, max_area: float = 60000.0, merge_px: float = 6.0,
                 person_px: float = 140.0, max_upscale: float = 2.0, hit_threshold: float = -0.5,
                 nms_iou: float = 0.4, nlevels: int = 12, full_frame: bool = False, full_upscale: float = 2.0, **bg_kw):
        if not 1.0 <= max_upscale <= 4.0 or not 1.0 <= full_upscale <= 4.0:
            raise Tracker3DError(f"upscale {max_upscale}/{full_upscale}: expected 1..4")
        # Default parameters, but scales only up to 1.05^nlevels: regions are upscaled so their
        # people are about person_px tall already (full frame: all scales).
        self.hog = cv2.HOGDescriptor((WIN_W, WIN_H), (16, 16), (8, 8), (8, 8), 9, 1, -1.0,
                                     cv2.HOGDescriptor_L2Hys, 0.2, False, 64 if full_frame else nlevels)
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.bg = None if full_frame else BackgroundSubtractionDetector(min_area=min_area, max_area=max_area,
                                                                        merge_px=merge_px, **bg_kw)
        self.person_px, self.max_upscale, self.full_upscale = float(person_px), float(max_upscale), float(full_upscale)
        self.hit_threshold, self.nms_iou = float(hit_threshold), float(nms_iou)

    def _search(self, image: np.ndarray, x0: int, y0: int, up: float) -> tuple[np.ndarray, np.ndarray]:
        """HOG over image (a crop whose top-left is x0, y0) upscaled by `up`: windows (N,4) x, y,
        w, h in full-image pixels and their margins."""
        big = image if up == 1.0 else cv2.resize(image, None, fx=up, fy=up, interpolation=cv2.INTER_LINEAR)
        if big.shape[0] < WIN_H or big.shape[1] < WIN_W:
            return np.zeros((0, 4)), np.zeros(0)
        rects, weights = self.hog.detectMultiScale(big, hitThreshold=self.hit_threshold, winStride=(8, 8),
                                                   padding=(8, 8), scale=1.05)
        if len(rects) == 0:
            return np.zeros((0, 4)), np.zeros(0)
        r = np.asarray(rects, np.float64).reshape(-1, 4) / up
        r[:, 0] += x0
        r[:, 1] += y0
        return r, np.asarray(weights, np.float64).ravel()

    def regions(self, image: np.ndarray, t: float) -> list[tuple[int, int, int, int, float]]:
        """Candidate regions (x0, y0, x1, y1, upscale) from background subtraction, overlapping
        ones joined."""
        H, W = image.shape[:2]
        cands = self.bg.detect(image, t)
        out: list[list[float]] = []
        for x0, y0, x1, y1 in cands.boxes:
            w, h = x1 - x0, y1 - y0
            up = float(np.clip(self.person_px / max(h, 1.0), 1.0, self.max_upscale))
            # Room for a whole window around the blob (a blob can be half a person: legs, torso).
            gw, gh = max(w, WIN_W / up), max(h, WIN_H / up)
            out.append([max(0.0, x0 - gw / 2), max(0.0, y0 - gh / 2), min(W, x1 + gw / 2), min(H, y1 + gh / 2), up])
        merged = True
        while merged and len(out) > 1:  # join overlapping regions (one HOG pass each)
            merged = False
            for i in range(len(out)):
                for j in range(i + 1, len(out)):
                    a, b = out[i], out[j]
                    if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                        out[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]), max(a[4], b[4])]
                        del out[j]
                        merged = True
                        break
                if merged:
                    break
        return [(int(a[0]), int(a[1]), int(np.ceil(a[2])), int(np.ceil(a[3])), a[4]) for a in out]

    def detect(self, image: np.ndarray, t: float) -> Detections:
        check_image(image)
        img = image if image.ndim == 2 or image.shape[2] == 3 else image[:, :, :3]
        if self.bg is None:
            rects, margins = self._search(img, 0, 0, self.full_upscale)
        else:
            found = [self._search(img[y0:y1, x0:x1], x0, y0, up) for x0, y0, x1, y1, up in self.regions(img, t)]
            rects = np.concatenate([f[0] for f in found]) if found else np.zeros((0, 4))
            margins = np.concatenate([f[1] for f in found]) if found else np.zeros(0)
        if len(rects) == 0:
            return Detections.empty()
        boxes = tighten(rects)
        scores = margin_score(margins)
        keep = cv2.dnn.NMSBoxes([[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes],
                                scores.tolist(), 0.0, self.nms_iou)
        keep = np.asarray(keep, int).ravel()
        d, _ = Detections.from_boxes(boxes[keep], scores[keep]).sanitized((image.shape[1], image.shape[0]))
        return d
