"""tracker3d: streaming stereo 3D tracker with a learned track-persistence filter."""
__version__ = "0.1.0"
