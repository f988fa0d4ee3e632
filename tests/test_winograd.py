"""Winograd F(4×4, 3×3) rewrite: exact in theory, within fp32 noise of direct convolution, only where it applies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.onnx_export import cpu_session
from export.winograd import conv_input_shapes, output_form_for, winograd_convs, winograd_matrices
from runtime.cpu_route import cpu_flags
from runtime.manifest import read_manifest
from runtime.sessions import pick_variant


def test_matrices_compute_a_3_tap_correlation_exactly() -> None:
    """Aᵀ[(G·g) ⊙ (Bᵀ·d)] is the 4 outputs of correlating 6 inputs with 3 taps (float64, so exact to rounding)."""
    bt, g, at = winograd_matrices()
    rng = np.random.default_rng(0)
    for _ in range(20):
        d, taps = rng.standard_normal(6), rng.standard_normal(3)
        expected = np.array([d[i:i + 3] @ taps for i in range(4)])
        np.testing.assert_allclose(at @ ((g @ taps) * (bt @ d)), expected, rtol=0, atol=1e-12)


def _conv_graph(specs: list[dict], c: int = 32, size: int = 32, fold_batch: bool = False) -> onnx.ModelProto:
    """A chain of Convs (+Relu) described by `specs`; with fold_batch the first conv sees batch×2 (like the 3-D
    convolutions of the .wino graph, run as 2-D ones over batch×depth)."""
    rng = np.random.default_rng(1)
    nodes, inits, x, channels, hw = [], [], "x", c, size
    if fold_batch:
        inits.append(numpy_helper.from_array(np.array([-1, c // 2, size, size], np.int64), "fold"))
        nodes.append(helper.make_node("Reshape", [x, "fold"], ["folded"]))
        x, channels = "folded", c // 2
    for i, spec in enumerate(specs):
        k, kernel, group = spec.get("k", 32), spec.get("kernel", 3), spec.get("group", 1)
        weight = (rng.standard_normal((k, channels // group, kernel, kernel)) / np.sqrt(channels * kernel ** 2))
        inits.append(numpy_helper.from_array(weight.astype(np.float32), f"w{i}"))
        inputs = [x, f"w{i}"]
        if spec.get("bias", True):
            inits.append(numpy_helper.from_array(rng.standard_normal(k).astype(np.float32), f"b{i}"))
            inputs.append(f"b{i}")
        pad = spec.get("pad", kernel // 2)
        stride = spec.get("stride", 1)
        nodes.append(helper.make_node("Conv", inputs, [f"c{i}"], name=f"conv{i}", pads=[pad] * 4,
                                      strides=[stride] * 2, group=group))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        x, channels = f"r{i}", k
        hw = (hw + 2 * pad - kernel) // stride + 1
    graph = helper.make_graph(nodes, "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                             ["N", c, size, size])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", channels, hw, hw])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return cpu_session(model).run(None, {"x": x})[0]


def test_rewrite_matches_direct_convolution_and_keeps_the_dynamic_batch() -> None:
    model = _conv_graph([{}, {"bias": False, "k": 48}, {"k": 32}])
    probe = np.random.default_rng(2).standard_normal((1, 32, 32, 32)).astype(np.float32)
    rewritten, report = winograd_convs(model, {"x": probe.shape}, min_channels=32)
    assert (report.rewritten, report.kept) == (3, 0)
    assert report.gmac_after == pytest.approx(report.gmac_before / 4)
    onnx.checker.check_model(rewritten)
    ops = {n.op_type for n in rewritten.graph.node}
    assert {"DepthToSpace", "MatMul"} <= ops and "ConvTranspose" not in ops
    # per convolution one GEMM does the products and one the output transform, then one DepthToSpace places the
    # tiles; the bias is added only where the convolution has one (conv1 has none)
    assert sum(n.op_type == "MatMul" for n in rewritten.graph.node) == 2 * report.rewritten
    assert sum(n.op_type == "DepthToSpace" for n in rewritten.graph.node) == report.rewritten
    assert sum(n.op_type == "Add" for n in rewritten.graph.node) == report.rewritten - 1
    # the transformed weights U are stored, not computed at load
    u = {i.name: tuple(i.dims) for i in rewritten.graph.initializer if i.name.endswith("/winograd/u")}
    assert sorted(u.values()) == sorted([(36, 32, 32), (36, 48, 32), (36, 32, 48)])
    assert not {n.name for n in rewritten.graph.node} & {"conv0", "conv1", "conv2"}
    x = np.random.default_rng(3).standard_normal((3, 32, 32, 32)).astype(np.float32)  # batch 3, probed at 1
    ref, got = _run(model, x), _run(rewritten, x)
    assert got.shape == ref.shape
    assert float(np.abs(got - ref).max()) <= 2e-5 * float(np.abs(ref).max())



@pytest.mark.parametrize("seed", [0, 1])
def test_both_output_forms_match_direct_convolution_and_each_other(seed: int) -> None:
    """The ConvTranspose form (kept for AVX2-only CPUs) and the DepthToSpace form compute the same output."""
    model = _fan_out_graph(seed)
    x = np.random.default_rng(20 + seed).standard_normal((2, 32, 32, 32)).astype(np.float32)
    ref = _run(model, x)
    outs = {}
    for form in ("conv_transpose", "depth_to_space"):
        rewritten, report = winograd_convs(model, {"x": (1, 32, 32, 32)}, min_channels=32, output_form=form)
        ops = [n.op_type for n in rewritten.graph.node]
        assert report.rewritten == 5
        assert ops.count("ConvTranspose" if form == "conv_transpose" else "DepthToSpace") == 5
        assert ("DepthToSpace" if form == "conv_transpose" else "ConvTranspose") not in ops
        outs[form] = _run(rewritten, x)
        assert float(np.abs(outs[form] - ref).max()) <= 1e-4 * float(np.abs(ref).max())
    scale = float(np.abs(ref).max())
    assert float(np.abs(outs["conv_transpose"] - outs["depth_to_space"]).max()) <= 1e-5 * scale


def test_output_form_follows_the_cpu_and_unknown_forms_are_refused() -> None:
    assert output_form_for({"fma", "avx2", "avx512f", "amx_bf16"}) == "depth_to_space"
    assert output_form_for({"fma", "avx2"}) == "conv_transpose"
    assert output_form_for(()) == "conv_transpose"  # no /proc/cpuinfo (macOS, Windows): the older form
    with pytest.raises(ValueError, match="output_form must be one of"):
        winograd_convs(_fan_out_graph(0), {"x": (1, 32, 32, 32)}, output_form="fft")

def _fan_out_graph(seed: int) -> onnx.ModelProto:
    """x → three 3×3 Convs reading x (like the SPADE mlp_shared of one resolution) summed, then a γ/β-like pair
    reading the same hidden map."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []
    for i in range(5):
        inits.append(numpy_helper.from_array((rng.standard_normal((32, 32, 3, 3)) / 17).astype(np.float32), f"w{i}"))
        inits.append(numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), f"b{i}"))
    for i in range(3):
        nodes.append(helper.make_node("Conv", ["x", f"w{i}", f"b{i}"], [f"s{i}"], name=f"shared{i}", pads=[1] * 4))
    nodes += [helper.make_node("Sum", ["s0", "s1", "s2"], ["h"]), helper.make_node("Relu", ["h"], ["hr"])]
    for i in (3, 4):
        nodes.append(helper.make_node("Conv", ["hr", f"w{i}", f"b{i}"], [f"p{i}"], name=f"pair{i}", pads=[1] * 4))
    nodes.append(helper.make_node("Mul", ["p3", "p4"], ["y"]))
    graph = helper.make_graph(nodes, "fan_out", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                               ["N", 32, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32, 32, 32])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("seed", [0, 1])
