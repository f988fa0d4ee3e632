"""Stand-in detector and landmark graphs with the official files' names, inputs and outputs.

The insightface and landmark models are user-supplied (and insightface's are non-commercial), so tests and the
fixture tree use small hand-built graphs instead. They are not trained networks; they make the pipeline run on any
image with plausible geometry:

* ``det_10g.onnx`` reports ONE face: the box spanning 30 %–70 % of the width and 20 %–80 % of the height of the
  *image content* inside the letterboxed input. The content extent is measured in the graph as the bounding box of
  non-padding pixels (padding is black, (0 − 127.5) / 128 after normalisation), so the face maps back to the same
  fractions of the original image whatever its aspect ratio. An all-black input gives no face. Score ≈ 0.9, nudged by
  the mean intensity. Keypoints sit at eye, nose and mouth-corner positions inside the box.
* ``2d106det.onnx`` and ``landmark.onnx`` return a fixed face template (jaw, brows, eyes, nose, mouth in the index
  ranges LivePortrait reads) shifted by a sub-pixel amount that depends on the mean intensity. The 203-point template
  is placed so that feeding its own output back as the seed reproduces it, and so that a 106-point seed from the
  stand-in 2d106det lands on the same face.

Graphs are built with ``onnx.helper`` only (no torch) at opset 17.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
DET_STRIDES = (8, 16, 32)
DET_ANCHORS = 2
# det_10g output names in their order: scores 8/16/32, boxes 8/16/32, keypoints 8/16/32.
DET_OUTPUT_NAMES = ("448", "471", "494", "451", "474", "497", "454", "477", "500")
# Face box as fractions of the content (x1, y1, x2, y2) and keypoints as fractions of the box.
CONTENT_BOX = (0.3, 0.2, 0.7, 0.8)
KPS_IN_BOX = ((0.32, 0.40), (0.68, 0.40), (0.50, 0.60), (0.36, 0.80), (0.64, 0.80))
PAD_LEVEL = -0.99  # normalised black is -0.99609375; anything above counts as content
LMK106_SCALE = 0.6  # canonical face → 2d106det output units ([-1, 1] over the 1.5×box crop)
LMK203_CENTER = (0.5, 0.6)  # where the seed points' box centre lands in the 224 crop (vy_ratio −0.1 → +0.1)
LMK203_SCALE = 1.0 / 3.0  # half of 1/1.5: canonical extent 2 → 1/1.5 of the crop
INTENSITY_GAIN = 0.004  # output shift per unit of (mean intensity − 0.5): well under a pixel


# ----------------------------------------------------------------------------------------------------------------
# canonical face: brow top at y = −1, chin at y = +1, x within ±0.75, box centre at the origin
# ----------------------------------------------------------------------------------------------------------------
def _ring(cx: float, cy: float, a: float, b: float, n: int) -> np.ndarray:
    """n points on an ellipse: index 0 at the left corner, n/4 at the top, n/2 right, 3n/4 bottom."""
    phi = np.pi - 2 * np.pi * np.arange(n) / n
    return np.stack([cx + a * np.cos(phi), cy - b * np.sin(phi)], axis=1)


def _arc(cx: float, cy: float, a: float, b: float, t0: float, t1: float, n: int) -> np.ndarray:
    """n points along an elliptic arc from angle t0 to t1 (image coordinates, y down)."""
    t = np.linspace(t0, t1, n)
    return np.stack([cx + a * np.cos(t), cy + b * np.sin(t)], axis=1)


def _line(p0: tuple[float, float], p1: tuple[float, float], n: int) -> np.ndarray:
    """n evenly spaced points from p0 to p1."""
    return np.linspace(np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64), n)


def _jaw(n: int) -> np.ndarray:
    return _arc(0.0, -0.6, 0.75, 1.6, np.pi, 0.0, n)  # ear level (y −0.6) down to the chin (y +1)


def _brow(side: int, n: int) -> np.ndarray:
    pts = _arc(0.32, -0.90, 0.23, 0.10, np.pi + 0.0, 2 * np.pi, n)  # top of the arc at y −1
    pts[:, 1] += -1.0 - pts[:, 1].min()  # exact top at −1 whatever the sampling
    pts[:, 0] *= side
    return pts if side > 0 else pts[::-1]


def _eye(side: int, n: int) -> np.ndarray:
    return _ring(0.30 * side, -0.62, 0.15, 0.045, n)


def _nose(n_bridge: int, n_base: int) -> np.ndarray:
    return np.concatenate([_line((0.0, -0.55), (0.0, -0.05), n_bridge), _arc(0.0, -0.02, 0.13, 0.07, np.pi, 0, n_base)])


def face_template_106() -> np.ndarray:
    """106 canonical points in insightface order: jaw 0–32, eye 33–42, brow 43–51, mouth 52–71, nose 72–86,
    eye 87–96, brow 97–105 (mouth corners 52 / 61, eye-centre sets 33,35,40,39 and 87,89,94,93)."""
    mouth = np.concatenate([_ring(0.0, 0.45, 0.26, 0.10, 18), [[0.0, 0.43], [0.0, 0.47]]])
    parts = [_jaw(33), _eye(-1, 10), _brow(-1, 9), mouth, _nose(9, 6), _eye(1, 10), _brow(1, 9)]
    pts = np.concatenate(parts)
    assert pts.shape == (106, 2)
    return pts


def face_template_203() -> np.ndarray:
    """203 canonical points in LivePortrait order: eyes 0–23 / 24–47 (corners 0,12 / 24,36; lids 6,18 / 30,42),
    outer lip 48–83 (corners 48, 66), inner lip 84–107 (midpoints 90 top, 102 bottom), jaw 108–140, brows 141–160,
    nose 161–180, cheeks 181–200, pupils 201–202."""
    cheeks = np.concatenate([_line((-0.45, -0.4), (-0.45, 0.3), 10), _line((0.45, -0.4), (0.45, 0.3), 10)])
    pupils = np.array([[-0.30, -0.62], [0.30, -0.62]])
    parts = [
        _eye(-1, 24),
        _eye(1, 24),
        _ring(0.0, 0.45, 0.26, 0.10, 36),
        _ring(0.0, 0.45, 0.20, 0.025, 24),
        _jaw(33),
        _brow(-1, 10),
        _brow(1, 10),
        _nose(12, 8),
        cheeks,
        pupils,
    ]
    pts = np.concatenate(parts)
    assert pts.shape == (203, 2)
    return pts


# ----------------------------------------------------------------------------------------------------------------
# small graph builder
# ----------------------------------------------------------------------------------------------------------------
class _Builder:
    """Collects nodes and constants with unique names so graph code reads like arithmetic."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def _name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, value: np.ndarray | float | int | Sequence[float], dtype: type = np.float32) -> str:
        name = self._name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: object) -> str:
        name = out or self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=self._name(op_type), **attrs))
        return name

    def model(self, inputs: list, outputs: list, name: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.inits)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="liveportrait-onnx stand-in"
        )
        model.ir_version = IR_VERSION
        helper.set_model_props(model, {"stand_in": "true", "purpose": "tests and fixture tree; not a trained model"})
        onnx.checker.check_model(model, full_check=True)
        return model


