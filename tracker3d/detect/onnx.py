"""A user-supplied ONNX detector (YOLO-style output) run through OpenCV's dnn module."""
from __future__ import annotations

import os
from typing import Optional

import cv2
import numpy as np

from ..errors import Tracker3DError
from .base import check_image
from .detections import Detections


class OnnxDetector:
    """YOLO-style ONNX model: input 1x3xSxS (RGB, 0..1, letterboxed), output either (1, N, 5+C)
    rows [cx, cy, w, h, objectness, class scores...] (YOLOv5 style) or (1, 4+C, N) (YOLOv8 style,
    no objectness), in input pixels. Score = objectness x best class score; NMS per image."""

    def __init__(self, path: str, input_size: int = 640, score_threshold: float = 0.25, nms_iou: float = 0.45,
                 classes: Optional[list[int]] = None):
        if not os.path.isfile(path):
            raise Tracker3DError(f"{path}: ONNX model file not found")
        try:
            self.net = cv2.dnn.readNetFromONNX(path)
        except cv2.error as exc:
            msg = str(exc).strip().splitlines()[-1][:160] if str(exc).strip() else "parse error"
            raise Tracker3DError(f"{path}: not a loadable ONNX model ({msg})") from None
        if self.net.empty():
            raise Tracker3DError(f"{path}: not a loadable ONNX model")
        self.path = path
        self.size = int(input_size)
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.classes = classes

    def _letterbox(self, image: np.ndarray) -> tuple[np.ndarray, float, tuple[float, float]]:
        h, w = image.shape[:2]
        r = min(self.size / w, self.size / h)
        nw, nh = int(round(w * r)), int(round(h * r))
        canvas = np.full((self.size, self.size, 3), 114, np.uint8)
        px, py = (self.size - nw) // 2, (self.size - nh) // 2
        canvas[py:py + nh, px:px + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        return canvas, r, (px, py)

    def detect(self, image: np.ndarray, t: float) -> Detections:
        check_image(image)
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        canvas, r, (px, py) = self._letterbox(image[:, :, :3])
        blob = cv2.dnn.blobFromImage(canvas, 1.0 / 255.0, (self.size, self.size), swapRB=True, crop=False)
        self.net.setInput(blob)
        try:
            out = np.asarray(self.net.forward(), dtype=np.float32)
        except cv2.error as exc:
            raise Tracker3DError(f"{self.path}: inference failed ({str(exc).strip()[-160:]})") from None
        out = out.reshape(out.shape[-2], out.shape[-1]) if out.ndim == 3 else out
        if out.ndim != 2 or min(out.shape) < 5:
            raise Tracker3DError(f"{self.path}: output shape {out.shape} is not YOLO-style (N x 5+C or 4+C x N)")
        yolov8 = out.shape[0] < out.shape[1] and out.shape[0] <= 256
        rows = out.T if yolov8 else out
        if yolov8:
            cls = rows[:, 4:]
            obj = np.ones(len(rows), np.float32)
        else:
            obj = rows[:, 4]
            cls = rows[:, 5:] if rows.shape[1] > 5 else np.ones((len(rows), 1), np.float32)
        best = cls.argmax(axis=1)
        score = obj * cls[np.arange(len(rows)), best]
        keep = score >= self.score_threshold
        if self.classes is not None:
            keep &= np.isin(best, self.classes)
        rows, score = rows[keep], score[keep]
        if len(rows) == 0:
            return Detections.empty()
        cx, cy, bw, bh = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
        boxes = np.column_stack([(cx - bw / 2 - px) / r, (cy - bh / 2 - py) / r,
                                 (cx + bw / 2 - px) / r, (cy + bh / 2 - py) / r]).astype(np.float64)
        idx = cv2.dnn.NMSBoxes([list(map(float, (b[0], b[1], b[2] - b[0], b[3] - b[1]))) for b in boxes],
                               score.astype(float).tolist(), self.score_threshold, self.nms_iou)
        idx = np.asarray(idx, dtype=int).ravel()
        d, _ = Detections.from_boxes(boxes[idx], score[idx]).sanitized((image.shape[1], image.shape[0]))
        return d
