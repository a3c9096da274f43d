"""Camera and stereo models, calibration files and boards, epipolar geometry, triangulation.

Imports numpy, scipy and cv2 only. Units: pixels in images; the unit of T (metres by
convention) in 3D; 3D points are in camera 0's frame with OpenCV axes.
"""
from .boards import Board, BoardDetector
from .calibrate import CalibrationReport, calibrate_stereo
from .camera import CameraModel
from .errors import CalibrationError
from .io import load_calibration, save_calibration, validate
from .stereo import Rectification, StereoCalibration, from_world_poses
from .triangulate import Triangulation, triangulate, triangulation_error_bound

__all__ = [
    "Board", "BoardDetector", "CalibrationError", "CalibrationReport", "CameraModel", "Rectification",
    "StereoCalibration", "Triangulation", "calibrate_stereo", "from_world_poses", "load_calibration",
    "save_calibration", "triangulate", "triangulation_error_bound", "validate",
]
