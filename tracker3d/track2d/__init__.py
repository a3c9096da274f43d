"""2D tracking in one camera: Detections in, Track2D (with its history) out.

tracker: the ByteTrack-style multi-object tracker; kalman: its batched constant-velocity filter;
mot: MOTChallenge det/gt/result files."""
from .tracker import ByteTracker, Track2D, TrackerConfig

__all__ = ["ByteTracker", "Track2D", "TrackerConfig"]
