"""Mixed-precision (fp16) variants for GPUs, with GridSample and its coordinate math kept in fp32.

onnxruntime's CUDA GridSample is fp32-only: a naive fp16 export drops it to the CPU (measured ~7× slower). The
convolutions, which are nearly all the FLOPs, go to fp16; the sampling coordinates (sub-pixel positions over a
64-wide volume), the sampler, softmax and normalisation statistics stay in fp32 for accuracy.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx

# Ops kept in fp32 wherever they appear: the sampler, and reductions whose fp16 range/precision is unsafe.
FP32_OPS = [
    "GridSample",
    "Softmax",
    "InstanceNormalization",
    "LayerNormalization",
    "ReduceL2",
    "ReduceSumSquare",
    "ReduceMean",
    "ReduceSum",
    "Pow",
    "Sqrt",
    "Exp",
    "Range",
]
# Ops where a backward walk from a grid input stops: their weights are the compute we want in fp16.
HEAVY_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}


def grid_math_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that compute GridSample grids (walking back from each grid input until a heavy op)."""
    producer = {out: node for node in model.graph.node for out in node.output}
    keep: set[str] = set()
    stack = [n.input[1] for n in model.graph.node if n.op_type == "GridSample" and len(n.input) > 1]
    seen: set[str] = set()
    while stack:
        tensor = stack.pop()
        if tensor in seen:
            continue
        seen.add(tensor)
        node = producer.get(tensor)
        if node is None or node.op_type in HEAVY_OPS:
            continue
        keep.add(node.name)
        stack.extend(i for i in node.input if i)
    return sorted(keep)


def _name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name (the converter's block list works by name)."""
    used: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in used:
            node.name = f"{node.op_type}_{i}"
        used.add(node.name)


def to_mixed_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """fp32 graph → mixed graph: fp32 inputs/outputs, fp16 convolutions, fp32 grid math and sampler."""
    from onnxconverter_common import float16

    model = onnx.ModelProto.FromString(model.SerializeToString())
    # Stale fp32 value_info from the exporter confuses the converter's cast insertion around blocked nodes.
    del model.graph.value_info[:]
    _name_nodes(model)
    blocked_nodes = grid_math_nodes(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one "value truncated" warning per tiny weight
        mixed = float16.convert_float_to_float16(
            model,
            keep_io_types=True,
            op_block_list=FP32_OPS,
            node_block_list=blocked_nodes,
            max_finite_val=65000.0,
        )
    _restore_fp32_resize_params(mixed)
    return mixed


def _restore_fp32_resize_params(model: onnx.ModelProto) -> None:
    """Resize's roi/scales inputs are float32 by the spec; the converter turns their constants to fp16."""
    from onnx import numpy_helper

    params = {name for n in model.graph.node if n.op_type == "Resize" for name in n.input[1:3] if name}
    for init in model.graph.initializer:
        if init.name in params and init.data_type == onnx.TensorProto.FLOAT16:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32), init.name))
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] in params:
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == onnx.TensorProto.FLOAT16:
                    value = numpy_helper.to_array(attr.t).astype(np.float32)
                    attr.t.CopyFrom(numpy_helper.from_array(value, attr.t.name))


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of two images in [0, peak]."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(peak * peak / mse)
