"""CoreML EP (ML Program) compatibility check: passes 4-D GridSample graphs, fails 5-D ones and says why."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from runtime.coreml_check import check_coreml_compat, format_report, main

FLOAT = TensorProto.FLOAT


def _const(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(array, name)


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    inits: Sequence[TensorProto] = (),
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def _conv_grid_conv(grid_rank: int, batch: int | str = 1) -> onnx.ModelProto:
    """Conv -> (reshape to 5-D if asked) -> GridSample -> (back to 4-D) -> Conv."""
    rng = np.random.default_rng(0)
    inits = [
        _const("w1", rng.standard_normal((16, 8, 3, 3)).astype(np.float32)),
        _const("b1", np.zeros(16, np.float32)),
        _const("w2", rng.standard_normal((8, 16, 3, 3)).astype(np.float32)),
    ]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1])]
    if grid_rank == 4:
        grid_in = helper.make_tensor_value_info("grid", FLOAT, [batch, 32, 32, 2])
        nodes.append(helper.make_node("GridSample", ["c1", "grid"], ["s"], name="sample", mode="linear"))
        sampled = "s"
    else:
        grid_in = helper.make_tensor_value_info("grid", FLOAT, [batch, 4, 32, 32, 3])
        inits += [
            _const("to5d", np.array([-1, 4, 4, 32, 32], np.int64)),
            _const("to4d", np.array([-1, 16, 32, 32], np.int64)),
        ]
        nodes += [
            helper.make_node("Reshape", ["c1", "to5d"], ["v"], name="to_volume"),
            helper.make_node("GridSample", ["v", "grid"], ["s5"], name="sample", mode="linear"),
            helper.make_node("Reshape", ["s5", "to4d"], ["s"], name="to_image"),
        ]
        sampled = "s"
    nodes.append(helper.make_node("Conv", [sampled, "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1]))
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, [batch, 8, 32, 32]), grid_in],
        [helper.make_tensor_value_info("y", FLOAT, None)],
        inits,
    )


def test_4d_grid_sample_between_convs_is_one_partition() -> None:
    report = check_coreml_compat(_conv_grid_conv(4))
    assert report.fully_supported
    assert (report.total_nodes, report.supported_nodes, report.partitions) == (3, 3, 1)
    assert report.coverage == 1.0 and report.unsupported == []


def test_5d_grid_sample_is_reported_and_splits_the_graph() -> None:
    report = check_coreml_compat(_conv_grid_conv(5))
    assert not report.fully_supported
    assert [(i.name, i.op_type) for i in report.unsupported] == [("sample", "GridSample")]
    assert "5-D" in report.unsupported[0].reason
    assert report.partitions == 2 and report.total_nodes == 5 and report.coverage == pytest.approx(0.8)
    text = format_report(report)
    assert "SPLIT" in text and "sample [GridSample]" in text and "partitions: 2" in text


def test_dynamic_batch_is_allowed_by_default_but_not_with_static_flag() -> None:
    model = _conv_grid_conv(4, batch="N")
    relaxed = check_coreml_compat(model)
    assert relaxed.fully_supported and relaxed.dynamic_nodes == 3
    strict = check_coreml_compat(model, require_static_shapes=True)
    assert strict.supported_nodes == 0 and strict.partitions == 0
    assert all("dynamic dimension (N)" in issue.reason for issue in strict.unsupported)
    assert check_coreml_compat(_conv_grid_conv(4), require_static_shapes=True).fully_supported


def _single(node: onnx.NodeProto, in_shapes: dict[str, list], inits: Sequence[TensorProto] = ()) -> onnx.ModelProto:
    inputs = [helper.make_tensor_value_info(n, FLOAT, s) for n, s in in_shapes.items()]
    return _model([node], inputs, [helper.make_tensor_value_info(node.output[0], FLOAT, None)], inits)


@pytest.mark.parametrize(
    ("attrs", "fragment"),
    [
        ({"mode": "nearest"}, "mode 'nearest'"),
        ({"mode": "cubic"}, "mode 'cubic'"),
        ({"mode": "linear", "padding_mode": "reflection"}, "reflection"),
    ],
)
def test_grid_sample_attribute_limits(attrs: dict, fragment: str) -> None:
    node = helper.make_node("GridSample", ["x", "g"], ["y"], name="gs", **attrs)
    report = check_coreml_compat(_single(node, {"x": [1, 3, 8, 8], "g": [1, 4, 4, 2]}))
    assert len(report.unsupported) == 1 and fragment in report.unsupported[0].reason
    ok = helper.make_node(
        "GridSample", ["x", "g"], ["y"], name="gs", mode="linear", padding_mode="reflection", align_corners=1
    )
    assert check_coreml_compat(_single(ok, {"x": [1, 3, 8, 8], "g": [1, 4, 4, 2]})).fully_supported


def test_resize_rules() -> None:
    scales4 = _const("sc", np.array([1, 1, 2, 2], np.float32))
    roi = _const("roi", np.zeros(0, np.float32))
    ok = helper.make_node(
        "Resize", ["x", "roi", "sc"], ["y"], name="up", mode="linear", coordinate_transformation_mode="half_pixel"
    )
    assert check_coreml_compat(_single(ok, {"x": [1, 3, 8, 8]}, [roi, scales4])).fully_supported
    scales5 = _const("sc", np.array([1, 1, 2, 2, 2], np.float32))
    vol = helper.make_node("Resize", ["x", "roi", "sc"], ["y"], name="up3d", mode="linear")
    report = check_coreml_compat(_single(vol, {"x": [1, 3, 4, 8, 8]}, [roi, scales5]))
    assert "only 4-D" in report.unsupported[0].reason
    dynamic_scales = helper.make_node("Resize", ["x", "roi", "s"], ["y"], name="up", mode="linear")
    model = _single(dynamic_scales, {"x": [1, 3, 8, 8], "s": [4]}, [roi])
    assert "constant" in check_coreml_compat(model).unsupported[0].reason
    nearest = helper.make_node("Resize", ["x", "roi", "sc"], ["y"], name="nn", mode="nearest")  # half_pixel default
    assert (
        "asymmetric" in check_coreml_compat(_single(nearest, {"x": [1, 3, 8, 8]}, [roi, scales4])).unsupported[0].reason
    )


def test_conv3d_rank_and_size_limits() -> None:
    w = _const("w", np.zeros((4, 3, 3, 3, 3), np.float32))
    conv3d = helper.make_node("Conv", ["x", "w"], ["y"], name="c3")
    assert "only 1-D/2-D" in check_coreml_compat(_single(conv3d, {"x": [1, 3, 4, 8, 8]}, [w])).unsupported[0].reason
    relu6d = helper.make_node("Relu", ["x"], ["y"], name="r")
    assert "rank 6" in check_coreml_compat(_single(relu6d, {"x": [1, 2, 2, 2, 2, 2]})).unsupported[0].reason
    huge = helper.make_node("Relu", ["x"], ["y"], name="r")
    assert "> 16384" in check_coreml_compat(_single(huge, {"x": [1, 20000]})).unsupported[0].reason


def test_unknown_op_and_extra_ops() -> None:
    pads = _const("p", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))
    pad = helper.make_node("Pad", ["x", "p"], ["y"], name="pad")
    model = _single(pad, {"x": [1, 3, 8, 8]}, [pads])
    assert "no ML Program builder" in check_coreml_compat(model).unsupported[0].reason
    assert check_coreml_compat(model, extra_ops=["Pad"]).fully_supported


def test_partitions_are_runs_between_unsupported_nodes_and_constants_are_folded() -> None:
    # Relu, Floor(x), Relu, Floor, Relu: three supported runs; Constant + Add on constants fold away.
    nodes = [
        helper.make_node("Constant", [], ["k"], value=helper.make_tensor("kv", FLOAT, [1], [2.0])),
        helper.make_node("Add", ["k", "k"], ["k2"], name="fold_me"),
        helper.make_node("Mul", ["x", "k2"], ["a"], name="m0"),
        helper.make_node("Floor", ["a"], ["b"], name="f1"),
        helper.make_node("Relu", ["b"], ["c"], name="r1"),
        helper.make_node("Floor", ["c"], ["d"], name="f2"),
        helper.make_node("Relu", ["d"], ["y"], name="r2"),
    ]
    model = _model(
        nodes, [helper.make_tensor_value_info("x", FLOAT, [1, 4])], [helper.make_tensor_value_info("y", FLOAT, [1, 4])]
    )
    report = check_coreml_compat(model)
    assert (report.total_nodes, report.supported_nodes, report.partitions, report.folded_nodes) == (5, 3, 3, 2)
    assert report.unsupported_by_op() == {"Floor": 2}


def test_external_data_initializer_is_refused(tmp_path: Path) -> None:
    def build() -> onnx.ModelProto:
        w = _const("w", np.ones((1024, 4), np.float32))
        return _single(helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"), {"x": [2, 1024]}, [w])

    path = tmp_path / "ext.onnx"
    onnx.save(build(), str(path), save_as_external_data=True, all_tensors_to_one_file=True, size_threshold=0)
    report = check_coreml_compat(path)
    assert "external data" in report.unsupported[0].reason
    assert check_coreml_compat(build()).fully_supported  # same graph with the weight inside the file


def test_exported_gs4d_module_passes_and_native_5d_export_fails(tmp_path: Path) -> None:
    from tests.test_gridsample4d import export_module, export_native

    small = (4, 8, 8)
    gs4d = check_coreml_compat(export_module(tmp_path / "gs4d.onnx", channels=2, dims=small))
    assert gs4d.fully_supported, format_report(gs4d)
    assert gs4d.total_nodes > 20  # the real exported graph, not an empty one
    native = check_coreml_compat(export_native(tmp_path / "gs5d.onnx", channels=2, dims=small))
    assert [i.op_type for i in native.unsupported] == ["GridSample"]
    assert main([str(tmp_path / "gs4d.onnx")]) == 0
    assert main([str(tmp_path / "gs4d.onnx"), str(tmp_path / "gs5d.onnx")]) == 1


def test_missing_file_is_named() -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.onnx"):
        check_coreml_compat("nowhere.onnx")
