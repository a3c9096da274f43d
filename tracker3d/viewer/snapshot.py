"""Headless rendering of the viewer's scene to a PNG with Open3D's OffscreenRenderer (works
without a display, e.g. with Mesa's software Vulkan/EGL)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import open3d as o3d

from calib.stereo import StereoCalibration

from ..errors import Tracker3DError
from ..outputs.labels import Label, draw_labels
from .scene import static_geometries, track_geometries
from .state import ViewerState


@dataclass
class ViewCamera:
    """A pinhole view of the scene: K (3x3, pixels) and extrinsic (4x4, scene frame -> view frame,
    OpenCV axes), image size in pixels."""

    K: np.ndarray
    extrinsic: np.ndarray
    width: int
    height: int

    def project(self, xyz: np.ndarray) -> np.ndarray:
        """(n, 3) scene points -> (n, 2) pixels."""
        X = np.asarray(xyz, float).reshape(-1, 3) @ self.extrinsic[:3, :3].T + self.extrinsic[:3, 3]
        uv = X @ self.K.T
        return uv[:, :2] / uv[:, 2:3]


def default_camera(state: ViewerState, calib: Optional[StereoCalibration], width: int = 960,
                   height: int = 540) -> ViewCamera:
    """Looks at the tracks (or 3 m in front of camera 0) from behind and above the rig."""
    pts = np.array([v.xyz for v in state.tracks.values()]) if state.tracks else np.zeros((0, 3))
    centre = pts.mean(axis=0) if len(pts) else np.array([0.0, 0.0, 3.0])
    if calib is not None:  # keep the rig in view: look between it and the tracks
        from .scene import camera_centres

        rig = camera_centres(calib)
        centre = 0.5 * (centre + rig.mean(axis=0))
        pts = np.vstack([pts, rig])
    span = float(np.ptp(pts, axis=0).max()) if len(pts) > 1 else 2.0
    world = calib is not None and calib.has_world
    up = np.array([0.0, 0.0, 1.0]) if world else np.array([0.0, -1.0, 0.0])
    back = np.array([0.0, -1.0, 0.0]) if world else np.array([0.0, 0.0, -1.0])
    fx = 0.9 * width
    K = np.array([[fx, 0, width / 2], [0, fx, height / 2], [0, 0, 1.0]])
    dist = max(span, 2.0) * 1.1
    for _ in range(12):  # back off until the tracks, their trails and the rig are all in the frame
        cam = ViewCamera(K, _look_at(centre + (back * 0.8 + up * 1.0) * dist, centre, up), width, height)
        trail = [p for v in state.tracks.values() for _, p in v.trail] + \
            [v.xyz + v.vel for v in state.tracks.values()]  # velocity arrow tips
        allp = np.vstack([pts] + ([np.array(trail)] if trail else []))
        if not len(allp):
            break
        uv = cam.project(allp)
        if np.all((uv[:, 0] > 0.04 * width) & (uv[:, 0] < 0.96 * width) & (uv[:, 1] > 0.04 * height)
                  & (uv[:, 1] < 0.96 * height)):
            break
        dist *= 1.15
    return cam


def _look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """4x4 extrinsic (scene -> view, OpenCV axes: x right, y down, z forward) looking at target."""
    f = target - eye
    f /= np.linalg.norm(f)
    r = np.cross(f, up)
    r /= np.linalg.norm(r)
    d = np.cross(f, r)  # image y points down
    R = np.vstack([r, d, f])
    ext = np.eye(4)
    ext[:3, :3] = R
    ext[:3, 3] = -R @ eye
    return ext


def render(state: ViewerState, calib: Optional[StereoCalibration], path: Optional[str] = None,
           camera: Optional[ViewCamera] = None) -> tuple[np.ndarray, ViewCamera]:
    """Render the state to an (H, W, 3) uint8 image (and save it to `path` as PNG)."""
    cam = camera or default_camera(state, calib)
    r = o3d.visualization.rendering.OffscreenRenderer(cam.width, cam.height)
    try:
        r.scene.set_background([1.0, 1.0, 1.0, 1.0])
        r.scene.view.set_post_processing(False)  # exact colours: no tone mapping
        unlit = o3d.visualization.rendering.MaterialRecord()
        unlit.shader = "defaultUnlit"
        line = o3d.visualization.rendering.MaterialRecord()
        line.shader = "unlitLine"
        line.line_width = 2.0
        radius = max(0.06, 0.012 * max(float(np.linalg.norm(cam.extrinsic[:3, 3])), 1.0))
        for name, g in static_geometries(calib) + track_geometries(state, radius):
            r.scene.add_geometry(name, g, line if isinstance(g, o3d.geometry.LineSet) else unlit)
        r.setup_camera(o3d.camera.PinholeCameraIntrinsic(cam.width, cam.height, cam.K), cam.extrinsic)
        img = np.ascontiguousarray(np.asarray(r.render_to_image()))
    finally:
        del r
    draw_id_labels(img, state, cam, radius)
    if path and not (o3d.io.write_image(str(path), o3d.geometry.Image(img)) and Path(path).is_file()):
        raise Tracker3DError(f"{path}: could not write the PNG")
    return img, cam


def draw_id_labels(img: np.ndarray, state: ViewerState, cam: ViewCamera, radius: float) -> None:
    """Write each track's ID beside its sphere (2D text at the projected centre, right of the
    sphere's edge; nearby labels moved apart) and a header line (time, track count): RGB image."""
    labels = [Label(f"t {state.t:.2f} s  {len(state.tracks)} tracks", (8, 20), (30, 30, 30), 0.5)]
    for i in sorted(state.tracks):
        v = state.tracks[i]
        depth = float((cam.extrinsic[:3, :3] @ v.xyz + cam.extrinsic[:3, 3])[2])
        if depth <= 0:
            continue
        u, vv = cam.project(v.xyz)[0]
        r_px = cam.K[0, 0] * radius / depth
        labels.append(Label(f"#{i}", (int(round(u + r_px + 3)), int(round(vv + 5))), (30, 30, 30), 0.5))
    draw_labels(img, labels, outline=(255, 255, 255))
