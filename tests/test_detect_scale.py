"""Detection on a downscaled image (--detect-scale): positions mapped back to full-resolution pixels
at sub-pixel accuracy, the same detections as at full resolution, and the same 3D accuracy."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from persistence import HitCountGate
from tracker3d.cli import main
from tracker3d.detect import ScaledDetector, make_detector
from tracker3d.detect.detections import Detections
from tracker3d.detect.scaled import to_full_resolution
from tracker3d.errors import Tracker3DError
from tracker3d.evaluation.runs import Collector, warmup_s
from tracker3d.pipeline import PipelineConfig, StereoPipeline, run
from tracker3d.sim import SimStereoSource, SimWorld, get_scene, gt_columns


def _gaussian_spots(size, centres, sigma=3.0):
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w))
    for x, y in centres:
        img += 230.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    return np.clip(img + 10.0, 0, 255).astype(np.uint8)


def test_points_map_back_with_the_half_pixel_offset_and_boxes_as_edges():
    small = Detections(np.array([[10.0, 20.0, 14.0, 26.0]]), np.array([[11.25, 22.5]]), np.ones(1), np.array([12.0]))
    full = to_full_resolution(small, 0.5)
    assert np.allclose(full.centroids, [[(11.25 + 0.5) * 2 - 0.5, (22.5 + 0.5) * 2 - 0.5]])
    assert np.allclose(full.boxes, [[20.0, 40.0, 28.0, 52.0]]) and np.allclose(full.areas, [48.0])
    boxed = Detections.from_boxes([[10.0, 20.0, 14.0, 26.0]])  # a box detector: centroid = box centre
    assert np.allclose(to_full_resolution(boxed, 0.5).centroids, [[24.0, 46.0]])


@pytest.mark.parametrize("scale, tol_px", [(0.5, 0.1), (0.25, 0.25)])
def test_scaled_detection_finds_sub_pixel_spots_where_full_resolution_does(scale, tol_px):
    """Spots of sigma 3 px at known sub-pixel positions: full resolution finds them within 0.02 px,
    half scale within 0.1 px, quarter scale within 0.25 px (a missing half-pixel offset alone
    would be 0.5 and 1.5 px)."""
    rng = np.random.default_rng(0)
    centres = [(rng.uniform(40, 1240), rng.uniform(40, 680)) for _ in range(12)]
    centres = [c for i, c in enumerate(centres) if all(np.hypot(c[0] - d[0], c[1] - d[1]) > 30 for d in centres[:i])]
    img = _gaussian_spots((1280, 720), centres)
    truth = np.array(centres)
    full = make_detector("marker", min_value=60).detect(img, 0.0)
    small = make_detector("marker", detect_scale=scale, min_value=60).detect(img, 0.0)
    assert len(full) == len(small) == len(truth)
    for d, tol in ((full, 0.02), (small, tol_px)):
        err = np.linalg.norm(d.centroids[:, None] - truth[None], axis=2).min(axis=1)
        assert err.max() < tol, err
    # Size limits are full-resolution pixels^2 at any scale: the same spots pass them.
    assert np.allclose(small.areas, full.areas, rtol=0.5)


def _match(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.linalg.norm(a[:, None] - b[None], axis=2)
    i, j = linear_sum_assignment(d)
    return d[i, j]


def test_half_scale_bg_detection_agrees_with_full_resolution_on_a_1280x720_sim_pair():
    """Background subtraction on rendered 1280x720 frames (10 objects), after its 2 s warm-up: at
    detect_scale 0.5 the detections are those of full resolution (its mask keeps its resolution),
    centroids within 0.1 px (median) and 1 px (every one)."""
    cfg = get_scene("default").with_(seconds=3.0, width=1280, height=720, n_objects=10, flash_rate=0.0,
                                     clutter_count=0, noise_track_rate=0.0)
    world = SimWorld(cfg, seed=2)
    full = [make_detector("bg") for _ in range(2)]
    half = [make_detector("bg", detect_scale=0.5) for _ in range(2)]
    dists, counts = [], []
    for k in range(66):
        pair, _ = world.step()
        for cam, img in enumerate((pair.img0, pair.img1)):
            a, b = full[cam].detect(img, pair.t0), half[cam].detect(img, pair.t0)
            if k >= 61:
                counts.append((len(a), len(b)))
                dists.extend(_match(a.centroids, b.centroids))
    n_full, n_half = np.sum(counts, axis=0)
    assert n_full >= 50 and n_half >= 0.95 * n_full
    d = np.array(dists)
    assert np.median(d) < 0.1 and d.max() < 1.0, d


def _sim_3d(detect_scale: float) -> dict:
    cfg = get_scene("default").with_(seconds=3.5, width=1280, height=720)
    world = SimWorld(cfg, seed=4)
    src = SimStereoSource(world)
    config = PipelineConfig(detect_scale=detect_scale)
    pipe = StereoPipeline(world.calib, config, gate=HitCountGate(3, 1.0))
    col = Collector(pipe)
    run(src, pipe, on_frame=col)
    pipe.close()
    return col.evaluate(gt_columns(src.gt), cfg.frame_rate, warmup_s(config, cfg.frame_rate))["3d"]


def test_half_scale_detection_keeps_3d_accuracy_on_a_1280x720_sim_run():
    full, half = _sim_3d(1.0), _sim_3d(0.5)
    assert full["rmse_m"] > 0 and half["IDF1"] > 0.8
    assert abs(half["rmse_m"] - full["rmse_m"]) <= 0.1 * full["rmse_m"], (half["rmse_m"], full["rmse_m"])
    assert half["IDF1"] >= full["IDF1"] - 0.02 and half["MOTA"] >= full["MOTA"] - 0.02


def test_a_bad_detect_scale_is_refused_in_one_line(capsys):
    with pytest.raises(Tracker3DError, match="detect scale 1.5"):
        ScaledDetector(make_detector("bg"), 1.5)
    assert main(["demo", "--fast", "--seconds", "0.5", "--no-publish", "--detect-scale", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--detect-scale 0.0" in err[0]
