"""A contract-conforming stand-in for `xpose.onnx` (built with onnx.helper) and the animal models folder the
animal tests run on.

The stand-in has X-Pose's inputs and outputs (image 1×3×H×W with dynamic H, W; instance_text 1×512; keypoint_text
68×512; keypoint_mask 68 → logits 1×50, boxes 1×50×4, keypoints 1×50×68×2) and deterministic outputs the tests
choose: the group logits, and the points of every group as fractions of the input. It reads its inputs: the
keypoint mask picks the 9- or the 68-point layout (so the text features reach the graph), and the outputs carry a
0 × mean(image) term (so a wrong image layout fails the run).

`animal_models_folder` builds models_onnx/liveportrait_animals/ for tests: the animal networks have the human
architecture, so it reuses the session's exported fixture graphs (random weights either way) under an animal
manifest (exporter.family = liveportrait_animals), adds this stand-in as `xpose` and `xpose_text.npz` (the cached
CLIP features, tests/assets copy). With the real export, point the fixture at that folder instead.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from runtime.manifest import FACE_GRAPHS, MANIFEST_NAME, ModelEntry, TensorSpec, read_manifest, sha256_file

ASSETS = Path(__file__).parent / "assets"
GROUPS, KPTS = 50, 68


def layout_9(center: tuple[float, float] = (0.5, 0.45), size: float = 0.2) -> np.ndarray:
    """Nine face points (upstream order: right eye right/left, left eye right/left, nose, lip right/left,
    upper/lower lip) around ``center``, as fractions of the image; an upright face ``size`` wide."""
    cx, cy = center
    s = size
    pts = [(cx - 0.45 * s, cy - 0.2 * s), (cx - 0.15 * s, cy - 0.2 * s), (cx + 0.15 * s, cy - 0.2 * s),
           (cx + 0.45 * s, cy - 0.2 * s), (cx, cy + 0.1 * s), (cx - 0.25 * s, cy + 0.35 * s),
           (cx + 0.25 * s, cy + 0.35 * s), (cx, cy + 0.3 * s), (cx, cy + 0.42 * s)]
    return np.array(pts, dtype=np.float32)


def layout_68(center: tuple[float, float] = (0.5, 0.45), size: float = 0.2) -> np.ndarray:
    """68 points: a jaw arc and filler points, with the crop's anchors (eye corners 36/39, 42/45, mouth corners
    48/54) at the same places as layout_9's eyes and mouth corners."""
    cx, cy = center
    s = size
    angles = np.linspace(np.pi * 0.05, np.pi * 0.95, 17)
    pts = np.zeros((KPTS, 2), dtype=np.float32)
    pts[:17] = np.c_[cx - 0.5 * s * np.cos(angles), cy + 0.1 * s + 0.4 * s * np.sin(angles)]
    pts[17:] = np.c_[np.linspace(cx - 0.4 * s, cx + 0.4 * s, 51), np.full(51, cy)]
    nine = layout_9(center, size)
    pts[36], pts[39], pts[42], pts[45] = nine[0], nine[1], nine[2], nine[3]
    pts[48], pts[54] = nine[5], nine[6]
    return pts


