"""The stereo pipeline's mechanisms for real detections, measured on the real WildTrack C1-C2 slice
(tests/data/wildtrack_c1c2_slice: 40 frames at 2 fps, cameras 31 m apart) against its world ground
truth (ground plane, 0.5 m)."""
from __future__ import annotations

from conftest import DATA

from persistence import HitCountGate
from streams.detections import DetectionFolder
from tracker3d.evaluation.runs import evaluate_source
from tracker3d.pipeline import PipelineConfig
from tracker3d.stereo.track3d import Track3DConfig

SLICE = DATA / "wildtrack_c1c2_slice"


def _ground(variant: str, config: PipelineConfig) -> dict:
    d = SLICE / variant
    src = DetectionFolder.open_folder(d)
    res = evaluate_source(src, src.calib, d / "gt.csv", config, HitCountGate(3, 1.0), show_progress=False)
    return res["ground"]


def test_outside_boxes_are_triangulated_with_box_noise_by_default():
    """A detection folder's boxes get BOX_NOISE_REL without any option: with a blob detector's exact-
    centroid noise (0.25 px) person boxes 10-30 m away triangulate inconsistently, and most of their
    3D tracks are refused or deleted."""
    auto = _ground("clean", PipelineConfig(threads=False))
    exact = _ground("clean", PipelineConfig(threads=False, pixel_rel=0.0, truncated_rel=0.0,
                                            track3d=Track3DConfig(max_pos_rel=0.0)))
    assert auto["recall"] > exact["recall"] + 0.08 and auto["MOTA"] > exact["MOTA"] + 0.05, (auto, exact)
