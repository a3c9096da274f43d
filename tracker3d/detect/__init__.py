"""Detectors: `detect(image, t) -> Detections`. make_detector('bg' | 'marker' | 'onnx:MODEL')."""
from ..errors import Tracker3DError
from .background import BackgroundSubtractionDetector
from .base import Detector
from .hog import HogPersonDetector
from .marker import MarkerDetector
from .onnx import OnnxDetector


def make_detector(spec: str = "bg", **kw) -> Detector:
    """'bg' (background subtraction, default), 'knn', 'hog' (people: HOG on moving regions), 'hog-full'
    (HOG over the whole frame, slow), 'marker', or 'onnx:PATH'."""
    if spec in ("bg", "mog2"):
        return BackgroundSubtractionDetector(method="mog2", **kw)
    if spec == "knn":
        return BackgroundSubtractionDetector(method="knn", **kw)
    if spec == "hog":
        return HogPersonDetector(**kw)
    if spec == "hog-full":
        return HogPersonDetector(full_frame=True, **kw)
    if spec == "marker":
        return MarkerDetector(**kw)
    if spec.startswith("onnx:"):
        return OnnxDetector(spec[5:], **kw)
    raise Tracker3DError(f"--detector {spec!r}: expected bg, knn, hog, hog-full, marker or onnx:MODEL.onnx")


__all__ = ["BackgroundSubtractionDetector", "Detector", "HogPersonDetector", "MarkerDetector", "OnnxDetector", "make_detector"]