def test_convolutions_reading_one_tensor_share_its_input_transform(seed: int) -> None:
    model = _fan_out_graph(seed)
    rewritten, report = winograd_convs(model, {"x": (1, 32, 32, 32)}, min_channels=32)
    assert report.rewritten == 5
    # one input transform (two depthwise Convs + layout Transpose) per distinct input: x and the hidden map; the
    # GEMM outputs need no layout transpose (the output transform reads them as they are)
    depthwise = [n for n in rewritten.graph.node if n.op_type == "Conv"]
    assert len(depthwise) == 4 and all(next(a.i for a in n.attribute if a.name == "group") > 1 for n in depthwise)
    assert sum(n.op_type == "Transpose" for n in rewritten.graph.node) == 2
    x = np.random.default_rng(10 + seed).standard_normal((2, 32, 32, 32)).astype(np.float32)
    ref, got = _run(model, x), _run(rewritten, x)
    assert float(np.abs(got - ref).max()) <= 1e-4 * float(np.abs(ref).max())


def _pair_graph(pair: bool) -> onnx.ModelProto:
    """x (32 channels) → one or two 32 → 16 Convs reading it (like SPADE's γ/β of up_1's 64-channel side)."""
    rng = np.random.default_rng(7)
    inits, nodes, outputs = [], [], []
    for i in range(2 if pair else 1):
        inits.append(numpy_helper.from_array((rng.standard_normal((16, 32, 3, 3)) / 17).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("Conv", ["x", f"w{i}"], [f"c{i}"], name=f"side{i}", pads=[1] * 4))
        outputs.append(f"c{i}")
    nodes.append(helper.make_node("Concat", outputs, ["y"], axis=1))
    graph = helper.make_graph(nodes, "pair", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                            ["N", 32, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_the_channel_rule_counts_every_convolution_sharing_an_input() -> None:
    """One 32 → 16 conv is too thin for the transforms (2·32·16/48 < 32); two reading the same tensor share its
    input transform and pass together (2·32·32/64 = 32)."""
    alone, report = winograd_convs(_pair_graph(False), {"x": (1, 32, 32, 32)}, min_channels=32)
    assert (report.rewritten, report.kept) == (0, 1)
    model = _pair_graph(True)
    rewritten, report = winograd_convs(model, {"x": (1, 32, 32, 32)}, min_channels=32)
    assert (report.rewritten, report.kept) == (2, 0)
    x = np.random.default_rng(8).standard_normal((2, 32, 32, 32)).astype(np.float32)
    ref, got = _run(model, x), _run(rewritten, x)
    assert float(np.abs(got - ref).max()) <= 1e-4 * float(np.abs(ref).max())


@pytest.mark.parametrize(("spec", "size"), [
    ({"stride": 2}, 32),          # strided
    ({"group": 2}, 32),           # grouped
    ({"kernel": 5}, 32),          # not 3×3
    ({"pad": 0}, 32),             # valid convolution
    ({}, 30),                     # size not a multiple of the tile
    ({}, 16),                     # too small to pay for the transforms
    ({"k": 8}, 32),               # too few channels
])
def test_convolutions_the_rewrite_does_not_cover_are_kept(spec: dict, size: int) -> None:
    model = _conv_graph([spec], size=size)
    probe = np.random.default_rng(4).standard_normal((1, 32, size, size)).astype(np.float32)
    rewritten, report = winograd_convs(model, {"x": probe.shape}, min_channels=32)
    assert (report.rewritten, report.kept) == (0, 1)
    np.testing.assert_array_equal(_run(rewritten, probe), _run(model, probe))


def test_convolutions_over_a_folded_batch_are_kept() -> None:
    """The 3-D convolutions run as 2-D ones over batch×depth: measured slower as Winograd. The folded conv passes
    every other rule (32 → 32 channels at 32²) and its shape is resolved, so only the batch keeps it direct."""
    model = _conv_graph([{}], c=64, fold_batch=True)
    assert conv_input_shapes(model, {"x": (1, 64, 32, 32)})["folded"] == [2, 32, 32, 32]
    _, report = winograd_convs(model, {"x": (1, 64, 32, 32)}, min_channels=32)
    assert (report.rewritten, report.kept) == (0, 1)
    _, unfolded = winograd_convs(_conv_graph([{}], c=32), {"x": (2, 32, 32, 32)}, min_channels=32)
    assert unfolded.rewritten == 1  # the same conv at the graph's own batch is rewritten


def test_a_convolution_whose_input_shape_comes_from_data_is_kept() -> None:
    """Shapes come from shape inference; one it cannot resolve (a reshape target fed at run time) stays direct."""
    model = _conv_graph([{}])
    model.graph.input.append(helper.make_tensor_value_info("shape", TensorProto.INT64, [4]))
    model.graph.node.insert(0, helper.make_node("Reshape", ["x", "shape"], ["x_reshaped"]))
    model.graph.node[1].input[0] = "x_reshaped"
    rewritten, report = winograd_convs(model, {"x": (1, 32, 32, 32), "shape": (4,)}, min_channels=32)
    assert (report.rewritten, report.kept) == (0, 1)
    x = np.random.default_rng(6).standard_normal((1, 32, 32, 32)).astype(np.float32)
    feeds = {"x": x, "shape": np.array([1, 32, 32, 32], np.int64)}
    np.testing.assert_array_equal(cpu_session(rewritten).run(None, feeds)[0], cpu_session(model).run(None, feeds)[0])


def test_exported_cpu_graph_is_close_to_native_and_picked_for_the_cpu(models_with_variants: Path) -> None:
    manifest = read_manifest(models_with_variants)
    entry = manifest.models["warping_spade.wino"]
    assert entry.parity["winograd_convs"] >= 50
    # the output transform form this CPU measured faster (export ran here)
    assert entry.parity["winograd_depth_to_space"] == float(output_form_for(cpu_flags()) == "depth_to_space")
    assert entry.parity["max_abs_vs_native"] <= 1e-3 * entry.parity["output_scale"]
    assert entry.grid_sample == "5d"  # the native sampler: one CPU kernel instead of the 4-D form's arithmetic
    assert pick_variant(manifest, "warping_spade", "cpu") == "warping_spade.wino"
