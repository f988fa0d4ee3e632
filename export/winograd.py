"""Rewrite 3×3 convolutions of an ONNX graph as Winograd F(4×4, 3×3) for the CPU execution provider.

Warping + decoder are 1.2 TFLOP a frame, 85 % of it in 3×3 convolutions, and onnxruntime's direct convolution
already runs near the CPU's fp32 peak, so the only way to be much faster on a CPU is fewer multiplications.
Winograd F(4×4, 3×3) computes each 4×4 output tile from a 6×6 input tile with 36 instead of 144 products per
channel pair (4× fewer), at the price of linear transforms before and after. Expressed with standard ops so every
runtime can load it:

* input transform Bᵀ·d·B: two strided depthwise Convs (rows with a 6×1 kernel, stride 4, padding included;
  then columns with 1×6) turn every 6×6 tile of every channel into its 36 transformed values (as depthwise Convs
  onnxruntime runs them ~3× faster than as single-channel Convs over the N·C planes of the first version);
* the products: one batched MatMul, 36 GEMMs of (C_out × C_in)·(C_in × tiles), with U = G·g·Gᵀ computed at
  export in float64 and stored in the file (4× the 3×3 weights, but the session no longer constant-folds it at
  load: peak RSS and load time drop, see `_transformed_weights`);
* convolutions that read the same tensor (the SPADE decoder's 12 `mlp_shared` of the middle blocks, each
  γ/β pair) share one input transform;
* output transform Aᵀ·m·A, in one of two forms (`output_form`, chosen per CPU by `output_form_for`):
  "depth_to_space": one MatMul of the 16×36 matrix Aᵀ⊗Aᵀ with the GEMM output seen as 36 × (K·tiles), whose 16
  rows (the pixel's place r, s in its tile) are DepthToSpace's input order, one DepthToSpace, then the bias;
  "conv_transpose": a layout Transpose of the GEMM output, then one grouped ConvTranspose (kernel 4, stride 4),
  bias included.

The transforms are exact in real arithmetic; in fp32 the result differs from direct convolution by about 1e-5 of
the output scale (the points 0, ±1, ±2, ±½ keep the matrices small). Only stride-1, dilation-1, ungrouped 3×3
convolutions with padding 1 and spatial sizes divisible by 4 are rewritten, and only where they are large enough
for the GEMM saving to pay for the transforms (measured on the CPU EP: 1.2-1.8× per convolution from 64×64 up).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["OUTPUT_FORMS", "WinogradReport", "output_form_for", "winograd_convs", "winograd_matrices"]

TILE = 4  # output tile m
ALPHA = TILE + 2  # input tile m + r - 1


def winograd_matrices() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Bᵀ 6×6, G 6×3, Aᵀ 4×6) of F(4, 3) with interpolation points 0, ±1, ±2 and ∞, in float64."""
    bt = np.array([[4, 0, -5, 0, 1, 0],
                   [0, -4, -4, 1, 1, 0],
                   [0, 4, -4, -1, 1, 0],
                   [0, -2, -1, 2, 1, 0],
                   [0, 2, -1, -2, 1, 0],
                   [0, 4, 0, -5, 0, 1]], dtype=np.float64)
    g = np.array([[1 / 4, 0, 0],
                  [-1 / 6, -1 / 6, -1 / 6],
                  [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6],
                  [1 / 24, -1 / 12, 1 / 6],
                  [0, 0, 1]], dtype=np.float64)
    at = np.array([[1, 1, 1, 1, 1, 0],
                   [0, 1, -1, 2, -2, 0],
                   [0, 1, 1, 4, 4, 0],
                   [0, 1, -1, 8, -8, 1]], dtype=np.float64)
    return bt, g, at


@dataclass
class WinogradReport:
    """What the pass did, for the export log and the manifest."""

    rewritten: int
    kept: int
    gmac_before: float  # multiply-accumulates per batch item of the rewritten convolutions, direct form
    gmac_after: float  # the same convolutions' GEMM work in Winograd form


