"""Open3D geometry for the viewer: track spheres, fading trails, velocity arrows, camera frusta,
a ground grid and axes. Imports open3d (only the viewer modules do)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import open3d as o3d

from calib.stereo import StereoCalibration

from .state import ViewerState

SPHERE_RADIUS = 0.06  # metres


def _lines(points: np.ndarray, lines: np.ndarray, colours: np.ndarray) -> o3d.geometry.LineSet:
    ls = o3d.geometry.LineSet()
    ls.points = o3d.utility.Vector3dVector(np.asarray(points, float).reshape(-1, 3))
    ls.lines = o3d.utility.Vector2iVector(np.asarray(lines, np.int32).reshape(-1, 2))
    ls.colors = o3d.utility.Vector3dVector(np.asarray(colours, float).reshape(-1, 3))
    return ls


def camera_centres(calib: StereoCalibration) -> np.ndarray:
    """(2, 3) camera centres in the published frame (camera 0 frame, or world if calibrated)."""
    c = np.array([np.zeros(3), calib.center1])
    return calib.to_world(c) if calib.has_world else c


def frustum(calib: StereoCalibration, cam: int, depth: float = 0.4, colour=(0.2, 0.2, 0.2)) -> o3d.geometry.LineSet:
    """A camera's viewing pyramid to `depth` metres, in the published frame."""
    m = calib.cam0 if cam == 0 else calib.cam1
    w, h = m.image_size
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], float)
    rays = np.column_stack([corners, np.ones(4)]) @ np.linalg.inv(m.K).T * depth  # camera frame
    pts = np.vstack([np.zeros(3), rays])
    if cam == 1:  # camera 1 frame -> camera 0 frame: X0 = R^T (X1 - T)
        pts = (pts - calib.T.reshape(3)) @ calib.R
    if calib.has_world:
        pts = calib.to_world(pts)
    lines = [[0, 1], [0, 2], [0, 3], [0, 4], [1, 2], [2, 3], [3, 4], [4, 1]]
    return _lines(pts, lines, np.tile(colour, (len(lines), 1)))


GROUND_Y = 1.0  # metres below camera 0 (OpenCV y points down) where the grid lies without a world frame


def ground_grid(calib: Optional[StereoCalibration], size: float = 10.0, step: float = 0.5) -> o3d.geometry.LineSet:
    """A grid in the ground plane: z = 0 in a world frame (centred below the point 4 m in front of
    camera 0), else the plane y = 1 m below camera 0 spanning x and z in front of it."""
    k = np.arange(-size / 2, size / 2 + 1e-9, step)
    world = calib is not None and calib.has_world
    if world:
        ahead = calib.to_world(np.array([[0.0, 0.0, 4.0]]))[0]
        cx, cy = ahead[0], ahead[1]
    pts, lines = [], []
    for v in k:
        if world:
            a, b = [cx + v, cy - size / 2, 0.0], [cx + v, cy + size / 2, 0.0]
            c, d = [cx - size / 2, cy + v, 0.0], [cx + size / 2, cy + v, 0.0]
        else:
            a, b = [v, GROUND_Y, 0.0], [v, GROUND_Y, size]
            c, d = [-size / 2, GROUND_Y, v + size / 2], [size / 2, GROUND_Y, v + size / 2]
        for p, q in ((a, b), (c, d)):
            lines.append([len(pts), len(pts) + 1])
            pts += [p, q]
    return _lines(np.array(pts), np.array(lines), np.full((len(lines), 3), 0.78))


def _ground_point(xyz: np.ndarray, world: bool) -> np.ndarray:
    g = np.array(xyz, float)
    if world:
        g[2] = 0.0
    else:
        g[1] = GROUND_Y
    return g


def track_geometries(state: ViewerState, radius: float = SPHERE_RADIUS) -> list[tuple[str, o3d.geometry.Geometry]]:
    """(name, geometry) for every track: its sphere, a thin line down to the ground (depth cue),
    its fading trail and its velocity arrow (1 s of motion)."""
    out = []
    world = state.frame_id == "world"
    for i, v in state.tracks.items():
        out.append((f"drop{i}", _lines(np.array([v.xyz, _ground_point(v.xyz, world)]), [[0, 1]], [(0.6, 0.6, 0.6)])))
        s = o3d.geometry.TriangleMesh.create_sphere(radius, resolution=12)
        s.translate(v.xyz)
        s.paint_uniform_color(v.colour)
        s.compute_vertex_normals()
        out.append((f"track{i}", s))
        pts, fade = state.trail_points(i)
        if len(pts) >= 2:  # consecutive repeats dropped: zero-length segments crash Filament
            keep = np.r_[True, np.linalg.norm(np.diff(pts, axis=0), axis=1) > 1e-6]
            pts, fade = pts[keep], fade[keep]
        if len(pts) >= 2:
            col = np.asarray(v.colour)[None, :] * fade[1:, None] + (1 - fade[1:, None]) * 0.9
            out.append((f"trail{i}", _lines(pts, np.column_stack([np.arange(len(pts) - 1), np.arange(1, len(pts))]),
                                            col)))
        arrow = velocity_arrow(v.xyz, v.vel, v.colour, radius)
        if arrow is not None:
            out.append((f"vel{i}", arrow))
    return out


def velocity_arrow(xyz: np.ndarray, vel: np.ndarray, colour, radius: float) -> Optional[o3d.geometry.TriangleMesh]:
    """An arrow from the sphere's surface along the velocity, as long as 1 s of motion."""
    speed = float(np.linalg.norm(vel))
    if speed < 1e-3:
        return None
    length = max(speed, 2 * radius)
    a = o3d.geometry.TriangleMesh.create_arrow(cylinder_radius=radius * 0.18, cone_radius=radius * 0.4,
                                               cylinder_height=length * 0.8, cone_height=length * 0.2, resolution=10)
    z = np.array([0.0, 0.0, 1.0])
    d = np.asarray(vel, float) / speed
    axis = np.cross(z, d)
    s, c = np.linalg.norm(axis), float(z @ d)
    if s < 1e-9:
        R = np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    else:
        k = axis / s
        Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        R = np.eye(3) + s * Kx + (1 - c) * Kx @ Kx
    a.rotate(R, center=np.zeros(3))
    a.translate(np.asarray(xyz, float) + d * radius)
    a.paint_uniform_color(colour)
    a.compute_vertex_normals()
    return a


def static_geometries(calib: Optional[StereoCalibration]) -> list[tuple[str, o3d.geometry.Geometry]]:
    out = [("grid", ground_grid(calib)), ("axes", o3d.geometry.TriangleMesh.create_coordinate_frame(0.3))]
    if calib is not None:
        out += [("frustum0", frustum(calib, 0, colour=(0.1, 0.3, 0.8))), ("frustum1", frustum(calib, 1, colour=(0.8, 0.3, 0.1)))]
    return out
