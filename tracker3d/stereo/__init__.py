"""Stereo stages: which camera-0 and camera-1 tracks see one object (associate), and the 3D
tracks built from those pairs (track3d: triangulation, Kalman filter, coasting, RTS smoothing)."""
from .associate import AssociationConfig, StereoAssociator
from .track3d import PairObservation, Track3D, Track3DConfig, Tracker3D

__all__ = ["AssociationConfig", "PairObservation", "StereoAssociator", "Track3D", "Track3DConfig", "Tracker3D"]
