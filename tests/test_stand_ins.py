"""Stand-in detector / landmark graphs: contract names and shapes, and the runtime face chain running on them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from export.stand_ins import (
    DET_OUTPUT_NAMES,
    face_template_106,
    face_template_203,
    write_box_detector,
    write_stand_in_graphs,
)
from runtime.faces import FaceDetector, Landmark106, Landmark203

ASSETS = Path(__file__).parent / "assets"


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> dict[str, Path]:
    return write_stand_in_graphs(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    bgr = cv2.imread(str(ASSETS / "source_astronaut.png"), cv2.IMREAD_COLOR)
    assert bgr is not None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def eye_lip_ratios(lmk: np.ndarray) -> tuple[float, float, float]:
    d = lambda i, j: float(np.linalg.norm(lmk[i] - lmk[j]))  # noqa: E731
    return d(6, 18) / d(0, 12), d(30, 42) / d(24, 36), d(90, 102) / d(48, 66)


def test_files_and_contracts(graphs):
    root = graphs["landmark"].parents[1]
    rel = {k: p.relative_to(root) for k, p in graphs.items()}
    assert rel["det_10g"].as_posix() == "insightface/models/buffalo_l/det_10g.onnx"
    assert rel["2d106det"].as_posix() == "insightface/models/buffalo_l/2d106det.onnx"
    assert rel["landmark"].as_posix() == "liveportrait/landmark.onnx"
    assert rel["landmark_animals"].as_posix() == "liveportrait_animals/landmark.onnx"
    for path in graphs.values():
        onnx.checker.check_model(onnx.load(path), full_check=True)
    det = session(graphs["det_10g"])
    assert det.get_inputs()[0].name == "input.1" and isinstance(det.get_inputs()[0].shape[2], str)
    assert [o.name for o in det.get_outputs()] == list(DET_OUTPUT_NAMES)
    outs = det.run(None, {"input.1": np.zeros((1, 3, 640, 480), np.float32)})
    rows = {s: (640 // s) * (480 // s) * 2 for s in (8, 16, 32)}
    assert [o.shape for o in outs] == [(rows[s], w) for w in (1, 4, 10) for s in (8, 16, 32)]
    lmk = session(graphs["2d106det"])
    assert lmk.get_inputs()[0].name == "data" and lmk.get_inputs()[0].shape[1:] == [3, 192, 192]
    assert lmk.run(None, {"data": np.zeros((2, 3, 192, 192), np.float32)})[0].shape == (2, 212)
    l203 = session(graphs["landmark"])
    assert l203.get_inputs()[0].name == "input" and l203.get_inputs()[0].shape == [1, 3, 224, 224]
    outs = l203.run(None, {"input": np.zeros((1, 3, 224, 224), np.float32)})
    assert [o.name for o in l203.get_outputs()] == ["output", "853", "856"]
    assert [o.shape for o in outs] == [(1, 214), (1, 262), (1, 406)]


def test_templates_have_plausible_layout():
    t106, t203 = face_template_106(), face_template_203()
    # both share the face box (brow top to chin, jaw width) so a 106 seed and a 203 seed give the same crop
    np.testing.assert_allclose(t106.min(0), t203.min(0), atol=1e-6)
    np.testing.assert_allclose(t106.max(0), t203.max(0), atol=1e-6)
    assert t203[0, 0] < t203[12, 0] and t203[6, 1] < t203[18, 1]  # eye corners left→right, lid top above bottom
    assert t203[48, 0] < t203[66, 0] and t203[90, 1] < t203[102, 1]  # lip corners, inner lip top above bottom
    assert t203[:48, 1].max() < t203[48:108, 1].min()  # eyes above the mouth
    left, right, lip = eye_lip_ratios(t203)
    assert 0.2 < left < 0.5 and 0.2 < right < 0.5 and 0.03 < lip < 0.3


@pytest.mark.parametrize("shape", [(512, 512), (300, 512), (512, 200), (333, 457)])
def test_detector_box_maps_back_through_letterbox(graphs, astronaut, shape):
    h, w = shape
    img = astronaut[:h, :w] if h <= 512 and w <= 512 else astronaut
    faces = FaceDetector(session(graphs["det_10g"])).detect(np.ascontiguousarray(img))
    assert len(faces) == 1
    face = faces[0]
    # the stand-in box is 30–70 % of the width, 20–80 % of the height of the image content
    np.testing.assert_allclose(face.bbox, [0.3 * w, 0.2 * h, 0.7 * w, 0.8 * h], atol=0.01 * max(h, w))
    assert 0.8 < face.score < 1.0
    x1, y1, x2, y2 = face.bbox
    assert np.all((face.kps[:, 0] > x1) & (face.kps[:, 0] < x2) & (face.kps[:, 1] > y1) & (face.kps[:, 1] < y2))
    assert face.kps[0, 0] < face.kps[1, 0] and face.kps[2, 1] < face.kps[3, 1]  # eyes L→R, nose above mouth


def test_detector_upscaled_image_and_black_image(graphs, astronaut):
    big = cv2.resize(astronaut, (900, 700))
    det = FaceDetector(session(graphs["det_10g"]))
    (face,) = det.detect(big)
    np.testing.assert_allclose(face.bbox, [270, 140, 630, 560], atol=9)
    assert det.detect(np.zeros((240, 320, 3), np.uint8)) == []


def test_box_detector_exact_and_sorted(tmp_path):
    boxes = [[40.0, 40.0, 120.0, 150.0], [200.0, 100.0, 420.0, 380.0]]
    det = FaceDetector(session(write_box_detector(tmp_path / "box.onnx", boxes)))
    img = np.full((768, 1024, 3), 90, np.uint8)  # det_scale 0.5
    faces = det.detect(img)
    assert len(faces) == 2
    np.testing.assert_allclose(faces[0].bbox, np.asarray(boxes[1]) * 2, atol=1e-3)  # large-small: big one first
    np.testing.assert_allclose(faces[1].bbox, np.asarray(boxes[0]) * 2, atol=1e-3)
    assert faces[0].score == pytest.approx(0.99)
    assert [f.bbox[0] for f in det.detect(img, direction="left-right")] == [80.0, 400.0]
    with pytest.raises(ValueError, match="same 32-pixel cell"):
        write_box_detector(tmp_path / "bad.onnx", [[0, 0, 40, 40], [2, 2, 42, 42]])


def test_landmark_chain_on_photo(graphs, astronaut):
    (face,) = FaceDetector(session(graphs["det_10g"])).detect(astronaut)
    lmk106 = Landmark106(session(graphs["2d106det"])).predict(astronaut, face.bbox)
    assert lmk106.shape == (106, 2) and lmk106.dtype == np.float32
    x1, y1, x2, y2 = face.bbox
    pad = 0.05 * (x2 - x1)
    assert lmk106[:, 0].min() > x1 - pad and lmk106[:, 0].max() < x2 + pad
    assert lmk106[:, 1].min() > y1 - pad and lmk106[:, 1].max() < y2 + pad

    model203 = Landmark203(session(graphs["landmark"]))
    lmk203 = model203.predict(astronaut, lmk106)
    assert lmk203.shape == (203, 2) and np.all(np.isfinite(lmk203))
    # same face as the 106 points: same box within a few pixels
    np.testing.assert_allclose(lmk203.min(0), lmk106.min(0), atol=3)
    np.testing.assert_allclose(lmk203.max(0), lmk106.max(0), atol=3)
    ratios = eye_lip_ratios(lmk203)
    assert all(np.isfinite(r) and r > 0 for r in ratios)
    # tracking: seeding with its own output lands on (nearly) the same points
    again = model203.predict(astronaut, lmk203)
    assert np.abs(again - lmk203).max() < 1.0


def test_outputs_depend_slightly_on_the_image(graphs, astronaut):
    model = Landmark203(session(graphs["landmark"]))
    seed = Landmark106(session(graphs["2d106det"])).predict(astronaut, np.array([150.0, 100.0, 360.0, 410.0]))
    a = model.predict(astronaut, seed)
    b = model.predict(255 - astronaut, seed)
    shift = np.abs(a - b).max()
    assert 0 < shift < 1.0