def _scalar_i64(b: _Builder, shape: str, axis: int) -> str:
    return b.op("Gather", shape, b.const(axis, np.int64), axis=0)


def _det_outputs(b: _Builder, x: str, boxes: str, scores: str) -> None:
    """Write the 9 SCRFD outputs for K boxes (K×4, input pixels) and scores (K): each box sits at anchor 0 of the
    stride-32 cell holding its centre; every other anchor scores 0."""
    shape = b.op("Shape", x)
    h, w = _scalar_i64(b, shape, 2), _scalar_i64(b, shape, 3)
    one_col = b.const([1], np.int64)
    per_stride: dict[int, tuple[str, str]] = {}
    for s in DET_STRIDES:
        hs, ws = b.op("Div", h, b.const(s, np.int64)), b.op("Div", w, b.const(s, np.int64))
        n = b.op("Mul", b.op("Mul", hs, ws), b.const(DET_ANCHORS, np.int64))
        per_stride[s] = (n, ws)
        if s != 32:
            n1 = b.op("Unsqueeze", n, b.const([0], np.int64))
            for idx, width in ((0, 1), (3, 4), (6, 10)):
                dims = b.op("Concat", n1, b.const([width], np.int64), axis=0)
                zero = helper.make_tensor("z", TensorProto.FLOAT, [1], [0.0])
                b.op("ConstantOfShape", dims, out=DET_OUTPUT_NAMES[idx + DET_STRIDES.index(s)], value=zero)
    n32, w32 = per_stride[32]
    h32 = b.op("Div", h, b.const(32, np.int64))
    # anchor cell of each box centre, clipped to the map
    centre = b.op("MatMul", boxes, b.const([[0.5, 0], [0, 0.5], [0.5, 0], [0, 0.5]]))
    cell = b.op("Floor", b.op("Div", centre, b.const(32.0)))
    map_wh = b.op("Concat", *[b.op("Unsqueeze", v, b.const([0], np.int64)) for v in (w32, h32)], axis=0)
    upper = b.op("Sub", b.op("Cast", map_wh, to=TensorProto.FLOAT), b.const(1.0))
    cell = b.op("Max", b.op("Min", cell, upper), b.const(0.0))  # K×2 (col, row)
    anchor = b.op("Mul", cell, b.const(32.0))  # K×2 anchor centres
    w32_col = b.op("Unsqueeze", b.op("Cast", w32, to=TensorProto.FLOAT), b.const([0, 1], np.int64))
    flat = b.op("MatMul", cell, b.op("Concat", b.const([[1.0]]), w32_col, axis=0))  # col + row · map width
    index = b.op("Cast", b.op("Mul", flat, b.const(float(DET_ANCHORS))), to=TensorProto.INT64)  # K×1
    slots = b.op("Unsqueeze", b.op("Range", b.const(0, np.int64), n32, b.const(1, np.int64)), b.const([0], np.int64))
    onehot_t = b.op("Transpose", b.op("Cast", b.op("Equal", index, slots), to=TensorProto.FLOAT), perm=[1, 0])  # N×K
    # distances in stride units: (ax − x1, ay − y1, x2 − ax, y2 − ay) / 32 and keypoint offsets / 32
    anchor4 = b.op("Concat", anchor, anchor, axis=1)
    sign = b.const([[1.0, 1.0, -1.0, -1.0]])
    dist = b.op("Div", b.op("Mul", b.op("Sub", anchor4, boxes), sign), b.const(32.0))
    kps_mix = np.zeros((4, 10), dtype=np.float32)
    for k, (fx, fy) in enumerate(KPS_IN_BOX):
        kps_mix[0, 2 * k], kps_mix[2, 2 * k] = 1 - fx, fx
        kps_mix[1, 2 * k + 1], kps_mix[3, 2 * k + 1] = 1 - fy, fy
    kps = b.op("MatMul", boxes, b.const(kps_mix))
    kdist = b.op("Div", b.op("Sub", kps, b.op("Tile", anchor, b.const([1, 5], np.int64))), b.const(32.0))
    b.op("MatMul", onehot_t, b.op("Unsqueeze", scores, one_col), out=DET_OUTPUT_NAMES[2])
    b.op("MatMul", onehot_t, dist, out=DET_OUTPUT_NAMES[5])
    b.op("MatMul", onehot_t, kdist, out=DET_OUTPUT_NAMES[8])


