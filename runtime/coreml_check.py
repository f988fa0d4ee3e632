"""Static check of how much of an ONNX graph onnxruntime's CoreML EP (ML Program format) would take.

Why: the CoreML EP silently leaves every node it cannot convert to the CPU EP, so a graph can "run on
CoreML" while its heavy part (e.g. a 5-D GridSample or a 3-D convolution) runs on the CPU with a copy
at each partition edge. This module predicts the split without a Mac, from the graph alone.

The rules mirror onnxruntime's CoreML EP sources (``core/providers/coreml/builders``: ``helper.cc``
``IsInputSupported``, ``base_op_builder.cc`` and the ``impl/*_op_builder.cc`` files) and the ML Program
operator table of its documentation, as read for ORT 1.20-1.22. Assumptions, stated once:

* Op table: only the ops the documentation lists for ML Program. Newer ORT builds accept a few more
  (Where, Expand, Tile, Equal, logical ops, Gather...); pass them in ``extra_ops`` once verified.
  Pad and BatchNormalization are not in that table (ORT fuses Conv+BatchNormalization before
  partitioning; Pad has an NeuralNetwork-only builder).
* Every input of a node needs an inferred shape of rank <= 5, no dimension > 16384 and no zero
  dimension (the Resize ``roi`` input excepted); its first input must be float32/float16 unless the op
  is a shape-handling op (int32/int64/bool accepted there, an approximation of the per-op overrides).
* Dynamic (symbolic) dimensions are accepted, as in ORT's default flags; with
  ``require_static_shapes=True`` (COREML_FLAG_ONLY_ALLOW_STATIC_INPUT_SHAPES / ``RequireStaticInputShapes``)
  any symbolic dimension makes a node unsupported. ``dynamic_nodes`` counts the nodes concerned either way.
* Constant nodes and nodes whose inputs are all constant are folded by ORT before partitioning; they are
  not counted. Initializers stored as external data are refused by the EP.
* Partitions are counted as the maximal runs of supported nodes in topological order, separated by
  unsupported nodes (an upper bound of ORT's connected-component partitioning).

Uses only ``onnx`` (imported lazily by the runtime for checks); never imports torch.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnx import TensorProto

__all__ = ["CoreMLReport", "NodeIssue", "check_coreml_compat", "format_report", "main"]

MAX_RANK = 5
MAX_DIM = 16384
_FLOATS = {TensorProto.FLOAT, TensorProto.FLOAT16}
_INTS = {TensorProto.INT32, TensorProto.INT64, TensorProto.BOOL}
# Ops whose builders take integer tensors as first input (shape plumbing).
_INT_INPUT_OPS = {"Cast", "Shape", "Slice", "Reshape", "Squeeze", "Unsqueeze", "Concat", "ArgMax", "Transpose"}
# Ops whose output depends on more than input values: never constant-folded.
_NEVER_FOLDED = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"}

Dim = int | str | None


@dataclass(frozen=True)
class TensorInfo:
    """Element type and (possibly partial) shape of a value; ``shape`` is None when the rank is unknown."""

    elem_type: int
    shape: tuple[Dim, ...] | None


@dataclass(frozen=True)
class NodeIssue:
    """One node the CoreML EP would leave to the CPU EP, and why."""

    name: str
    op_type: str
    reason: str


@dataclass
class CoreMLReport:
    """Per-graph prediction of the CoreML EP (ML Program) partitioning."""

    graph_name: str
    total_nodes: int
    supported_nodes: int
    partitions: int
    folded_nodes: int
    dynamic_nodes: int
    require_static_shapes: bool
    unsupported: list[NodeIssue] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        """Share of counted nodes the CoreML EP would take (1.0 for an empty graph)."""
        return 1.0 if self.total_nodes == 0 else self.supported_nodes / self.total_nodes

    @property
    def fully_supported(self) -> bool:
        """True when the whole graph would become a single CoreML partition."""
        return self.supported_nodes == self.total_nodes and self.partitions <= 1

    def unsupported_by_op(self) -> dict[str, int]:
        """Count of unsupported nodes per op type, most frequent first."""
        return dict(Counter(issue.op_type for issue in self.unsupported).most_common())


@dataclass
class _Ctx:
    """What an op rule may look at for one node."""

    node: onnx.NodeProto
    inputs: list[TensorInfo | None]  # None for an absent optional input
    outputs: list[TensorInfo | None]
    constant: list[bool]  # per input: initializer / Constant / folded value
    attrs: dict[str, object]

    def attr(self, name: str, default: object) -> object:
        """Attribute value decoded to str/int/float/list, or ``default``."""
        value = self.attrs.get(name, default)
        return value.decode() if isinstance(value, bytes) else value

    def rank(self, i: int) -> int | None:
        """Rank of input ``i`` (None when unknown or absent)."""
        info = self.inputs[i] if i < len(self.inputs) else None
        return None if info is None or info.shape is None else len(info.shape)

    def has_input(self, i: int) -> bool:
        """Whether optional input ``i`` is present."""
        return i < len(self.node.input) and self.node.input[i] != ""


Rule = Callable[[_Ctx], str | None]


# ---------------------------------------------------------------- op rules (return a reason or None)


def _rule_grid_sample(c: _Ctx) -> str | None:
    if c.rank(0) != 4:
        return f"GridSample input is {c.rank(0)}-D; the CoreML EP takes only 4-D (no 5-D/trilinear resample)"
    mode = str(c.attr("mode", "linear"))
    if mode not in ("linear", "bilinear"):
        return f"GridSample mode '{mode}' is not supported (builder accepts only linear/bilinear)"
    if str(c.attr("padding_mode", "zeros")) == "reflection" and int(c.attr("align_corners", 0)) == 0:
        return "GridSample linear + reflection padding + align_corners=0 is disabled in the CoreML EP"
    return None


def _rule_conv(c: _Ctx) -> str | None:
    if c.rank(0) not in (3, 4):
        return f"Conv input is {c.rank(0)}-D; only 1-D/2-D convolution is supported"
    if c.has_input(2) and not c.constant[2]:
        return "Conv bias must be a constant initializer"
    return None


def _rule_conv_transpose(c: _Ctx) -> str | None:
    if not c.constant[1] or (c.has_input(2) and not c.constant[2]):
        return "ConvTranspose weight and bias must be constant initializers"
    if str(c.attr("auto_pad", "NOTSET")) in ("SAME_UPPER", "SAME_LOWER"):
        return "ConvTranspose auto_pad SAME_UPPER/SAME_LOWER is not supported"
    if "output_shape" in c.attrs:
        return "ConvTranspose output_shape is not supported"
    if any(int(p) != 0 for p in c.attr("output_padding", [])):  # type: ignore[union-attr]
        return "ConvTranspose output_padding must be the default (zeros)"
    return None


def _rule_pool_2d(c: _Ctx) -> str | None:
    if c.rank(0) != 4:
        return f"{c.node.op_type} input is {c.rank(0)}-D; only 2-D pooling is supported"
    return None


def _rule_resize(c: _Ctx) -> str | None:
    if c.rank(0) != 4:
        return f"Resize input is {c.rank(0)}-D; only 4-D (2-D spatial) resizing is supported"
    mode = str(c.attr("mode", "nearest"))
    if mode not in ("linear", "nearest"):
        return f"Resize mode '{mode}' is not supported"
    if int(c.attr("antialias", 0)) != 0 or int(c.attr("exclude_outside", 0)) != 0:
        return "Resize antialias/exclude_outside are not supported"
    coord = str(c.attr("coordinate_transformation_mode", "half_pixel"))
    if mode == "linear" and coord not in ("asymmetric", "align_corners", "half_pixel", "pytorch_half_pixel"):
        return f"Resize linear with coordinate_transformation_mode '{coord}' is not supported"
    if mode == "nearest" and (coord != "asymmetric" or str(c.attr("nearest_mode", "round_prefer_floor")) != "floor"):
        return "Resize nearest needs coordinate_transformation_mode=asymmetric and nearest_mode=floor"
    sizing = [i for i in (2, 3) if c.has_input(i)]
    if not sizing or not all(c.constant[i] for i in sizing):
        return "Resize scales/sizes must be constant"
    src, dst = c.inputs[0], c.outputs[0] if c.outputs else None
    if src and dst and src.shape and dst.shape and len(src.shape) == len(dst.shape):
        # only known sizes are comparable: shape inference renames symbolic dims (N → unk__7) across a Resize
        pairs = zip(src.shape[:2], dst.shape[:2], strict=True)
        if any(isinstance(a, int) and isinstance(b, int) and a != b for a, b in pairs):
            return "Resize may only change the last two axes (N and C must keep their size)"
    return None


def _rule_constant_inputs(indices: Sequence[int], what: str) -> Rule:
    def rule(c: _Ctx) -> str | None:
        for i in indices:
            if c.has_input(i) and not c.constant[i]:
                return f"{c.node.op_type} {what} must be constant"
        return None

    return rule


def _rule_gemm(c: _Ctx) -> str | None:
    if not c.constant[1]:
        return "Gemm input B must be a constant initializer"
    if int(c.attr("transA", 0)) != 0:
        return "Gemm transA=1 is not supported"
    return None


def _rule_pow(c: _Ctx) -> str | None:
    if any(info is None or info.elem_type != TensorProto.FLOAT for info in c.inputs[:2]):
        return "Pow is supported only when both inputs are float32"
    return None


def _rule_depth_to_space(c: _Ctx) -> str | None:
    shape = c.inputs[0].shape if c.inputs[0] else None
    if str(c.attr("mode", "DCR")) == "CRD" and (shape is None or not all(isinstance(d, int) for d in shape)):
        return "DepthToSpace mode CRD needs a static input shape"
    return None


_ML_PROGRAM_RULES: dict[str, Rule | None] = {
    "Add": None, "Sub": None, "Mul": None, "Div": None, "Max": None, "Pow": _rule_pow,
    "Relu": None, "Sigmoid": None, "Tanh": None, "LeakyRelu": None, "PRelu": None, "Gelu": None,
    "Erf": None, "Round": None, "Sqrt": None, "Reciprocal": None, "Softmax": None,
    "ArgMax": None, "Cast": None, "Shape": None, "Concat": None, "Transpose": None,
    "Clip": _rule_constant_inputs((1, 2), "min/max"),
    "Reshape": _rule_constant_inputs((1,), "target shape"),
    "Slice": _rule_constant_inputs((1, 2, 3, 4), "starts/ends/axes/steps"),
    "Split": _rule_constant_inputs((1,), "split sizes"),
    "Squeeze": _rule_constant_inputs((1,), "axes"),
    "Unsqueeze": _rule_constant_inputs((1,), "axes"),
    "ReduceSum": _rule_constant_inputs((1,), "axes"),
    "ReduceMean": _rule_constant_inputs((1,), "axes"),
    "ReduceMax": _rule_constant_inputs((1,), "axes"),
    "Conv": _rule_conv, "ConvTranspose": _rule_conv_transpose,
    "AveragePool": _rule_pool_2d, "MaxPool": _rule_pool_2d,
    "GlobalAveragePool": _rule_pool_2d, "GlobalMaxPool": _rule_pool_2d,
    "Gemm": _rule_gemm, "MatMul": None,
    "GroupNormalization": None, "InstanceNormalization": None, "LayerNormalization": None,
    "DepthToSpace": _rule_depth_to_space,
    "GridSample": _rule_grid_sample,
    "Resize": _rule_resize,
}  # fmt: skip


# ---------------------------------------------------------------- graph walking


def _tensor_info(value_type: onnx.TypeProto) -> TensorInfo | None:
    if not value_type.HasField("tensor_type"):
        return None
    tt = value_type.tensor_type
    if not tt.HasField("shape"):
        return TensorInfo(tt.elem_type, None)
    dims: list[Dim] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or None)
    return TensorInfo(tt.elem_type, tuple(dims))


def _topological(nodes: Sequence[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Stable Kahn sort (keeps file order when it is already topological, as exporters write it)."""
    produced_by = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    deps = [{produced_by[x] for x in n.input if x in produced_by and x not in available} for n in nodes]
    users: dict[int, list[int]] = {}
    for i, d in enumerate(deps):
        for j in d:
            users.setdefault(j, []).append(i)
    remaining = [len(d) for d in deps]
    ready = sorted(i for i, r in enumerate(remaining) if r == 0)
    order: list[int] = []
    while ready:
        i = ready.pop(0)
        order.append(i)
        for u in users.get(i, []):
            remaining[u] -= 1
            if remaining[u] == 0:
                ready.append(u)
                ready.sort()
    if len(order) != len(nodes):
        raise ValueError("graph has a cycle or a node reads a value nobody produces")
    return [nodes[i] for i in order]


