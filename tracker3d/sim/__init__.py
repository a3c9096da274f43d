"""The synthetic stereo world: moving objects with known 3D ground truth, rendered through a real
calibration into both cameras with noise, flicker, distractors and rig faults."""
from .scene import SCENES, SceneConfig, get_scene
from .world import GT_HEADER, GTRow, SimStereoSource, SimWorld
from .record import gt_columns, read_gt, write_sim_recording

__all__ = ["GT_HEADER", "GTRow", "SCENES", "SceneConfig", "SimStereoSource", "SimWorld", "get_scene",
           "gt_columns", "read_gt", "write_sim_recording"]
