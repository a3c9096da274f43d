"""The 3D viewer: message handling (state, no graphics), Open3D scene, headless snapshots and the
interactive window. Only scene, snapshot and window import open3d; `require_*` check, before
open3d is imported or a window opened, what it needs here and say in one line what is missing."""
from __future__ import annotations

import importlib.util
import os
import re
from typing import Optional

from ..errors import Tracker3DError

# Shared libraries open3d / Vulkan load, and the Debian/Ubuntu package of each.
DEBIAN_PACKAGES = {
    "libusb-1.0.so.0": "libusb-1.0-0", "libGL.so.1": "libgl1", "libEGL.so.1": "libegl1",
    "libGLX.so.0": "libglx0", "libOpenGL.so.0": "libopengl0", "libX11.so.6": "libx11-6",
    "libgomp.so.1": "libgomp1", "libudev.so.1": "libudev1", "libvulkan.so.1": "libvulkan1",
}
SYSTEM_PACKAGES_HINT = "(`.ci/system-packages.sh test` installs all the viewer needs)"


def missing_library(message: str) -> Optional[str]:
    """The shared library named in a loader error ("libX.so.1: cannot open shared object file"), or None."""
    m = re.search(r"([\w.+-]+\.so(?:\.[\w.]+)?): cannot open shared object file", message)
    return m.group(1) if m else None


def install_hint(library: str) -> str:
    pkg = DEBIAN_PACKAGES.get(library)
    if pkg:
        return f"on Debian/Ubuntu: sudo apt-get install {pkg}"
    return f"install the system package that provides {library} (Debian/Ubuntu: apt-file search {library})"


def require_open3d() -> None:
    """Raise a one-line Tracker3DError when open3d is missing (pip) or cannot load (a system library)."""
    try:
        import open3d  # noqa: F401
    except (ImportError, OSError) as e:
        if importlib.util.find_spec("open3d") is None:
            raise Tracker3DError(f"the viewer needs open3d ({e}); install it with: pip install "
                                 "'tracker3d[viewer]'") from None
        lib = missing_library(str(e))
        if lib:
            raise Tracker3DError(f"open3d is installed but cannot load: system library {lib} is missing; "
                                 f"{install_hint(lib)} {SYSTEM_PACKAGES_HINT}") from None
        raise Tracker3DError(f"open3d is installed but cannot load here ({e}); {SYSTEM_PACKAGES_HINT}") from None


def require_display() -> None:
    """Raise a one-line Tracker3DError when no display can show a window: neither DISPLAY nor
    WAYLAND_DISPLAY set, or an X display that does not answer (Open3D would abort the process)."""
    display, wayland = os.environ.get("DISPLAY"), os.environ.get("WAYLAND_DISPLAY")
    if not (display or wayland):
        raise Tracker3DError("no display (DISPLAY and WAYLAND_DISPLAY are unset): use --snapshot PNG, or run "
                             "under Xvfb (xvfb-run tracker3d view ...)")
    if wayland:
        return
    import ctypes

    try:
        x11 = ctypes.CDLL("libX11.so.6")
    except OSError:
        return  # no Xlib to ask with; open3d's own check follows
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    handle = x11.XOpenDisplay(display.encode())
    if not handle:
        raise Tracker3DError(f"no display: cannot open X display {display!r} (DISPLAY): use --snapshot PNG, or "
                             "run under Xvfb (xvfb-run tracker3d view ...)")
    x11.XCloseDisplay(handle)


def require_vulkan() -> None:
    """Raise a one-line Tracker3DError when no Vulkan driver can be loaded: Open3D's offscreen renderer
    needs one (Mesa's software lavapipe is enough) and would otherwise abort the process."""
    import ctypes

    try:
        lib = ctypes.CDLL("libvulkan.so.1")
    except OSError:
        raise Tracker3DError(f"headless rendering needs Vulkan: system library libvulkan.so.1 is missing; "
                             f"on Debian/Ubuntu: sudo apt-get install libvulkan1 mesa-vulkan-drivers "
                             f"{SYSTEM_PACKAGES_HINT}") from None

    class InstanceCreateInfo(ctypes.Structure):  # VkInstanceCreateInfo, all empty
        _fields_ = [("sType", ctypes.c_int), ("pNext", ctypes.c_void_p), ("flags", ctypes.c_uint32),
                    ("pApplicationInfo", ctypes.c_void_p), ("enabledLayerCount", ctypes.c_uint32),
                    ("ppEnabledLayerNames", ctypes.c_void_p), ("enabledExtensionCount", ctypes.c_uint32),
                    ("ppEnabledExtensionNames", ctypes.c_void_p)]

    instance = ctypes.c_void_p()
    info = InstanceCreateInfo(1, None, 0, None, 0, None, 0, None)  # 1: VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO
    result = lib.vkCreateInstance(ctypes.byref(info), None, ctypes.byref(instance))
    if result != 0:
        raise Tracker3DError(f"headless rendering needs a Vulkan driver, and none loads here (vkCreateInstance "
                             f"error {result}); on Debian/Ubuntu: sudo apt-get install mesa-vulkan-drivers "
                             f"{SYSTEM_PACKAGES_HINT}")
    lib.vkDestroyInstance(instance, None)