def _input_reason(c: _Ctx, i: int, require_static: bool) -> str | None:
    name = c.node.input[i]
    info = c.inputs[i]
    if info is None or info.shape is None:
        return f"input '{name}' has no inferred shape"
    if len(info.shape) > MAX_RANK:
        return f"input '{name}' has rank {len(info.shape)} > {MAX_RANK}"
    for d in info.shape:
        if isinstance(d, int):
            if d > MAX_DIM:
                return f"input '{name}' has a dimension {d} > {MAX_DIM}"
            if d == 0 and not (c.node.op_type == "Resize" and i == 1):
                return f"input '{name}' has a zero-sized dimension"
        elif require_static:
            return f"input '{name}' has a dynamic dimension ({d or '?'}) and static shapes are required"
    return None


def _dtype_reason(c: _Ctx) -> str | None:
    info = c.inputs[0] if c.inputs else None
    if info is None:
        return None
    allowed = _FLOATS | (_INTS if c.node.op_type in _INT_INPUT_OPS else set())
    if info.elem_type not in allowed:
        type_name = TensorProto.DataType.Name(info.elem_type)
        return f"first input has dtype {type_name}; the CoreML builder takes float32/float16"
    return None


def _load(model: onnx.ModelProto | str | Path) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}")
    return onnx.load(str(path), load_external_data=False)  # shapes only: weights are not needed


