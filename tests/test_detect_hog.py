"""--detector hog on a real frame (PETS 2009 S2.L1 view 1 as OpenCV's vtest.avi, frame 300; six
people hand-labelled), and the ONNX path for a user's own model built with the `onnx` package."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from tracker3d.detect import HogPersonDetector, make_detector
from tracker3d.detect.hog import margin_score, tighten
from tracker3d.track2d.tracker import iou_matrix

FRAME = Path(__file__).parent / "data" / "pets09_vtest" / "frame300.jpg"
# Hand-labelled person boxes (xyxy pixels) in frame300.jpg, checked by eye on the image.
PEOPLE = np.array([[188, 159, 213, 234], [242, 161, 262, 222], [298, 160, 322, 232], [316, 207, 346, 297],
                   [582, 157, 609, 237], [619, 161, 645, 237]], float)


def test_tighten_takes_the_central_person_of_the_window():
    np.testing.assert_allclose(tighten([[100, 50, 64, 128]]), [[116, 66, 148, 162]])
    np.testing.assert_allclose(tighten([[0, 0, 128, 256]]), [[32, 32, 96, 224]])  # scales with the window
    assert margin_score(0.0) == pytest.approx(0.5) and margin_score(3.0) > 0.99 and margin_score(-0.5) < 0.3


def test_full_frame_hog_finds_the_labelled_people():
    img = cv2.imread(str(FRAME))
    crop = img[130:310, 150:680]  # the band holding all six people (keeps the test fast)
    d = make_detector("hog-full").detect(crop, 0.0)
    boxes = d.boxes + [150, 130, 150, 130]
    iou = iou_matrix(PEOPLE, boxes)
    assert (iou.max(axis=1) >= 0.5).all(), iou.max(axis=1)  # recall 6/6, boxes tight on the person
    confident = d.scores >= 0.5
    assert (iou[:, confident].max(axis=0) >= 0.5).mean() >= 0.75  # precision of the confident ones


def test_hog_on_moving_regions_finds_a_walking_person_only():
    img = cv2.imread(str(FRAME))
    x0, y0, x1, y1 = 612, 150, 652, 245  # a real person (PEOPLE[5]) with a margin, pasted on the grass
    person = img[y0:y1, x0:x1].copy()
    det = HogPersonDetector()
    hits = []
    for k in range(40):
        frame = img.copy()
        if k >= 25:  # the background (everyone standing still) is learned by then: 2 s at 10 fps
            x = 80 + 8 * (k - 25)
            frame[400:495, x:x + 40] = person
            truth = np.array([[x + 7, 411, x + 33, 487]], float)
        d = det.detect(frame, k / 10.0)
        if k < 25:
            assert len(d) == 0
        elif k > 26:
            strong = d.boxes[d.scores >= 0.5]
            hits.append(len(strong) == 1 and iou_matrix(truth, strong)[0, 0] >= 0.5)
    assert np.mean(hits) >= 0.8, hits


def test_onnx_model_built_with_the_onnx_package(tmp_path):
    """The documented ONNX layout (YOLOv8 style: 1 x (4 + classes) x N rows cx, cy, w, h, class
    scores, in input pixels) from a model made with `onnx.helper` alone: a constant output."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    rows = np.zeros((8, 6), np.float32)  # eight candidates, two classes; six score nothing
    rows[0] = [32, 20, 16, 24, 0.9, 0.05]
    rows[1] = [10, 10, 4, 4, 0.1, 0.2]
    out = rows.T[None]  # 1 x 6 x 8
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, list(out.shape))
    const = helper.make_tensor("c", TensorProto.FLOAT, list(out.shape), out.ravel().tolist())
    # output = c + 0 * mean(images): a real graph reading its input
    nodes = [helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["z"]),
             helper.make_node("Add", ["c", "z"], ["output"])]
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    graph = helper.make_graph(nodes, "const_yolo", [x], [y], initializer=[const, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "const.onnx"
    onnx.save(model, str(path))
    d = make_detector(f"onnx:{path}", input_size=64, score_threshold=0.5).detect(np.zeros((128, 128, 3), np.uint8), 0)
    assert len(d) == 1  # the second row scores 0.2 < 0.5
    np.testing.assert_allclose(d.boxes[0], [48, 16, 80, 64], atol=1e-3)  # input pixels x 2 (128 -> 64)
    assert d.scores[0] == pytest.approx(0.9, abs=1e-6)