def build_xpose_stand_in(logits: np.ndarray, points_9: np.ndarray, points_68: np.ndarray,
                         best: int | None = None) -> onnx.ModelProto:
    """The stand-in graph: ``logits`` (50,) raw scores; group ``best`` (default: the argmax) reports
    ``points_9`` / ``points_68`` (fractions), every other group a far-off corner point set."""
    logits = np.asarray(logits, dtype=np.float32).reshape(GROUPS)
    best = int(np.argmax(logits)) if best is None else best
    k9 = np.full((GROUPS, KPTS, 2), 0.9, dtype=np.float32)
    k68 = np.full((GROUPS, KPTS, 2), 0.9, dtype=np.float32)
    k9[best, :9] = points_9
    k68[best] = points_68
    boxes = np.tile(np.array([0.5, 0.5, 0.3, 0.3], dtype=np.float32), (1, GROUPS, 1))
    init = [numpy_helper.from_array(a, n) for a, n in (
        (logits[None], "L"), (k9[None], "K9"), (k68[None], "K68"), (boxes, "B"),
        (np.array(9.5, np.float32), "nine"), (np.array(0.0, np.float32), "zero"))]
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["image_mean"], keepdims=0),
        helper.make_node("Mul", ["image_mean", "zero"], ["tie"]),
        helper.make_node("ReduceSum", ["keypoint_mask"], ["n_kpt"], keepdims=0),
        helper.make_node("Greater", ["n_kpt", "nine"], ["is68"]),
        helper.make_node("Where", ["is68", "K68", "K9"], ["kp_raw"]),
        helper.make_node("Add", ["kp_raw", "tie"], ["keypoints"]),
        helper.make_node("ReduceSum", ["instance_text"], ["text_sum"], keepdims=0),
        helper.make_node("Mul", ["text_sum", "zero"], ["text_tie"]),
        helper.make_node("Add", ["L", "tie"], ["logits_img"]),
        helper.make_node("Add", ["logits_img", "text_tie"], ["logits"]),
        helper.make_node("Add", ["B", "tie"], ["boxes"]),
        helper.make_node("Identity", ["keypoint_text"], ["text_seen"]),
    ]
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "H", "W"]),
              helper.make_tensor_value_info("instance_text", TensorProto.FLOAT, [1, 512]),
              helper.make_tensor_value_info("keypoint_text", TensorProto.FLOAT, [KPTS, 512]),
              helper.make_tensor_value_info("keypoint_mask", TensorProto.FLOAT, [KPTS])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, GROUPS]),
               helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, GROUPS, 4]),
               helper.make_tensor_value_info("keypoints", TensorProto.FLOAT, [1, GROUPS, KPTS, 2])]
    graph = helper.make_graph(nodes, "xpose_stand_in", inputs, outputs, init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def default_logits(best: int = 7, score: float = 0.9) -> np.ndarray:
    """Logits whose best group ``best`` has sigmoid score ``score`` and every other group a lower one."""
    logits = np.full(GROUPS, -4.0, dtype=np.float32)
    logits[best] = np.log(score / (1 - score))
    return logits


def write_xpose(folder: Path, model: onnx.ModelProto) -> ModelEntry:
    """Write the graph as xpose.onnx and return its manifest entry."""
    path = Path(folder) / "xpose.onnx"
    onnx.save(model, path)

    def specs(values) -> list[TensorSpec]:
        out = []
        for v in values:
            dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]
            out.append(TensorSpec(v.name, tuple(dims), "float32"))
        return out

    return ModelEntry(key="xpose", file=path.name, graph="xpose", sha256=sha256_file(path),
                      bytes=path.stat().st_size, opset=17, precision="fp32", grid_sample=None,
                      inputs=specs(model.graph.input), outputs=specs(model.graph.output))


def animal_models_folder(human_models: Path, dest: Path, xpose: onnx.ModelProto | None = None,
                         with_xpose: bool = True) -> Path:
    """models_onnx/liveportrait_animals/ for tests (see the module docstring); returns the folder."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(human_models)
    keep = ("appearance_feature_extractor", "motion_extractor", "warping_spade", "stitching", *FACE_GRAPHS)
    models = {}
    for key in keep:
        entry = manifest.models[key]
        target = dest / entry.file
        if not target.exists():
            try:
                target.hardlink_to(Path(human_models) / entry.file)  # ~300 MB of graphs: link, do not copy
            except OSError:
                shutil.copyfile(Path(human_models) / entry.file, target)
        models[key] = entry
    if with_xpose:
        models["xpose"] = write_xpose(dest, xpose or build_xpose_stand_in(default_logits(), layout_9(), layout_68()))
        shutil.copyfile(ASSETS / "xpose_text.npz", dest / "xpose_text.npz")
    data = {"format": 1, "created": "test", "exporter": {**manifest.exporter, "family": "liveportrait_animals"},
            "models": {k: e.to_json() for k, e in models.items()}}
    (dest / MANIFEST_NAME).write_text(json.dumps(data, indent=2))
    return dest