def check_coreml_compat(
    model: onnx.ModelProto | str | Path,
    *,
    require_static_shapes: bool = False,
    extra_ops: Iterable[str] = (),
) -> CoreMLReport:
    """Predict which nodes of the main graph the CoreML EP (ML Program) would take, and the partition count."""
    proto = _load(model)
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    graph = inferred.graph
    rules = dict(_ML_PROGRAM_RULES)
    rules.update({op: None for op in extra_ops})

    infos: dict[str, TensorInfo | None] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        infos.setdefault(vi.name, _tensor_info(vi.type))
    external = set()
    constants: set[str] = set()
    for init in graph.initializer:
        infos[init.name] = TensorInfo(init.data_type, tuple(int(d) for d in init.dims))
        constants.add(init.name)
        if init.data_location == TensorProto.EXTERNAL:
            external.add(init.name)

    counted: list[onnx.NodeProto] = []
    folded = 0
    for node in _topological(list(graph.node), set(constants) | {i.name for i in graph.input}):
        if node.op_type == "Constant":
            constants.update(o for o in node.output if o)
            for attr in node.attribute:
                if attr.name == "value":
                    infos.setdefault(node.output[0], TensorInfo(attr.t.data_type, tuple(int(d) for d in attr.t.dims)))
            folded += 1
            continue
        present = [x for x in node.input if x]
        static_shape_of = node.op_type == "Shape" and _is_static(infos.get(node.input[0]))
        if node.op_type not in _NEVER_FOLDED and (all(x in constants for x in present) or static_shape_of):
            constants.update(o for o in node.output if o)
            folded += 1
            continue
        counted.append(node)

    verdicts: list[tuple[onnx.NodeProto, str | None]] = []
    dynamic_nodes = 0
    for node in counted:
        ctx = _Ctx(
            node=node,
            inputs=[infos.get(x) if x else None for x in node.input],
            outputs=[infos.get(x) if x else None for x in node.output],
            constant=[x in constants for x in node.input] + [False] * 8,
            attrs={a.name: onnx.helper.get_attribute_value(a) for a in node.attribute},
        )
        if any(x and _has_symbolic(infos.get(x)) for x in node.input):
            dynamic_nodes += 1
        verdicts.append((node, _node_reason(ctx, rules, external, require_static_shapes)))

    partitions, in_run = 0, False
    for _, reason in verdicts:
        if reason is None and not in_run:
            partitions += 1
        in_run = reason is None
    issues = [NodeIssue(n.name or f"<{n.op_type} #{i}>", n.op_type, r) for i, (n, r) in enumerate(verdicts) if r]
    return CoreMLReport(
        graph_name=graph.name or "main",
        total_nodes=len(verdicts),
        supported_nodes=len(verdicts) - len(issues),
        partitions=partitions,
        folded_nodes=folded,
        dynamic_nodes=dynamic_nodes,
        require_static_shapes=require_static_shapes,
        unsupported=issues,
    )