def node_attr(node: onnx.NodeProto, name: str, default):
    """An attribute's value, or `default` when the node does not set it."""
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def is_plain_conv(node: onnx.NodeProto, pad: int) -> bool:
    """An ungrouped, stride-1, dilation-1 2-D Conv with explicit padding `pad` on every side (what the transform
    rewrites here and in export/fourier_conv.py compute)."""
    if node_attr(node, "group", 1) != 1 or list(node_attr(node, "strides", [1, 1])) != [1, 1]:
        return False
    if list(node_attr(node, "dilations", [1, 1])) != [1, 1] or list(node_attr(node, "pads", [0] * 4)) != [pad] * 4:
        return False
    return node_attr(node, "auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")


def conv_weight(node: onnx.NodeProto, inits: Mapping[str, onnx.TensorProto]) -> np.ndarray | None:
    """A Conv's constant weight, None for other nodes or a computed weight."""
    if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in inits:
        return numpy_helper.to_array(inits[node.input[1]])
    return None


def conv_bias(node: onnx.NodeProto, inits: Mapping[str, onnx.TensorProto], channels: int) -> np.ndarray:
    """A Conv's bias as float32 (zeros when it has none)."""
    if len(node.input) > 2 and node.input[2]:
        return numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
    return np.zeros(channels, np.float32)


def copy_with_batch(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]]) -> tuple[onnx.ModelProto, int]:
    """A copy to rewrite, and the batch `input_shapes` pins (the first graph input carries it, as in every contract
    graph)."""
    pinned = [i.name for i in model.graph.input if i.name in input_shapes]
    if not pinned:
        raise ValueError(f"input_shapes names none of the graph inputs {[i.name for i in model.graph.input]}")
    return onnx.ModelProto.FromString(model.SerializeToString()), int(input_shapes[pinned[0]][0])


class Constants(dict):
    """The initializers a rewrite adds, by name; calling it with (name, value) adds one (the first value given for
    a name is kept: shared transform matrices are named by their size) and returns the name."""

    def __call__(self, name: str, value) -> str:
        if name not in self:
            self[name] = np.asarray(value)
        return name


def replace_nodes(graph: onnx.GraphProto, nodes: list[onnx.NodeProto], new_inits: Mapping[str, np.ndarray]) -> None:
    """Give `graph` the rewritten node list, drop the initializers no node reads any more, add `new_inits`.

    The rewritten convolutions' value_info (if any) stays valid: every original output name is kept."""
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    graph.initializer.extend(numpy_helper.from_array(v, n) for n, v in new_inits.items())


def _eligible(node: onnx.NodeProto, weight: np.ndarray | None, in_shape: list | None, batch: int,
              min_size: int) -> bool:
    """A same-padded 3×3 convolution with static spatial size divisible by the tile and at least `min_size`².

    Convolutions whose batch is not the graph's (3-D convolutions folded into 2-D ones over depth slices) are
    kept: their many small GEMMs and batched transposes measured slower than the direct convolution.
    """
    if node.op_type != "Conv" or weight is None or weight.ndim != 4 or weight.shape[2:] != (3, 3):
        return False
    if not is_plain_conv(node, 1):
        return False
    if in_shape is None or len(in_shape) != 4:
        return False
    if in_shape[0] != batch:
        return False
    _, _, h, w = in_shape
    return h % TILE == 0 and w % TILE == 0 and min(h, w) >= min_size


def _worth_it(candidates: Iterable[tuple[onnx.NodeProto, np.ndarray]], min_channels: int) -> set[str]:
    """Names of the outputs of the candidate convolutions worth the transforms, judged per input tensor.

    The GEMM saving grows with C·K, the transforms with C + K (thin layers at high resolution lose), and
    convolutions reading the same tensor share its input transform, so the rule takes their outputs together:
    2·C·ΣK/(C + ΣK) ≥ `min_channels`. SPADE's γ and β (128 → 64 each at 256² in up_1) qualify as a pair.
    """
    readers: dict[str, list[tuple[str, int]]] = {}  # input → (output, K) of each convolution reading it
    width: dict[str, int] = {}  # input → C
    for node, weight in candidates:
        readers.setdefault(node.input[0], []).append((node.output[0], int(weight.shape[0])))
        width[node.input[0]] = int(weight.shape[1])
    worth = set()
    for x, convs in readers.items():
        k, c = sum(k for _, k in convs), width[x]
        if k * c / (k + c) >= min_channels / 2:
            worth.update(out for out, _ in convs)
    return worth


