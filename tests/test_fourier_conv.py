"""Tiled Fourier convolution rewrite (export/fourier_conv.py): within fp32 noise of direct convolution, only where it
applies, and in the CPU's warping graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.fourier_conv import fourier_convs
from export.onnx_export import cpu_session
from runtime.manifest import read_manifest


def _graph(c: int, k_out: int, kernel: int, height: int, width: int, seed: int, stride: int = 1,
           fold: int = 1) -> onnx.ModelProto:
    """x (N×c·fold×H×W) → [Reshape to N·fold×c×H×W] → Conv(kernel, 'same') → Relu; fold > 1 mimics the 3-D convs
    run as 2-D ones over depth slices (a batch that is not the graph's)."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((k_out, c, kernel, kernel)) / np.sqrt(c * kernel ** 2)
    inits = [numpy_helper.from_array(weight.astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(k_out).astype(np.float32), "b")]
    nodes, x = [], "x"
    if fold > 1:
        inits.append(numpy_helper.from_array(np.array([-1, c, height, width], np.int64), "fold"))
        nodes.append(helper.make_node("Reshape", ["x", "fold"], ["folded"]))
        x = "folded"
    pad = kernel // 2
    nodes += [helper.make_node("Conv", [x, "w", "b"], ["conv"], name="conv", pads=[pad] * 4, strides=[stride] * 2),
              helper.make_node("Relu", ["conv"], ["y"])]
    out_h, out_w = (height + 2 * pad - kernel) // stride + 1, (width + 2 * pad - kernel) // stride + 1
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                            ["N", c * fold, height, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", k_out, out_h, out_w])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("kernel", "height", "width", "fold"), [(7, 32, 48, 1), (5, 16, 32, 1), (7, 32, 32, 4)],
                         ids=["7x7", "5x5", "7x7-folded"])
def test_rewrite_matches_direct_convolution(seed: int, kernel: int, height: int, width: int, fold: int) -> None:
    model = _graph(12, 20, kernel, height, width, seed, fold=fold)
    rewritten, report = fourier_convs(model, {"x": (1, 12 * fold, height, width)})
    assert report.rewritten == 1 and report.gmac_after < report.gmac_before / 3
    assert "Conv" in {n.op_type for n in rewritten.graph.node} and not any(
        n.op_type == "Conv" and n.name == "conv" for n in rewritten.graph.node)
    onnx.checker.check_model(rewritten)
    rng = np.random.default_rng(seed + 10)
    for batch in (1, 3):  # the graph keeps its dynamic batch
        x = rng.standard_normal((batch, 12 * fold, height, width)).astype(np.float32)
        direct = cpu_session(model).run(None, {"x": x})[0]
        got = cpu_session(rewritten).run(None, {"x": x})[0]
        assert got.shape == direct.shape
        assert np.abs(got - direct).max() <= 1e-5 * np.abs(direct).max()


@pytest.mark.parametrize(("k_out", "kernel", "size", "stride"), [(8, 7, 32, 1), (20, 3, 32, 1), (20, 7, 24, 1),
                                                                  (20, 7, 32, 2)],
                         ids=["few-outputs", "3x3", "not-a-tile-multiple", "strided"])
def test_convolutions_the_rewrite_does_not_cover_are_kept(k_out: int, kernel: int, size: int, stride: int) -> None:
    model = _graph(12, k_out, kernel, size, size, 0, stride=stride)
    rewritten, report = fourier_convs(model, {"x": (1, 12, size, size)})
    assert report.rewritten == 0
    assert [n.op_type for n in rewritten.graph.node] == [n.op_type for n in model.graph.node]


def test_exported_cpu_graph_runs_the_mask_convolution_in_the_fourier_domain(models_with_variants: Path) -> None:
    """The 7×7×7 mask convolution (70 GMAC a frame) is the one the CPU graph rewrites; the whole graph stays within
    the export's tolerance of the native one (checked before the file is written, recorded in the manifest)."""
    entry = read_manifest(models_with_variants).models["warping_spade.wino"]
    assert entry.parity["fourier_convs"] == 1
    assert entry.parity["max_abs_vs_native"] <= 1e-4 * entry.parity["output_scale"]