def _is_static(info: TensorInfo | None) -> bool:
    return info is not None and info.shape is not None and all(isinstance(d, int) for d in info.shape)


def _has_symbolic(info: TensorInfo | None) -> bool:
    return info is not None and info.shape is not None and not all(isinstance(d, int) for d in info.shape)


def _node_reason(c: _Ctx, rules: dict[str, Rule | None], external: set[str], require_static: bool) -> str | None:
    op = c.node.op_type
    if c.node.domain not in ("", "ai.onnx"):
        return f"custom-domain op {c.node.domain}:{op} is not supported"
    if op not in rules:
        return f"op type {op} has no ML Program builder in the CoreML EP"
    for i, name in enumerate(c.node.input):
        if not name:
            continue
        if name in external:
            return f"initializer '{name}' is stored as external data (the CoreML EP refuses it)"
        reason = _input_reason(c, i, require_static)
        if reason:
            return reason
    reason = _dtype_reason(c)
    if reason:
        return reason
    rule = rules[op]
    return rule(c) if rule else None


def format_report(report: CoreMLReport, max_issues: int = 20) -> str:
    """Human-readable summary for the CLI (`doctor`, `export --check-coreml`)."""
    verdict = "fully on CoreML" if report.fully_supported else "SPLIT between CoreML and CPU"
    lines = [
        f"graph '{report.graph_name}': {verdict}",
        f"  nodes: {report.supported_nodes}/{report.total_nodes} supported ({report.coverage:.1%}), "
        f"partitions: {report.partitions}, folded constants: {report.folded_nodes}",
        f"  nodes with dynamic input dims: {report.dynamic_nodes}"
        + (" (static shapes required)" if report.require_static_shapes else " (allowed: ORT default flags)"),
    ]
    if report.unsupported:
        by_op = ", ".join(f"{op}×{n}" for op, n in report.unsupported_by_op().items())
        lines.append(f"  unsupported by op: {by_op}")
        for issue in report.unsupported[:max_issues]:
            lines.append(f"    - {issue.name} [{issue.op_type}]: {issue.reason}")
        if len(report.unsupported) > max_issues:
            lines.append(f"    ... {len(report.unsupported) - max_issues} more")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: print a report per model; exit status 1 when any graph would be split."""
    parser = argparse.ArgumentParser(description="Predict CoreML EP (ML Program) coverage of ONNX graphs.")
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--static", action="store_true", help="require static input shapes (EP flag)")
    parser.add_argument("--extra-op", action="append", default=[], help="treat this op type as supported")
    args = parser.parse_args(argv)
    ok = True
    for path in args.models:
        report = check_coreml_compat(path, require_static_shapes=args.static, extra_ops=args.extra_op)
        print(f"{path}:\n{format_report(report)}")
        ok = ok and report.fully_supported
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
