"""Polyphase rewrite: a convolution of a nearest-upsampled map, computed at the small map's resolution, is the
direct convolution up to fp32 summation order; anything else is left alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.onnx_export import cpu_session
from export.polyphase import collapsed_taps, polyphase_convs
from runtime.manifest import read_manifest


def test_taps_collapse_onto_the_source_pixels_they_read() -> None:
    """×4, 3 taps: phase 0 reads rows i−1, i, i; phases 1 and 2 only row i; phase 3 rows i, i, i+1."""
    assert [collapsed_taps(4, a, 1) for a in range(4)] == [(-1, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 1)]
    assert [collapsed_taps(2, a, 1) for a in range(2)] == [(-1, 0, 0), (0, 0, 1)]
    assert collapsed_taps(2, 0, 2) == (-1, -1, 0, 0, 1)  # a 5-tap kernel spans three source rows


def _upsample_conv_graph(seed: int, factor: int, kernel: int = 3, readers: int = 2, form: str = "sizes",
                         transform: str = "asymmetric", mode: str = "nearest", extra_reader: bool = False,
                         c: int = 8, size: int = 6) -> onnx.ModelProto:
    """x (N×C×size²) → Resize ×factor → `readers` convolutions with bias (+ optionally a Relu of the Resize)."""
    rng = np.random.default_rng(seed)
    inits = []
    nodes = []
    if form == "sizes":  # as PyTorch exports interpolate(size=...): N and C from the input's Shape
        inits += [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
                  (("start", [0]), ("end", [2]), ("hw", [size * factor] * 2))]
        nodes += [helper.make_node("Shape", ["x"], ["shape"]),
                  helper.make_node("Slice", ["shape", "start", "end"], ["nc"]),
                  helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0)]
        resize_in = ["x", "", "", "sizes"]
    else:
        inits.append(numpy_helper.from_array(np.array([1, 1, factor, factor], np.float32), "scales"))
        resize_in = ["x", "", "scales"]
    nodes.append(helper.make_node("Resize", resize_in, ["up"], mode=mode, coordinate_transformation_mode=transform,
                                  nearest_mode="floor"))
    outputs = []
    for i in range(readers):
        k = 4 + 2 * i
        weight = rng.standard_normal((k, c, kernel, kernel)) / np.sqrt(c * kernel * kernel)
        inits += [numpy_helper.from_array(weight.astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(rng.standard_normal(k).astype(np.float32), f"b{i}")]
        nodes.append(helper.make_node("Conv", ["up", f"w{i}", f"b{i}"], [f"y{i}"], name=f"conv{i}",
                                      pads=[kernel // 2] * 4))
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, ["N", k, "H", "W"]))
    if extra_reader:
        nodes.append(helper.make_node("Relu", ["up"], ["up_relu"]))
        outputs.append(helper.make_tensor_value_info("up_relu", TensorProto.FLOAT, ["N", c, "H", "W"]))
    graph = helper.make_graph(nodes, "upsample_conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c, size, size])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return cpu_session(model).run(None, {"x": x})


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("factor", "kernel", "form"), [(2, 3, "sizes"), (4, 3, "sizes"), (3, 3, "scales"),
                                                        (4, 5, "scales")])
def test_rewrite_matches_the_convolution_of_the_upsampled_map(seed: int, factor: int, kernel: int,
                                                              form: str) -> None:
    model = _upsample_conv_graph(seed, factor, kernel, form=form)
    x = np.random.default_rng(10 + seed).standard_normal((1, 8, 6, 6)).astype(np.float32)
    rewritten, report = polyphase_convs(model, {"x": x.shape})
    onnx.checker.check_model(rewritten)
    ops = [n.op_type for n in rewritten.graph.node]
    assert report.rewritten == 2 and "Resize" not in ops and ops.count("DepthToSpace") == 2
    assert "Shape" not in ops  # the arithmetic that sized the Resize went with it
    if (factor, kernel) == (4, 3):
        # 3 distinct collapses per axis (phases 1 and 2 share one): 9 convolutions each, 25 taps for 16 phases
        assert ops.count("Conv") == 2 * 9
        assert report.gmac_after == pytest.approx(report.gmac_before * 25 / (16 * 9))
    for batch in (1, 2):  # the batch stays dynamic
        xb = np.concatenate([x] * batch) * np.arange(1, batch + 1, dtype=np.float32).reshape(-1, 1, 1, 1)
        for want, got in zip(_run(model, xb), _run(rewritten, xb), strict=True):
            assert got.shape == want.shape
            assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_a_resize_that_something_else_reads_stays() -> None:
    model = _upsample_conv_graph(0, 2, extra_reader=True)
    x = np.random.default_rng(3).standard_normal((1, 8, 6, 6)).astype(np.float32)
    rewritten, report = polyphase_convs(model, {"x": x.shape})
    assert report.rewritten == 2 and [n.op_type for n in rewritten.graph.node].count("Resize") == 1
    for want, got in zip(_run(model, x), _run(rewritten, x), strict=True):
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize(("transform", "mode"), [("half_pixel", "nearest"), ("asymmetric", "linear")])
def test_other_resizes_are_left_alone(transform: str, mode: str) -> None:
    """half-pixel nearest (a shifted pattern) and linear upsampling are not block-constant in the same way."""
    model = _upsample_conv_graph(0, 2, transform=transform, mode=mode)
    rewritten, report = polyphase_convs(model, {"x": (1, 8, 6, 6)})
    assert report.rewritten == 0
    assert [n.op_type for n in rewritten.graph.node] == [n.op_type for n in model.graph.node]
    assert [n.op_type for n in model.graph.node].count("Resize") == 1


def test_exported_cpu_graph_computes_the_upsampled_convolutions_at_the_small_size(models_with_variants: Path) -> None:
    """The six mlp_shared convolutions of up_0 (×2) and up_1 (×4) and the five hourglass up-block convolutions (×2
    per depth slice) are rewritten; the graph stays within 1e-4 of the native one on the fixture weights."""
    entry = read_manifest(models_with_variants).models["warping_spade.wino"]
    assert entry.parity["polyphase_convs"] == 11
    assert entry.parity["polyphase_gmac_saved"] > 70  # 56 in SPADE, 20 in the hourglass
    assert entry.parity["max_abs_vs_native"] <= 1e-4 * entry.parity["output_scale"]
    model = onnx.load(models_with_variants / "warping_spade.wino.onnx", load_external_data=False)
    rewritten = {n.name.split("/polyphase/")[0] for n in model.graph.node if "/polyphase/" in n.name}
    spade = {name for name in rewritten if "mlp_shared" in name and "/decoder/up_" in name}
    hourglass = {name for name in rewritten if "/hourglass/decoder/up_blocks." in name}
    assert len(spade) == 6 and len(hourglass) == 5 and len(rewritten) == 11
