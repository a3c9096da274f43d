"""Size prior for blob detectors: the pixel-area range of objects of a known physical size."""
from __future__ import annotations

from ..errors import Tracker3DError


def area_range_px(fx: float, fy: float, size_m: tuple[float, float, float, float],
                  depth_m: tuple[float, float]) -> tuple[float, float]:
    """(min_area, max_area) in pixels^2 of objects whose width x height lies between
    size_m[0] x size_m[1] and size_m[2] x size_m[3] metres, seen at depths depth_m[0]..depth_m[1]
    metres along the optical axis by a camera with focal lengths fx, fy (pixels): a pinhole
    projects w x h metres at depth z to (fx w / z) x (fy h / z) pixels. Blob areas are below box
    areas (a person fills about half its box): the minimum is halved.
    E.g. people (0.3 x 1.0 .. 1.0 x 2.0 m) at 3..30 m with fx = fy = 800: 107 .. 142222 px^2."""
    wmin, hmin, wmax, hmax = (float(v) for v in size_m)
    zmin, zmax = (float(v) for v in depth_m)
    if not (0 < wmin <= wmax and 0 < hmin <= hmax):
        raise Tracker3DError(f"object size {size_m}: expected 0 < min width <= max width, 0 < min height <= max height")
    if not 0 < zmin < zmax:
        raise Tracker3DError(f"depth range {depth_m}: expected 0 < near < far metres")
    if fx <= 0 or fy <= 0:
        raise Tracker3DError(f"focal lengths {fx}, {fy}: expected positive pixels")
    lo = 0.5 * fx * wmin / zmax * fy * hmin / zmax
    hi = fx * wmax / zmin * fy * hmax / zmin
    return lo, hi