def conv_input_shapes(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]],
                      kernels: set[str] | None = None, values: Iterable[str] = ()) -> dict[str, list[int]]:
    """Shapes of the Conv inputs whose weight is in `kernels` (default: the 3×3 ones), and of the tensors named in
    `values`, by ONNX shape inference with the graph inputs pinned to `input_shapes`.

    Data propagation resolves the graphs' -1 reshapes and resize scales in well under a second (running the graph
    to observe them took a minute and GBs); an input it cannot resolve is left out, so its convolution stays direct.
    """
    if kernels is None:
        kernels = {i.name for i in model.graph.initializer if tuple(i.dims)[2:] == (3, 3)}
    wanted = {n.input[0] for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 1
              and n.input[1] in kernels} | set(values)
    # a light copy: the weights become shape-only inputs; small initializers (reshape targets, resize scales)
    # keep their values for data propagation
    small = [i for i in model.graph.initializer if int(np.prod(i.dims)) <= 1024]
    kept = {i.name for i in small}
    graph = helper.make_graph(list(model.graph.node), "shapes", list(model.graph.input), list(model.graph.output),
                              small)
    graph.input.extend(helper.make_tensor_value_info(i.name, i.data_type, list(i.dims))
                       for i in model.graph.initializer if i.name not in kept)
    for value in graph.input:
        if value.name in input_shapes:
            for dim, size in zip(value.type.tensor_type.shape.dim, input_shapes[value.name], strict=True):
                dim.Clear()
                dim.dim_value = int(size)
    pinned = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    inferred = onnx.shape_inference.infer_shapes(pinned, data_prop=True)
    shapes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in value.type.tensor_type.shape.dim]
        if value.name in wanted and dims and min(dims) > 0:
            shapes[value.name] = dims
    return shapes


def _transformed_weights(weight: np.ndarray, g: np.ndarray) -> np.ndarray:
    """U = G·g·Gᵀ of every K×C kernel as 36×K×C float32, computed in float64 at export.

    Stored in the file rather than computed in the graph from the 3×3 weights and constant-folded by onnxruntime
    at load: the file grows (U is 4× the 3×3 weights) but the session loads faster and without the folding's
    copies (measured on warping_spade.wino: peak RSS 2.75 → 1.47 GB after load, 3.0 → 2.2 GB after one frame),
    and float64 U is closer to direct convolution.
    """
    k, c = weight.shape[:2]
    u = np.kron(g, g) @ weight.astype(np.float64).reshape(k * c, 9).T  # vec(G·g·Gᵀ) = (G⊗G)·vec(g)
    return u.reshape(ALPHA * ALPHA, k, c).astype(np.float32)


def _input_transform(x: str, p: str, c: int, th: int, tw: int, bt: np.ndarray, const) -> list[onnx.NodeProto]:
    """V = Bᵀ·d·B of every 6×6 tile of `x` (N×C×H×W), laid out N×36×C×tiles for the batched GEMM.

    Two strided depthwise Convs (rows, then columns): onnxruntime runs them with its depthwise kernels, ~3× faster
    than the same transform as single-channel Convs over the N·C planes (the first version of this pass).
    Columns first measured 40 % faster alone but no faster in the warping graph.
    """
    rows = np.tile(bt.reshape(1, ALPHA, 1, ALPHA, 1), (c, 1, 1, 1, 1)).reshape(c * ALPHA, 1, ALPHA, 1)
    cols = np.tile(bt.reshape(1, ALPHA, 1, 1, ALPHA), (c * ALPHA, 1, 1, 1, 1)).reshape(c * ALPHA * ALPHA, 1, 1, ALPHA)
    return [
        helper.make_node("Conv", [x, const(f"winograd/bt_rows_{c}", rows.astype(np.float32))], [f"{p}/rows"],
                         name=f"{p}/rows", strides=[TILE, 1], pads=[1, 1, 1, 1], group=c),
        helper.make_node("Conv", [f"{p}/rows", const(f"winograd/bt_cols_{c}", cols.astype(np.float32))],
                         [f"{p}/tiles"], name=f"{p}/cols", strides=[1, TILE], group=c * ALPHA),
        helper.make_node("Reshape", [f"{p}/tiles", const(f"winograd/shape_tiles_{c}x{th}x{tw}",
                                                         np.array([-1, c, ALPHA * ALPHA, th * tw], np.int64))],
                         [f"{p}/v_cp"], name=f"{p}/v_cp"),
        helper.make_node("Transpose", [f"{p}/v_cp"], [f"{p}/v"], name=f"{p}/v", perm=[0, 2, 1, 3]),
    ]


