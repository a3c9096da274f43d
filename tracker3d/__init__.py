"""tracker3d: streaming stereo 3D tracker (two calibrated cameras in, 3D tracks out on ZeroMQ)."""
__version__ = "0.1.0"
