"""Detectors against the sim's ground truth, marker and ONNX detectors, bad images."""
import cv2
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from tracker3d.detect import BackgroundSubtractionDetector, MarkerDetector, OnnxDetector, make_detector
from tracker3d.errors import Tracker3DError
from tracker3d.sim import SimWorld, get_scene


def _match(pred, gt, tol):
    if len(pred) == 0 or len(gt) == 0:
        return np.zeros(0)
    D = np.linalg.norm(pred[:, None] - gt[None], axis=2)
    r, c = linear_sum_assignment(D)
    return D[r, c][D[r, c] < tol]


@pytest.mark.parametrize("method", ["mog2", "knn"])
def test_background_detector_finds_sim_objects(method):
    tp = n_gt = n_det = 0
    errs = []
    for seed, k in ((s, k) for s in (0, 5) for k in range(150)):
        if k == 0:
            world = SimWorld(get_scene("default"), seed=seed)
            det = BackgroundSubtractionDetector(method=method)
        pair, gt = world.step()
        d = det.detect(pair.img0, pair.t0)
        if k < 60:
            continue  # 2 s to learn a background that had objects in it from the start
        objs = np.array([r.uv0 for r in gt if r.kind == "object" and r.vis0]).reshape(-1, 2)
        every = np.array([r.uv0 for r in gt if r.vis0]).reshape(-1, 2)  # objects and distractors
        m = _match(d.centroids, objs, 3.0)
        tp += len(m)
        errs.extend(m)
        n_gt += len(objs)
        n_det += len(d)
        assert len(_match(d.centroids, every, 3.0)) >= len(m)
    recall = tp / n_gt
    assert recall > (0.93 if method == "mog2" else 0.85)  # merged blobs of nearby objects are the misses
    assert np.median(errs) < 0.3, "sub-pixel centroids"
    assert n_det < 1.35 * n_gt


def test_scores_mean_contrast():
    det = BackgroundSubtractionDetector()
    bg = np.full((120, 160, 3), 100, np.uint8)
    for _ in range(det.warmup_frames + 5):
        assert len(det.detect(bg, 0.0)) == 0
    img = bg.copy()
    cv2.circle(img, (40, 60), 6, (250, 250, 250), -1)  # strong
    cv2.circle(img, (120, 60), 6, (120, 120, 120), -1)  # faint
    d = det.detect(img, 1.0)
    assert len(d) == 2
    strong = d.scores[np.argmin(d.centroids[:, 0])]
    faint = d.scores[np.argmax(d.centroids[:, 0])]
    assert strong > 0.9 and faint < 0.6
    np.testing.assert_allclose(sorted(d.centroids[:, 0]), [40, 120], atol=0.2)


def test_marker_detector_intensity_and_hue():
    img = np.full((100, 100, 3), 40, np.uint8)
    cv2.circle(img, (20, 30), 4, (255, 255, 255), -1)
    cv2.circle(img, (70, 60), 5, (0, 0, 255), -1)  # red marker (BGR)
    cv2.circle(img, (50, 80), 5, (0, 255, 0), -1)  # green marker
    white = MarkerDetector(min_value=200).detect(img, 0.0)
    assert len(white) == 1 and np.allclose(white.centroids[0], (20, 30), atol=0.3)
    red = MarkerDetector(min_value=150, hue=(170, 10)).detect(img, 0.0)  # wraps around 180
    assert len(red) == 1 and np.allclose(red.centroids[0], (70, 60), atol=0.3)
    assert red.scores[0] > 0.5


class _TinyYolo:
    """Builds a YOLOv5-style ONNX model in the test: an 8x8 grid on a 64x64 input; each cell
    reports a 16x16 box at its centre with objectness sigmoid(20 (brightness - 0.5))."""

    @staticmethod
    def export(path):
        torch = pytest.importorskip("torch")
        pytest.importorskip("onnx")

        class M(torch.nn.Module):
            def forward(self, x):
                g = torch.nn.functional.avg_pool2d(x.mean(dim=1, keepdim=True), 8)
                obj = torch.sigmoid(20 * (g - 0.5)).reshape(1, 64, 1)
                ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
                cx = (xs.reshape(1, 64, 1) + 0.5) * 8
                cy = (ys.reshape(1, 64, 1) + 0.5) * 8
                return torch.cat([cx, cy, torch.full((1, 64, 2), 8.0), obj, torch.ones(1, 64, 1)], dim=2)

        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(M(), (torch.zeros(1, 3, 64, 64),), str(path), dynamo=False, opset_version=13)


def test_onnx_detector(tmp_path):
    model = tmp_path / "tiny.onnx"
    _TinyYolo.export(model)
    det = make_detector(f"onnx:{model}", input_size=64, score_threshold=0.5)
    img = np.zeros((128, 128, 3), np.uint8)
    img[32:48, 80:96] = 255  # one grid cell of the 64x64 letterboxed input
    d = det.detect(img, 0.0)
    assert len(d) == 1
    np.testing.assert_allclose(d.boxes[0], [80, 32, 96, 48], atol=0.5)
    assert d.scores[0] > 0.99
    assert len(det.detect(np.zeros((128, 128, 3), np.uint8), 0.0)) == 0


def test_onnx_errors(tmp_path):
    with pytest.raises(Tracker3DError, match="ONNX model file not found"):
        OnnxDetector(str(tmp_path / "none.onnx"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x01garbage" * 50)
    with pytest.raises(Tracker3DError, match="not a loadable ONNX model"):
        OnnxDetector(str(bad))
    with pytest.raises(Tracker3DError, match="expected bg, knn, hog, hog-full, marker or onnx"):
        make_detector("yolo")


def test_bad_images_are_clear():
    det = BackgroundSubtractionDetector()
    with pytest.raises(Tracker3DError, match="uint8"):
        det.detect(np.zeros((48, 64, 3), np.float32), 0.0)
    with pytest.raises(Tracker3DError, match="expected HxW"):
        det.detect(np.zeros((48, 64, 2), np.uint8), 0.0)
    det.detect(np.zeros((48, 64), np.uint8), 0.0)  # greyscale is fine
    with pytest.raises(Tracker3DError, match="set up for 64x48"):
        det.detect(np.zeros((480, 640, 3), np.uint8), 0.1)