OUTPUT_FORMS = ("depth_to_space", "conv_transpose")
MIN_CHANNELS = {"depth_to_space": 192, "conv_transpose": 128}  # the channel rule's bar per form, see winograd_convs


def output_form_for(flags: Iterable[str]) -> str:
    """The output transform form measured faster on a CPU with these /proc/cpuinfo flags.

    AVX-512 (2-core Xeon with AMX, 2026-12-04, A/B on the whole warping graph, batch 1, identical output):
    DepthToSpace 2.69 → 2.46 s a frame; its transforms 0.57 s (ConvTranspose's per-element col2im and the layout
    Transpose) → 0.32 s. AVX2 only (2-core AMD EPYC, Zen 3, 2026-12-02): the DepthToSpace alone cost more than the
    grouped ConvTranspose, so those CPUs (and any whose flags are unknown) keep the ConvTranspose.
    """
    return "depth_to_space" if "avx512f" in set(flags) else "conv_transpose"


def _output_transform_conv_transpose(m: str, y: str, p: str, k: int, th: int, tw: int, bias: np.ndarray,
                                     const) -> list[onnx.NodeProto]:
    """Y = Aᵀ·M·A of the GEMM output `m` (N×36×K×tiles) as the image `y`, bias included: M transposed to
    N×(K·36)×th×tw, then one grouped ConvTranspose whose 4×4 kernels (one per transformed value) place the tile."""
    _, _, at = winograd_matrices()
    per_value = np.einsum("ia,jb->abij", at, at).reshape(1, ALPHA * ALPHA, TILE, TILE)
    per_channel = np.tile(per_value, (k, 1, 1, 1)).reshape(k * ALPHA * ALPHA, 1, TILE, TILE)
    return [
        helper.make_node("Transpose", [m], [f"{p}/m_k"], name=f"{p}/m_k", perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", [f"{p}/m_k", const(f"winograd/shape_out_{k}x{th}x{tw}",
                                                       np.array([-1, k * ALPHA * ALPHA, th, tw], np.int64))],
                         [f"{p}/m_planes"], name=f"{p}/m_planes"),
        helper.make_node("ConvTranspose", [f"{p}/m_planes", const(f"winograd/out_kernels_{k}",
                                                                  per_channel.astype(np.float32)),
                                           const(f"{p}/bias", bias)],
                         [y], name=f"{p}/out", group=k, strides=[TILE, TILE], kernel_shape=[TILE, TILE]),
    ]


def _output_transform(m: str, y: str, p: str, k: int, th: int, tw: int, out_transform: str, bias: np.ndarray,
                      const) -> list[onnx.NodeProto]:
    """Y = Aᵀ·M·A of the GEMM output `m` (N×36×K×tiles) as the image `y` (N×K×4·th×4·tw), plus the bias.

    M seen as N×36×(K·tiles) times Aᵀ⊗Aᵀ gives N×16×(K·tiles): plane r·4+s holds every tile's pixel (r, s),
    which is DepthToSpace's DCR order, so one DepthToSpace places them. A bias of zeros (convolutions without
    one) adds no pass.
    """
    nodes = [
        helper.make_node("Reshape", [m, const(f"winograd/shape_gemm_{k}x{th}x{tw}",
                                              np.array([-1, ALPHA * ALPHA, k * th * tw], np.int64))],
                         [f"{p}/m_rows"], name=f"{p}/m_rows"),
        helper.make_node("MatMul", [out_transform, f"{p}/m_rows"], [f"{p}/y_rows"], name=f"{p}/out_gemm"),
        helper.make_node("Reshape", [f"{p}/y_rows", const(f"winograd/shape_planes_{k}x{th}x{tw}",
                                                          np.array([-1, TILE * TILE * k, th, tw], np.int64))],
                         [f"{p}/y_planes"], name=f"{p}/y_planes"),
    ]
    if not np.any(bias):
        return nodes + [helper.make_node("DepthToSpace", [f"{p}/y_planes"], [y], name=f"{p}/out",
                                         blocksize=TILE, mode="DCR")]
    return nodes + [
        helper.make_node("DepthToSpace", [f"{p}/y_planes"], [f"{p}/y_nobias"], name=f"{p}/out", blocksize=TILE,
                         mode="DCR"),
        helper.make_node("Add", [f"{p}/y_nobias", const(f"{p}/bias", bias.reshape(k, 1, 1))], [y], name=f"{p}/bias"),
    ]


