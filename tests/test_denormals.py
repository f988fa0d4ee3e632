"""Heatmap subnormal flush (export/denormals.py): the warping graphs' convolutions never read a subnormal, and the
values are otherwise unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.denormals import FLT_MIN, flush_heatmap_denormals
from export.onnx_export import cpu_session
from runtime.manifest import read_manifest


def _subnormal(values: np.ndarray) -> int:
    magnitude = np.abs(values)
    return int(((magnitude > 0) & (magnitude < FLT_MIN)).sum())


def _exp(x: str, y: str, form: str) -> onnx.NodeProto:
    return helper.make_node("Exp", [x], [y]) if form == "exp" else helper.make_node("Pow", ["e", x], [y])


def _heatmap_graph(gaussian_output: bool = False, form: str = "exp") -> onnx.ModelProto:
    """Two Gaussians exp(-d²/2σ²) of x and y, their difference into a 3×3 Conv (the dense-motion network's shape);
    form "pow" writes exp(x) as Pow(e, x), as the CoreML-friendly graphs do."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array(-50.0, np.float32), "scale"),
             numpy_helper.from_array(np.array(np.e, np.float32), "e"),
             numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) / 5).astype(np.float32), "w")]
    nodes = [helper.make_node("Mul", ["x", "x"], ["x2"]), helper.make_node("Mul", ["x2", "scale"], ["ax"]),
             _exp("ax", "gx", form),
             helper.make_node("Mul", ["y", "y"], ["y2"]), helper.make_node("Mul", ["y2", "scale"], ["ay"]),
             _exp("ay", "gy", form),
             helper.make_node("Sub", ["gx", "gy"], ["heatmap"]),
             helper.make_node("Conv", ["heatmap", "w"], ["z"], pads=[1, 1, 1, 1])]
    value = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 32, 32]) for n in ("x", "y")]
    outputs = [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 32, 32])]
    if gaussian_output:
        outputs.append(helper.make_tensor_value_info("heatmap", TensorProto.FLOAT, [1, 3, 32, 32]))
    graph = helper.make_graph(nodes, "heatmaps", value, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    model.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    return model


@pytest.mark.parametrize("form", ["exp", "pow"])
def test_flush_zeroes_the_subnormals_the_convolution_would_read_and_nothing_else(form: str) -> None:
    model = _heatmap_graph(form=form)
    flushed, count = flush_heatmap_denormals(model)
    assert count == 1
    onnx.checker.check_model(flushed)
    conv = next(n for n in flushed.graph.node if n.op_type == "Conv")
    assert conv.input[0] != "heatmap"  # the convolution reads the flushed tensor
    rng = np.random.default_rng(1)
    feeds = {"x": rng.uniform(-1.5, 1.5, (1, 3, 32, 32)).astype(np.float32),
             "y": rng.uniform(-1.5, 1.5, (1, 3, 32, 32)).astype(np.float32)}
    raw, before = cpu_session(_with_outputs(model, ["heatmap"])).run(["heatmap", "z"], feeds)
    clean, after = cpu_session(_with_outputs(flushed, [conv.input[0]])).run([conv.input[0], "z"], feeds)
    assert _subnormal(raw) > 20  # the inputs do produce them (exponents between -87 and -103)
    assert _subnormal(clean) == 0
    tiny = (np.abs(raw) < FLT_MIN)
    np.testing.assert_array_equal(clean[~tiny], raw[~tiny])  # every normal value untouched
    assert np.all(clean[tiny] == 0)
    assert np.abs(after - before).max() <= 1e-30  # the output cannot tell


def test_graphs_without_the_pattern_are_returned_unchanged() -> None:
    model = _heatmap_graph()
    for node in model.graph.node:
        if node.op_type == "Sub":
            node.op_type = "Add"  # a sum of Gaussians is not the heatmap difference the rule targets
    flushed, count = flush_heatmap_denormals(model)
    assert count == 0 and [n.op_type for n in flushed.graph.node] == [n.op_type for n in model.graph.node]


def test_a_heatmap_that_is_a_graph_output_is_refused() -> None:
    with pytest.raises(ValueError, match="graph output"):
        flush_heatmap_denormals(_heatmap_graph(gaussian_output=True))


def test_exported_cpu_warping_graphs_flush_their_heatmaps(models_with_variants: Path) -> None:
    """warping_spade.wino (onnxruntime's CPU graph) and warping.gs4d (OpenVINO's fp32 half) carry the flush; on
    the fixture weights ~80 000 heatmap values a frame are subnormal before it and none after."""
    manifest = read_manifest(models_with_variants)
    assert manifest.models["warping_spade.wino"].parity["denormal_flushes"] == 1
    for key in ("warping_spade.wino", "warping.gs4d"):
        nodes = onnx.load(models_with_variants / manifest.models[key].file, load_external_data=False).graph.node
        assert sum(n.op_type == "Where" and n.name.startswith("flush_denormals/") for n in nodes) == 1, key
    path = models_with_variants / manifest.models["warping.gs4d"].file
    model = onnx.load(path)
    where = next(n for n in model.graph.node if n.name.startswith("flush_denormals/") and n.op_type == "Where")
    raw, clean = where.input[2], where.output[0]
    rng = np.random.default_rng(0)
    feeds = {"feature_3d": rng.standard_normal((1, 32, 16, 64, 64)).astype(np.float32),
             "kp_source": rng.uniform(-0.5, 0.5, (1, 21, 3)).astype(np.float32),
             "kp_driving": rng.uniform(-0.5, 0.5, (1, 21, 3)).astype(np.float32)}
    before, after = cpu_session(_with_outputs(model, [raw, clean])).run([raw, clean], feeds)
    assert _subnormal(before) > 1000 and _subnormal(after) == 0
