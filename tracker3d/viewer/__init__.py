"""The 3D viewer: message handling (state, no graphics), Open3D scene, headless snapshots and the
interactive window. Only scene, snapshot and window import open3d."""
from ..errors import Tracker3DError


def require_open3d() -> None:
    """Raise a one-line Tracker3DError when open3d is missing or cannot load here."""
    try:
        import open3d  # noqa: F401
    except ImportError as e:
        raise Tracker3DError(f"the viewer needs open3d ({e}); install it with: pip install 'tracker3d[viewer]'") \
            from None
    except OSError as e:  # e.g. a missing system library such as libusb-1.0
        raise Tracker3DError(f"open3d cannot load here ({e}); on Debian/Ubuntu: apt install libusb-1.0-0 "
                             "libgl1 (and libvulkan1 mesa-vulkan-drivers for headless snapshots)") from None