def winograd_convs(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]], min_size: int = 32,
                   min_channels: int | None = None, output_form: str = "depth_to_space") -> tuple[onnx.ModelProto,
                                                                                             WinogradReport]:
    """A copy of `model` whose eligible 3×3 convolutions run as Winograd F(4×4, 3×3); the report counts them.

    `input_shapes` pins the graph inputs (their first dimension is the batch) so that shape inference can size
    every convolution.
    A convolution qualifies from `min_size`² pixels and when 2·C·K/(C + K) ≥ `min_channels`, K summed over the
    convolutions that read its input. The default depends on the output form, measured on the warping graph:
    128 for the ConvTranspose form (AVX2 EPYC: a lone 64-channel side at 256² is slower than direct, `up_1`'s
    γ/β pairs of 128 → 64 gain), 192 for the DepthToSpace form (Xeon, A/B at batch 1: 2.39 → 2.34 s a frame
    with `up_1`'s `norm_1` and `norm_s` pairs direct; 256 is slower, 2.49 s; 80 adds `up_1.conv_0`, 2.39 s).
    """
    if output_form not in OUTPUT_FORMS:
        raise ValueError(f"output_form must be one of {OUTPUT_FORMS}, not {output_form!r}")
    if min_channels is None:
        min_channels = MIN_CHANNELS[output_form]
    model, batch = copy_with_batch(model, input_shapes)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    shapes = conv_input_shapes(model, input_shapes)
    const = Constants()
    bt, g, at = winograd_matrices()
    nodes: list[onnx.NodeProto] = []
    report = WinogradReport(0, 0, 0.0, 0.0)
    transformed: dict[str, str] = {}  # convolution input -> its transformed tiles V

    weights = {node.output[0]: conv_weight(node, inits) for node in graph.node if node.op_type == "Conv"}
    rewrite = _worth_it(((node, weights[node.output[0]]) for node in graph.node if node.op_type == "Conv"
                         and _eligible(node, weights[node.output[0]], shapes.get(node.input[0]), batch, min_size)),
                        min_channels)
    for node in graph.node:
        if node.op_type != "Conv" or node.output[0] not in rewrite:
            report.kept += node.op_type == "Conv"
            nodes.append(node)
            continue
        weight = weights[node.output[0]]
        k, c = weight.shape[:2]
        _, _, h, w = shapes[node.input[0]]
        th, tw = h // TILE, w // TILE
        p = (node.name or node.output[0]) + "/winograd"
        x = node.input[0]
        if x not in transformed:  # convolutions reading the same tensor share its input transform
            transformed[x] = f"{p}/v"
            nodes += _input_transform(x, f"{p}", c, th, tw, bt, const)
        v = transformed[x]
        nodes.append(helper.make_node("MatMul", [const(f"{p}/u", _transformed_weights(weight, g)), v], [f"{p}/m"],
                                      name=f"{p}/gemm"))
        if output_form == "depth_to_space":
            out_transform = const("winograd/out_transform", np.kron(at, at).astype(np.float32))  # (r·4+s) × (a·6+b)
            nodes += _output_transform(f"{p}/m", node.output[0], p, k, th, tw, out_transform,
                                       conv_bias(node, inits, k), const)
        else:
            nodes += _output_transform_conv_transpose(f"{p}/m", node.output[0], p, k, th, tw,
                                                      conv_bias(node, inits, k), const)
        report.rewritten += 1
        report.gmac_before += h * w * k * c * 9 / 1e9
        report.gmac_after += th * tw * k * c * ALPHA * ALPHA / 1e9

    replace_nodes(graph, nodes, const)
    return model, report