def _det_io() -> tuple[list, list]:
    inputs = [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "?", "?"])]
    outputs = []
    for i, name in enumerate(DET_OUTPUT_NAMES):
        width = (1, 4, 10)[i // 3]
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"n{DET_STRIDES[i % 3]}", width]))
    return inputs, outputs


def build_content_detector() -> onnx.ModelProto:
    """det_10g stand-in: one face at CONTENT_BOX of the non-padding region; none on an all-black input."""
    b = _Builder()
    x = "input.1"
    brightest = b.op("ReduceMax", x, axes=[1], keepdims=0)
    mask = b.op("Cast", b.op("Greater", brightest, b.const(PAD_LEVEL)), to=TensorProto.FLOAT)  # 1×H×W
    extents = []
    for axis, dim in ((1, 3), (2, 2)):  # width: reduce rows; height: reduce columns
        line = b.op("ReduceMax", mask, axes=[axis], keepdims=0)  # 1×W or 1×H
        size = b.op("Cast", _scalar_i64(b, b.op("Shape", x), dim), to=TensorProto.FLOAT)
        ramp = b.op("Range", b.const(1.0), b.op("Add", size, b.const(1.0)), b.const(1.0))
        extents.append(b.op("ReduceMax", b.op("Mul", line, ramp), keepdims=0))  # last content index + 1
    cw, ch = extents
    whwh = b.op("Concat", *[b.op("Unsqueeze", v, b.const([0], np.int64)) for v in (cw, ch, cw, ch)], axis=0)
    whwh = b.op("Reshape", whwh, b.const([1, 4], np.int64))
    boxes = b.op("Mul", whwh, b.const([CONTENT_BOX]))
    present = b.op("Min", b.op("Mul", cw, ch), b.const(1.0))
    brightness = b.op("ReduceMean", x, keepdims=0)
    score = b.op("Mul", b.op("Add", b.const(0.9), b.op("Mul", brightness, b.const(0.05))), present)
    _det_outputs(b, x, boxes, b.op("Unsqueeze", score, b.const([0], np.int64)))
    return b.model(*_det_io(), name="det_10g_stand_in")


