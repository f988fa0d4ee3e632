"""Convolutions of a nearest-upsampled map computed at the map's own resolution (polyphase), exactly.

Every SPADE block of the decoder convolves the warped feature after a nearest-neighbour upsampling to its own
resolution (`mlp_shared`: ×2 in `up_0`, ×4 in `up_1`, 3×3 kernels, 256 → 128 channels), and every up block of
the dense-motion hourglass convolves its input after a ×2 upsampling of each depth slice (the depth-tap form of
`export/coreml_friendly.py` upsamples the (N·D) slices right before the 2-D convolution). Upsampled by k, the map is
constant on k×k blocks, so output pixel (k·i + a, k·j + b) only reads source rows i + ⌊(a + r)/k⌋ and columns
j + ⌊(b + s)/k⌋ for the kernel taps r, s ∈ {−p … p}. For each phase (a, b) the kernel therefore collapses, by
summing the taps that land on the same source pixel, into a smaller kernel applied to the small map:

* ×4 with a 3×3 kernel: phases 1 and 2 collapse every row tap onto row i (one tap), phase 0 onto rows i−1, i and
  phase 3 onto i, i+1 (two taps): 25 taps over the 64×64 map for all 16 phases instead of 9 over the 256×256 one
  (5.8× fewer multiply-adds; phases with the same collapse share one convolution);
* ×2: every phase keeps two taps per axis, 16 taps over 64×64 instead of 9 over 128×128 (2.25× fewer).

One Conv per distinct collapse (bias included, asymmetric zero padding as the collapse needs), a Concat of the
k² phase maps in phase order and a DepthToSpace (DCR) that interleaves them give the convolution's output. The
collapsed kernels are sums of the original taps (summed in float64), so the result equals the direct convolution
up to fp32 summation order; the Resize the convolution read (and what sized it) disappears when nothing
else reads it.

Only Resize nodes in nearest mode with asymmetric coordinates and floor rounding (PyTorch's `F.interpolate(...,
mode="nearest")`) that upsample H and W by the same integer factor ≥ 2, read by an ungrouped, stride-1,
dilation-1 convolution with a square odd kernel and "same" padding, are rewritten.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from export.winograd import (
    Constants,
    conv_bias,
    conv_input_shapes,
    conv_weight,
    copy_with_batch,
    is_plain_conv,
    node_attr,
    replace_nodes,
)

__all__ = ["PolyphaseReport", "collapsed_taps", "polyphase_convs"]


@dataclass
class PolyphaseReport:
    """What the pass did, for the export log and the manifest."""

    rewritten: int
    gmac_before: float  # multiply-accumulates per graph batch item of the rewritten convolutions, direct form
    gmac_after: float  # the same convolutions at the small map's resolution


def collapsed_taps(factor: int, phase: int, pad: int) -> tuple[int, ...]:
    """The source offset ⌊(phase + r)/factor⌋ each kernel tap r = −pad … pad reads, for output phase `phase`."""
    return tuple((phase + r) // factor for r in range(-pad, pad + 1))


def _collapse(weight: np.ndarray, rows: tuple[int, ...], cols: tuple[int, ...]) -> np.ndarray:
    """The kernel (float64 sums of the original taps) over the distinct source offsets of `rows` × `cols`."""
    row_offsets, col_offsets = sorted(set(rows)), sorted(set(cols))
    w = weight.astype(np.float64)
    out = np.zeros(w.shape[:2] + (len(row_offsets), len(col_offsets)))
    for r, dr in enumerate(rows):
        for s, ds in enumerate(cols):
            out[:, :, row_offsets.index(dr), col_offsets.index(ds)] += w[:, :, r, s]
    return out.astype(np.float32)


def _nearest_factor(resize: onnx.NodeProto, in_shape: list[int] | None, out_shape: list[int] | None) -> int | None:
    """The integer H and W upsampling factor of a floor-nearest, asymmetric 4-D Resize (None if it is not one)."""
    if resize.op_type != "Resize" or in_shape is None or out_shape is None or len(in_shape) != 4:
        return None
    modes = (node_attr(resize, "mode", b"nearest"), node_attr(resize, "coordinate_transformation_mode", b"half_pixel"),
             node_attr(resize, "nearest_mode", b"round_prefer_floor"))
    if tuple(m.decode() if isinstance(m, bytes) else m for m in modes) != ("nearest", "asymmetric", "floor"):
        return None
    if node_attr(resize, "axes", None) is not None or in_shape[:2] != out_shape[:2]:
        return None
    (h, w), (oh, ow) = in_shape[2:], out_shape[2:]
    if oh % h or ow % w or oh // h != ow // w or oh // h < 2:
        return None
    return oh // h


def _drop_unread(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """`nodes` without those nothing reads any more (a rewritten convolution's Resize and the Shape arithmetic that
    sized it), repeated until every remaining node feeds a graph output or another node."""
    while True:
        read = outputs | {i for n in nodes for i in n.input}
        kept = [n for n in nodes if any(o in read for o in n.output)]
        if len(kept) == len(nodes):
            return kept
        nodes = kept


def polyphase_convs(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]]) -> tuple[onnx.ModelProto,
                                                                                                PolyphaseReport]:
    """A copy of `model` whose convolutions of nearest-upsampled maps run at the small resolution; the report counts
    them. `input_shapes` pins the graph inputs so that shape inference can size every Resize."""
    model, batch = copy_with_batch(model, input_shapes)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    square = {n.input[1] for n in graph.node if (w := conv_weight(n, inits)) is not None and w.ndim == 4
              and w.shape[2] == w.shape[3] and w.shape[2] % 2 == 1}
    shapes = conv_input_shapes(model, input_shapes, kernels=square,
                               values={n.input[0] for n in graph.node if n.op_type == "Resize"})
    const = Constants()
    nodes: list[onnx.NodeProto] = []
    report = PolyphaseReport(0, 0.0, 0.0)

    for node in graph.node:
        weight = conv_weight(node, inits)
        resize = producer.get(node.input[0]) if node.op_type == "Conv" else None
        factor = None
        if weight is not None and node.input[1] in square and resize is not None:
            factor = _nearest_factor(resize, shapes.get(resize.input[0]), shapes.get(node.input[0]))
        pad = int(weight.shape[2]) // 2 if factor else 0
        if not factor or not is_plain_conv(node, pad):
            nodes.append(node)
            continue
        x = resize.input[0]
        o, c = weight.shape[:2]
        n, _, h, w = shapes[x]
        per_item = n / batch  # images per graph batch item: the hourglass convolves 16 depth slices of each
        p = (node.name or node.output[0]) + "/polyphase"
        bias = const(f"{p}/bias", conv_bias(node, inits, o))
        taps = [collapsed_taps(factor, a, pad) for a in range(factor)]
        classes: dict[tuple, str] = {}  # (row taps, col taps) -> that collapse's output
        phases = []
        for a in range(factor):
            for b in range(factor):
                key = (taps[a], taps[b])
                if key not in classes:
                    rows, cols = key
                    name = f"{p}/phase_{a}{b}"
                    kernel = _collapse(weight, rows, cols)
                    nodes.append(helper.make_node(
                        "Conv", [x, const(f"{name}/w", kernel), bias], [name], name=name,
                        kernel_shape=list(kernel.shape[2:]),
                        pads=[-min(rows), -min(cols), max(rows), max(cols)]))
                    classes[key] = name
                    report.gmac_after += per_item * h * w * o * c * kernel.shape[2] * kernel.shape[3] / 1e9
                phases.append(classes[key])
        nodes += [helper.make_node("Concat", phases, [f"{p}/phases"], name=f"{p}/phases", axis=1),
                  helper.make_node("DepthToSpace", [f"{p}/phases"], [node.output[0]], name=f"{p}/interleave",
                                   blocksize=factor, mode="DCR")]
        report.rewritten += 1
        report.gmac_before += per_item * factor * factor * h * w * o * c * weight.shape[2] * weight.shape[3] / 1e9

    replace_nodes(graph, _drop_unread(nodes, {o.name for o in graph.output}), const)
    return model, report
