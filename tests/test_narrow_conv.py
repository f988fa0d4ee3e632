"""Narrow-output convolutions as a 1×1 convolution per kernel tap plus a one-hot tap sum: the direct convolution up
to fp32 summation order, with padding, stride, dilation and bias kept; anything else is left alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.narrow_conv import narrow_output_convs, tap_sum_kernel
from export.onnx_export import cpu_session
from runtime.manifest import read_manifest


def _conv_graph(seed: int, out: int, c: int, kernel: tuple[int, int], bias: bool = True, group: int = 1,
                **attrs) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((out, c // group) + kernel) / np.sqrt(c * kernel[0] * kernel[1])
    inits = [numpy_helper.from_array(weight.astype(np.float32), "w")]
    inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(out).astype(np.float32), "b"))
        inputs.append("b")
    node = helper.make_node("Conv", inputs, ["y"], name="conv", group=group, **attrs)
    graph = helper.make_graph([node, helper.make_node("Sigmoid", ["y"], ["s"])], "narrow",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c, "H", "W"])],
                              [helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N", out, "H2", "W2"])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)


def test_tap_sum_kernel_is_one_hot_per_tap() -> None:
    kernel = tap_sum_kernel(2, 3, 5)
    assert kernel.shape == (2, 15, 3, 5) and kernel.sum() == 2 * 15
    assert kernel[1, 2 * 5 + 4, 2, 4] == 1 and kernel[1, 2 * 5 + 4].sum() == 1


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("out", "kernel", "attrs", "bias"), [
    (1, (7, 7), {"pads": [3, 3, 3, 3]}, True),  # the occlusion convolution's form
    (2, (3, 5), {"pads": [0, 2, 1, 1]}, False),  # asymmetric padding, no bias
    (3, (3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}, True),
    (1, (3, 3), {"pads": [2, 2, 2, 2], "dilations": [2, 2]}, True),
])
def test_rewrite_matches_the_direct_convolution(seed: int, out: int, kernel: tuple[int, int], attrs: dict,
                                                bias: bool) -> None:
    model = _conv_graph(seed, out, 32, kernel, bias=bias, **attrs)
    rewritten, report = narrow_output_convs(model, min_in=16)
    onnx.checker.check_model(rewritten)
    assert report.rewritten == 1
    convs = [n for n in rewritten.graph.node if n.op_type == "Conv"]
    assert len(convs) == 2 and "w" not in {i.name for i in rewritten.graph.initializer}
    rng = np.random.default_rng(20 + seed)
    for batch in (1, 2):
        x = rng.standard_normal((batch, 32, 11, 13)).astype(np.float32)
        want = cpu_session(model).run(None, {"x": x})[0]
        got = cpu_session(rewritten).run(None, {"x": x})[0]
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize(("out", "c", "kernel", "group"), [
    (8, 32, (3, 3), 1),  # enough output channels for the CPU EP's blocks
    (2, 8, (3, 3), 1),  # too few input channels to pay
    (2, 32, (1, 1), 1),  # already a 1×1 GEMM
    (2, 32, (3, 3), 2),  # grouped
])
def test_other_convolutions_are_left_alone(out: int, c: int, kernel: tuple[int, int], group: int) -> None:
    model = _conv_graph(0, out, c, kernel, group=group)
    rewritten, report = narrow_output_convs(model, min_in=16)
    assert report.rewritten == 0
    assert [n.op_type for n in rewritten.graph.node] == ["Conv", "Sigmoid"]


def test_exported_cpu_graph_runs_the_occlusion_convolution_per_tap(models_with_variants: Path) -> None:
    """Only the 2 272 → 1, 7×7 occlusion convolution qualifies; the graph stays within 1e-4 of the native one."""
    entry = read_manifest(models_with_variants).models["warping_spade.wino"]
    assert entry.parity["narrow_convs"] == 1
    assert entry.parity["max_abs_vs_native"] <= 1e-4 * entry.parity["output_scale"]
    model = onnx.load(models_with_variants / "warping_spade.wino.onnx", load_external_data=False)
    rewritten = {n.name.split("/narrow/")[0] for n in model.graph.node if "/narrow/" in n.name}
    assert rewritten == {"/warping/dense_motion_network/occlusion/Conv"}