def build_box_detector(boxes_xyxy: np.ndarray, score: float = 0.99) -> onnx.ModelProto:
    """SCRFD-shaped graph that reports exactly the given boxes (input pixels) for any input."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    if np.any(boxes[:, 2] <= boxes[:, 0]) or np.any(boxes[:, 3] <= boxes[:, 1]):
        raise ValueError(f"boxes must have x2 > x1 and y2 > y1, got {boxes.tolist()}")
    cells = {(int((x1 + x2) / 2 // 32), int((y1 + y2) / 2 // 32)) for x1, y1, x2, y2 in boxes}
    if len(cells) != len(boxes):
        raise ValueError("two boxes have their centres in the same 32-pixel cell; the stand-in holds one per cell")
    b = _Builder()
    _det_outputs(b, "input.1", b.const(boxes), b.const(np.full(len(boxes), score, dtype=np.float32)))
    return b.model(*_det_io(), name="det_box_stand_in")


def _intensity_shift(b: _Builder, x: str, full_scale: float) -> str:
    """N×1 tiny offset from the mean input intensity (0 at mid-grey)."""
    mean = b.op("ReduceMean", x, axes=[1, 2, 3], keepdims=0)
    centred = b.op("Sub", b.op("Div", mean, b.const(full_scale)), b.const(0.5))
    return b.op("Unsqueeze", b.op("Mul", centred, b.const(INTENSITY_GAIN)), b.const([1], np.int64))


def _y_pattern(n_values: int) -> np.ndarray:
    pattern = np.zeros((1, n_values), dtype=np.float32)
    pattern[0, 1::2] = 1.0
    return pattern


def build_landmark106(jitter: np.ndarray | None = None) -> onnx.ModelProto:
    """2d106det stand-in: input ``data`` N×3×192×192 raw pixels, output ``fc1`` N×212 in [-1, 1] crop units."""
    pts = face_template_106() * LMK106_SCALE + (0 if jitter is None else jitter[:106])
    b = _Builder()
    shift = _intensity_shift(b, "data", 255.0)
    b.op("Add", b.const(pts.reshape(1, -1)), b.op("Mul", shift, b.const(_y_pattern(212))), out="fc1")
    inputs = [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["None", 3, 192, 192])]
    outputs = [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["None", 212])]
    return b.model(inputs, outputs, name="2d106det_stand_in")


def build_landmark203(jitter: np.ndarray | None = None) -> onnx.ModelProto:
    """landmark.onnx stand-in: input ``input`` 1×3×224×224 in [0, 1]; outputs ``output`` 1×214, ``853`` 1×262 and
    ``856`` 1×406 (the 203 points in [0, 1] crop units, the one LivePortrait reads)."""
    pts = face_template_203() * LMK203_SCALE + np.asarray(LMK203_CENTER) + (0 if jitter is None else jitter)
    b = _Builder()
    shift = _intensity_shift(b, "input", 1.0)
    b.op("Add", b.const(pts.reshape(1, -1)), b.op("Mul", shift, b.const(_y_pattern(406))), out="856")
    b.op("Mul", shift, b.const(np.ones((1, 214))), out="output")
    b.op("Mul", shift, b.const(np.ones((1, 262))), out="853")
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])]
    outputs = [
        helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 214]),
        helper.make_tensor_value_info("853", TensorProto.FLOAT, [1, 262]),
        helper.make_tensor_value_info("856", TensorProto.FLOAT, [1, 406]),
    ]
    return b.model(inputs, outputs, name="landmark203_stand_in")


STAND_IN_FILES = {
    "det_10g": "insightface/models/buffalo_l/det_10g.onnx",
    "2d106det": "insightface/models/buffalo_l/2d106det.onnx",
    "landmark": "liveportrait/landmark.onnx",
    "landmark_animals": "liveportrait_animals/landmark.onnx",
}


def write_stand_in_graphs(out_dir: Path, seed: int = 0) -> dict[str, Path]:
    """Write the four stand-in graphs under ``out_dir`` in the official tree; ``seed`` sets a ≤1e-3 template jitter."""
    rng = np.random.default_rng(seed)
    jitter = rng.uniform(-1e-3, 1e-3, size=(203, 2))
    models = {
        "det_10g": build_content_detector(),
        "2d106det": build_landmark106(jitter),
        "landmark": build_landmark203(jitter),
        "landmark_animals": build_landmark203(jitter),
    }
    written = {}
    for key, model in models.items():
        path = Path(out_dir) / STAND_IN_FILES[key]
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, path)
        written[key] = path
    return written


def write_box_detector(path: Path, box_xyxy_in_input_pixels: Sequence[float] | np.ndarray, score: float = 0.99) -> Path:
    """Write a det_10g-shaped graph that reports exactly the given box (or K×4 boxes) in detector-input pixels."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(build_box_detector(np.asarray(box_xyxy_in_input_pixels), score), path)
    return path
