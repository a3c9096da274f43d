"""The interactive viewer window (Open3D GUI): a 3D scene and an info panel, fed by a
background subscriber thread (state.RedrawPump) that wakes the window only when a new message
arrived, at most `fps` times a second, always with the newest message."""
from __future__ import annotations

import logging
import threading
from typing import Optional

import open3d as o3d
import open3d.visualization.gui as gui
import open3d.visualization.rendering as rendering

from calib.stereo import StereoCalibration
from streams.publisher import Subscriber

from .scene import static_geometries, track_geometries
from .snapshot import default_camera
from .state import RedrawPump, ViewerState

log = logging.getLogger(__name__)


def run_window(sub: Subscriber, calib: Optional[StereoCalibration], state: ViewerState, fps: float = 30.0,
               width: int = 1280, height: int = 760) -> dict:
    """Open the window and draw until it is closed; returns counts (applied, stale, replaced: messages
    skipped for newer ones)."""
    app = gui.Application.instance
    app.initialize()
    win = app.create_window("tracker3d view", width, height)
    scene = gui.SceneWidget()
    scene.scene = rendering.Open3DScene(win.renderer)
    scene.scene.set_background([1.0, 1.0, 1.0, 1.0])
    lit = rendering.MaterialRecord()
    lit.shader = "defaultLit"
    line = rendering.MaterialRecord()
    line.shader = "unlitLine"
    line.line_width = 2.0

    def material(g):
        return line if isinstance(g, o3d.geometry.LineSet) else lit

    for name, g in static_geometries(calib):
        scene.scene.add_geometry(name, g, material(g))
    framed = {"tracks": False}

    def frame_view() -> None:
        """Point the view at the tracks and the rig (as the snapshot does); the mouse moves it."""
        w, h = max(scene.frame.width, 64), max(scene.frame.height, 64)
        cam = default_camera(state, calib, w, h)
        scene.setup_camera(o3d.camera.PinholeCameraIntrinsic(w, h, cam.K), cam.extrinsic,
                           o3d.geometry.AxisAlignedBoundingBox([-5, -5, -1], [5, 5, 12]))
        framed["tracks"] = bool(state.tracks)

    def on_key(event) -> bool:
        if event.type == gui.KeyEvent.Type.DOWN and event.key == gui.KeyName.F:
            frame_view()
            return gui.Widget.EventCallbackResult.HANDLED
        return gui.Widget.EventCallbackResult.IGNORED

    scene.set_on_key(on_key)
    info = gui.Label("waiting for messages ... (F: frame the tracks)")
    panel = gui.Vert(4, gui.Margins(8, 8, 8, 8))
    panel.add_child(info)
    win.add_child(scene)
    win.add_child(panel)

    def layout(ctx):
        r = win.content_rect
        pw = min(420, r.width // 3)
        resized = scene.frame.width != r.width - pw or scene.frame.height != r.height
        scene.frame = gui.Rect(r.x, r.y, r.width - pw, r.height)
        panel.frame = gui.Rect(r.get_right() - pw, r.y, pw, r.height)
        if resized and not framed["tracks"]:
            frame_view()

    win.set_on_layout(layout)
    names: list[str] = []

    def redraw() -> None:  # on the GUI thread, when the pump has a new message
        msg = pump.take()
        if msg is None or not state.apply(msg):
            return
        for n in names:
            scene.scene.remove_geometry(n)
        names.clear()
        for n, g in track_geometries(state):
            scene.scene.add_geometry(n, g, material(g))
            names.append(n)
        if not framed["tracks"] and state.tracks:  # the first tracks: frame them once
            frame_view()
        info.text = state.info_text()
        win.post_redraw()

    # Open3D redraws a window after every function posted to it: post only for a new message.
    pump = RedrawPump(sub, wake=lambda: app.post_to_main_thread(win, redraw), fps=fps)

    def closing() -> bool:
        pump.stop.set()
        return True

    win.set_on_close(closing)
    receiver = threading.Thread(target=pump.run, daemon=True)
    receiver.start()
    app.run()
    pump.stop.set()
    receiver.join(timeout=2.0)  # it polls the socket the caller closes next: wait for it
    return {"applied": state.applied, "stale": state.stale, "replaced": pump.box.replaced + sub.skipped}
