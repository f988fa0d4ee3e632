"""Convolutions with very few output channels as one 1×1 convolution per kernel tap plus a tap sum, exactly.

The dense-motion network's occlusion convolution maps 2 272 channels (142 features × 16 depth slices) to a single
channel with a 7×7 kernel. onnxruntime's CPU EP runs convolutions in blocks of 8 output channels (NCHWc), so the
one useful channel costs as much as eight: measured 100 ms a frame for 0.46 GMAC on a 2-core AVX2 EPYC, 8 % of
what its other convolutions reach. Written as

* a 1×1 convolution C → K·kh·kw (one output channel per output channel and kernel tap: P_krs = Σ_c W[k, c, r, s]·x_c),
  a well-shaped GEMM (49 × 2 272 by 2 272 × pixels), and
* a grouped convolution that adds, for each output channel k, tap (r, s) of P_krs at offset (r, s) — a one-hot
  kernel with the original padding, stride, dilation and bias,

the same multiply-adds are done in the right shape. Exact up to fp32 summation order (the second convolution's
weights are 0 and 1): the zero padding of P equals the 1×1 convolution of the zero-padded input, since the first
convolution has no bias.

Only ungrouped 2-D convolutions with a constant weight, at most `max_out` output channels, a kernel of more than
one tap and at least `min_in` input channels are rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from export.winograd import Constants, conv_bias, conv_weight, node_attr, replace_nodes

__all__ = ["NarrowConvReport", "narrow_output_convs", "tap_sum_kernel"]


@dataclass
class NarrowConvReport:
    """What the pass did, for the export log and the manifest."""

    rewritten: int


def tap_sum_kernel(out_channels: int, kh: int, kw: int) -> np.ndarray:
    """The grouped kernel (K, kh·kw, kh, kw) whose group k picks tap (r, s) from channel r·kw + s: a one-hot sum."""
    kernel = np.zeros((out_channels, kh * kw, kh, kw), np.float32)
    for r in range(kh):
        for s in range(kw):
            kernel[:, r * kw + s, r, s] = 1.0
    return kernel


def narrow_output_convs(model: onnx.ModelProto, max_out: int = 4, min_in: int = 256) -> tuple[onnx.ModelProto,
                                                                                                NarrowConvReport]:
    """A copy of `model` whose narrow-output convolutions run as a 1×1 GEMM per tap and a tap sum; the report
    counts them."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    const = Constants()
    nodes: list[onnx.NodeProto] = []
    report = NarrowConvReport(0)
    for node in graph.node:
        weight = conv_weight(node, inits)
        if (weight is None or weight.ndim != 4 or node_attr(node, "group", 1) != 1
                or node_attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
                or weight.shape[0] > max_out or weight.shape[1] < min_in or weight.shape[2] * weight.shape[3] < 2):
            nodes.append(node)
            continue
        k, c, kh, kw = weight.shape
        p = (node.name or node.output[0]) + "/narrow"
        per_tap = weight.transpose(0, 2, 3, 1).reshape(k * kh * kw, c, 1, 1)  # channel k·kh·kw + r·kw + s
        taps = {a.name: a for a in node.attribute if a.name in ("pads", "strides", "dilations")}
        nodes += [
            helper.make_node("Conv", [node.input[0], const(f"{p}/per_tap_w", np.ascontiguousarray(per_tap))],
                             [f"{p}/taps"], name=f"{p}/per_tap", kernel_shape=[1, 1]),
            helper.make_node("Conv", [f"{p}/taps", const(f"{p}/tap_sum_w", tap_sum_kernel(k, kh, kw)),
                                      const(f"{p}/bias", conv_bias(node, inits, k))],
                             list(node.output), name=f"{p}/tap_sum", kernel_shape=[kh, kw], group=k),
        ]
        nodes[-1].attribute.extend(taps.values())
        report.rewritten += 1
    replace_nodes(graph, nodes, const)
    return model, report
