"""Flush the keypoint heatmaps' subnormal values to zero, so no convolution of the warping graph reads one.

The dense-motion network draws each keypoint as a Gaussian, exp(-½·d²/0.01), for the driving and the source
keypoints and feeds their difference to the hourglass (and, through its skip connection, to the 7×7×7 mask
convolution). Away from a keypoint the exponent falls below -87, where float32 results are subnormal: on the
fixture weights ~10 % of both Gaussians' values and ~6 % of their difference (80 000 values a frame) are
subnormal. x86 CPUs without flush-to-zero handle an arithmetic instruction with a subnormal operand in microcode;
Intel cores pay ~100+ cycles per such instruction, AMD's Zen cores almost nothing (flush-to-zero measured no
change on the project's AMD EPYC): the likely reason the same graph ran 1.0× PyTorch on its Intel Xeon and ~2–3×
on the AMD EPYC. onnxruntime's im2col + GEMM convolution reads each input value once per output-channel block and
kernel tap, so 80 000 subnormals become ~10⁸ slow instructions in the first hourglass convolution alone.

onnxruntime's `session.set_denormal_as_zero` sets flush-to-zero only on its pool threads, not on the thread that
calls `run` (it does its share of every parallel loop), so the graph itself must not produce them: the rewrite
puts `Where(|d| < FLT_MIN, 0, d)` after every difference of two exponentials. It changes values by less than
1.2e-38, i.e. not at all at any output scale, and is a few element-wise passes over a 1.4 M-value tensor.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from export.winograd import Constants, replace_nodes

__all__ = ["FLT_MIN", "flush_heatmap_denormals"]

FLT_MIN = float(np.finfo(np.float32).tiny)  # the smallest normal float32; below it (≠ 0) values are subnormal


def flush_heatmap_denormals(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of `model` with every difference of two exponentials (`Exp(a)`, or `Pow(c, a)` with a constant base)
    flushed below FLT_MIN; returns (model, count)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    constants = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant"
                                                       for o in n.output}
    # exp(x) as Exp, or as Pow(e, x) in the CoreML-friendly graphs (export/coreml_friendly.py)
    exponentials = {n.output[0] for n in graph.node
                    if n.op_type == "Exp" or (n.op_type == "Pow" and n.input[0] in constants)}
    heatmaps = [n.output[0] for n in graph.node
                if n.op_type == "Sub" and all(i in exponentials for i in n.input)]
    if not heatmaps:
        return model, 0
    if set(heatmaps) & {o.name for o in graph.output}:
        raise ValueError("a heatmap difference is a graph output; the flush is for intermediate tensors")
    const = Constants()
    flt_min, zero = const("flush_denormals/flt_min", np.float32(FLT_MIN)), const("flush_denormals/zero", np.float32(0))
    renamed = {raw: f"flush_denormals/{k}/out" for k, raw in enumerate(heatmaps)}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)
        nodes.append(node)
        raw = node.output[0] if node.output else ""
        if raw in renamed:
            prefix = renamed[raw].removesuffix("/out")
            nodes += [helper.make_node("Abs", [raw], [f"{prefix}/abs"], name=f"{prefix}/Abs"),
                      helper.make_node("Less", [f"{prefix}/abs", flt_min], [f"{prefix}/tiny"], name=f"{prefix}/Less"),
                      helper.make_node("Where", [f"{prefix}/tiny", zero, raw], [renamed[raw]], name=f"{prefix}/Where")]
    replace_nodes(graph, nodes, const)
    return model, len(renamed)
