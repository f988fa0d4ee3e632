"""xpose.onnx: trace our XPose with dynamic H and W, simplify, and check it against PyTorch at another size.

The graph takes any image size (the runtime resizes photos to 800 px short side / 1333 long side, any aspect), so
it is traced once at TRACE_SIZE and checked at CHECK_SIZE (different on purpose: a graph with a size baked in
fails there). The deformable sampling is 4-D GridSample per level, so the same file serves CPU, CUDA, CoreML
and OpenVINO: there is no separate 4-D variant.
"""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import dataclass

import numpy as np
import onnx
import torch

from export.graphs import GraphSpec
from export.onnx_export import OPSET, ExportError, cpu_session, simplify

XPOSE_INPUTS = (("image", (1, 3, "H", "W")), ("instance_text", (1, 512)), ("keypoint_text", (68, 512)),
                ("keypoint_mask", (68,)))
XPOSE_OUTPUTS = (("logits", (1, 50)), ("boxes", (1, 50, 4)), ("keypoints", (1, 50, 68, 2)))
TRACE_SIZE = (512, 608)  # (H, W) of the traced example
CHECK_SIZE = (320, 384)  # the export's parity check: another size, affordable on a 2-core CPU (~10 s in torch)
XPOSE_TOL = 1e-3  # max-abs relative to each output's scale
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclass
class XPoseCheck:
    """Parity of xpose.onnx vs PyTorch at one size: worst max-abs/scale over the outputs."""

    size: tuple[int, int]
    max_abs: dict[str, float]
    scale: dict[str, float]
    seconds_torch: float
    seconds_ort: float

    @property
    def relative(self) -> float:
        return max(self.max_abs[k] / max(self.scale[k], 1e-6) for k in self.max_abs)


def xpose_spec() -> GraphSpec:
    """The contract as a GraphSpec (names for the exporter and the manifest)."""
    return GraphSpec("xpose", ("xpose",), XPOSE_INPUTS, XPOSE_OUTPUTS)


def probe_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(1, 3, H, W) ImageNet-normalised synthetic photo: smooth colour field, a bright blob (a 'face') and noise."""
    import cv2

    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.random((5, 6, 3), dtype=np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    blob = np.exp(-(((yy - cy) / (0.2 * h)) ** 2 + ((xx - cx) / (0.2 * w)) ** 2))[..., None]
    img = np.clip(0.5 * base + 0.5 * blob * np.array([0.9, 0.7, 0.5], np.float32)
                  + rng.normal(0, 0.02, (h, w, 3)).astype(np.float32), 0, 1)
    return ((img - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)


def probe_feeds(h: int, w: int, n: int = 9, seed: int = 0) -> dict[str, np.ndarray]:
    """Graph feeds with the real CLIP features (shipped copy) for n = 9 or 68 keypoints."""
    from export.xpose_text import SHIPPED_TEXT, TEXT_KEYS, xpose_feeds

    with np.load(SHIPPED_TEXT) as data:
        arrays = {k: data[k].astype(np.float32) for k in TEXT_KEYS}
    return {"image": probe_image(h, w, seed), **xpose_feeds(arrays, n)}


def _args(feeds: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(feeds[name]) for name, _ in XPOSE_INPUTS)


def trace_xpose(module: torch.nn.Module, size: tuple[int, int] = TRACE_SIZE) -> onnx.ModelProto:
    """TorchScript export at opset 20 with H and W dynamic (batch is fixed at 1 by the contract)."""
    buffer = io.BytesIO()
    names_out = [n for n, _ in XPOSE_OUTPUTS]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), _args(probe_feeds(*size)), buffer, opset_version=OPSET, dynamo=False,
                          input_names=[n for n, _ in XPOSE_INPUTS], output_names=names_out,
                          dynamic_axes={"image": {2: "H", 3: "W"}}, do_constant_folding=True)
    return onnx.load_from_string(buffer.getvalue())


def check_xpose(model: onnx.ModelProto | str, module: torch.nn.Module, size: tuple[int, int],
                n: int = 9, seed: int = 1) -> XPoseCheck:
    """Run onnxruntime CPU and the module on the same probe at `size`; per-output max-abs and scale."""
    feeds = probe_feeds(*size, n=n, seed=seed)
    start = time.perf_counter()
    with torch.no_grad():
        ref = [r.numpy() for r in module.eval()(*_args(feeds))]
    t_torch = time.perf_counter() - start
    sess = cpu_session(model)
    start = time.perf_counter()
    got = sess.run([n for n, _ in XPOSE_OUTPUTS], feeds)
    t_ort = time.perf_counter() - start
    max_abs, scale = {}, {}
    for (name, _), g, r in zip(XPOSE_OUTPUTS, got, ref, strict=True):
        if g.shape != r.shape:
            raise ExportError(f"xpose: output {name} has shape {g.shape} in ONNX, {r.shape} in PyTorch")
        if not np.isfinite(g).all():
            raise ExportError(f"xpose: output {name} has non-finite values in onnxruntime")
        max_abs[name] = float(np.abs(g - r).max())
        scale[name] = float(np.abs(r).max())
    return XPoseCheck(size, max_abs, scale, t_torch, t_ort)


def build_xpose(module: torch.nn.Module, trace_size: tuple[int, int] = TRACE_SIZE,
                check_size: tuple[int, int] = CHECK_SIZE, tolerance: float = XPOSE_TOL,
                slim: bool = True) -> tuple[onnx.ModelProto, XPoseCheck]:
    """Trace, simplify, onnx.checker, parity at `check_size` (≠ trace size); raise ExportError on failure."""
    if tuple(check_size) == tuple(trace_size):
        raise ValueError("check the graph at a size other than the trace size, or dynamic H/W is not proven")
    model = trace_xpose(module, trace_size)
    if slim:
        model = simplify(model)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"xpose: onnx.checker rejected the graph: {exc}") from exc
    check = check_xpose(model, module, check_size)
    if check.relative > tolerance:
        raise ExportError(f"xpose: onnxruntime differs from PyTorch at {check_size} by {check.max_abs} "
                          f"(scales {check.scale}; relative {check.relative:.3g} > {tolerance:g}); not written")
    return model, check
