"""Detectors: `detect(image, t) -> Detections`. make_detector('bg' | 'marker' | 'onnx:MODEL')."""
import inspect

from ..errors import Tracker3DError
from .background import BackgroundSubtractionDetector
from .base import Detector
from .hog import HogPersonDetector
from .marker import MarkerDetector
from .onnx import OnnxDetector
from .scaled import AREA_OPTIONS, LENGTH_OPTIONS, ScaledDetector, scaled_options


def _factory(spec: str) -> tuple[type, dict]:
    """The detector class for a spec and the arguments the spec itself sets."""
    if spec in ("bg", "mog2"):
        return BackgroundSubtractionDetector, {"method": "mog2"}
    if spec == "knn":
        return BackgroundSubtractionDetector, {"method": "knn"}
    if spec == "hog":
        return HogPersonDetector, {}
    if spec == "hog-full":
        return HogPersonDetector, {"full_frame": True}
    if spec == "marker":
        return MarkerDetector, {}
    if spec.startswith("onnx:"):
        return OnnxDetector, {"path": spec[5:]}
    raise Tracker3DError(f"--detector {spec!r}: expected bg, knn, hog, hog-full, marker or onnx:MODEL.onnx")


def make_detector(spec: str = "bg", detect_scale: float = 1.0, **kw) -> Detector:
    """'bg' (background subtraction, default), 'knn', 'hog' (people: HOG on moving regions), 'hog-full'
    (HOG over the whole frame, slow), 'marker', or 'onnx:PATH'. Size options (min_area, max_area:
    pixels^2; merge_px: pixels) are at full resolution; detect_scale < 1 runs the detector on images
    downscaled by that factor (ScaledDetector) with the same limits."""
    cls, fixed = _factory(spec)
    if detect_scale == 1.0:
        return cls(**fixed, **kw)
    params = inspect.signature(cls).parameters
    full = {k: p.default for k, p in params.items() if k in LENGTH_OPTIONS + AREA_OPTIONS
            and p.default is not inspect.Parameter.empty}
    inner = scaled_options({**full, **kw}, detect_scale)
    if cls is BackgroundSubtractionDetector and "scale" not in kw:
        # Its foreground mask is already built at params["scale"] (0.5) of its input: kept at that
        # resolution of the full image where it can be (the same blobs; the full-resolution work,
        # centroids and background, on the smaller image).
        inner["scale"] = min(1.0, params["scale"].default / detect_scale) if detect_scale > 0 else 1.0
    return ScaledDetector(cls(**fixed, **inner), detect_scale)


__all__ = ["BackgroundSubtractionDetector", "Detector", "HogPersonDetector", "MarkerDetector", "OnnxDetector",
           "ScaledDetector", "make_detector"]
