"""paste_back.onnx: the soft-mask paste-back as an ONNX graph, so on a GPU the animated crop is blended in place.

The numpy path (runtime/paste_back.py) needs the decoded crop on the host: download, cv2.warpAffine over the
frame, blend. This graph takes the warping graph's float output as it is (it may stay on the GPU) and does the
same steps: quantise to uint8 levels like ``to_uint8_images``, warp with one 4-D bilinear GridSample (zeros
padding = OpenCV's black border), round like OpenCV's uint8 warp, blend ``mask·warped + (1 − mask)·frame``,
clip and truncate. The sampling grid (where every frame pixel falls in the crop) and the warped mask are made
once per source on the host (runtime/paste_back_gpu.py). Built with onnx.helper only: no torch needed.

It also returns the quantised crop as uint8 N×512×512×3 (the side-by-side video needs it) so the float crop
never has to come back to the host.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from runtime.manifest import ModelEntry, TensorSpec, sha256_file

PASTE_BACK_OPSET = 20  # GridSample's `linear` mode spelling is opset 20
CROP_SIZE = 512  # the warping graph's output side
GRAPH_NAME = "paste_back"
MAX_LEVELS_VS_NUMPY = 2  # OpenCV's 5-bit fixed-point warp weights vs GridSample's exact ones (measured: 1)


def _const(name: str, values: float | list[int], dtype: type) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def build_paste_back_graph() -> onnx.ModelProto:
    """The paste-back graph: (crop, grid, mask, frame) → (frame_out, crop_out); H, W and the batch N dynamic.

    Inputs: ``crop`` N×3×512×512 float32 in [0, 1]; ``grid`` 1×H×W×2 float32 (x, y of each frame pixel in the
    crop, normalised to [-1, 1] with align_corners=False); ``mask`` 1×1×H×W float32 in [0, 1]; ``frame``
    F×H×W×3 uint8 with F = 1 (one original for every crop) or N (one per crop, e.g. a frame another face was
    already pasted into). Outputs: ``frame_out`` N×H×W×3 uint8, ``crop_out`` N×512×512×3 uint8.
    """
    s = CROP_SIZE
    inputs = [
        helper.make_tensor_value_info("crop", TensorProto.FLOAT, ["N", 3, s, s]),
        helper.make_tensor_value_info("grid", TensorProto.FLOAT, [1, "H", "W", 2]),
        helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, "H", "W"]),
        helper.make_tensor_value_info("frame", TensorProto.UINT8, ["F", "H", "W", 3]),
    ]
    outputs = [
        helper.make_tensor_value_info("frame_out", TensorProto.UINT8, ["N", "H", "W", 3]),
        helper.make_tensor_value_info("crop_out", TensorProto.UINT8, ["N", s, s, 3]),
    ]
    inits = [
        _const("zero", 0.0, np.float32),
        _const("one", 1.0, np.float32),
        _const("levels", 255.0, np.float32),
        _const("stack_shape", [1, -1, 0, 0], np.int64),  # N crops → one image of 3N channels, one grid for all
        _const("minus_one_three", [-1, 3], np.int64),
    ]
    node = helper.make_node
    nodes = [
        # the uint8 levels the numpy path's crop has: floor(clip(x, 0, 1) · 255)
        node("Clip", ["crop", "zero", "one"], ["crop_clipped"]),
        node("Mul", ["crop_clipped", "levels"], ["crop_scaled"]),
        node("Floor", ["crop_scaled"], ["crop_levels"]),
        node("Transpose", ["crop_levels"], ["crop_nhwc"], perm=[0, 2, 3, 1]),
        node("Cast", ["crop_nhwc"], ["crop_out"], to=TensorProto.UINT8),
        # warp: all N·3 channels through one 4-D GridSample so the grid needs no copy per crop
        node("Reshape", ["crop_levels", "stack_shape"], ["crop_stacked"]),
        node("GridSample", ["crop_stacked", "grid"], ["warped_stacked"], mode="linear", padding_mode="zeros",
             align_corners=0),
        node("Shape", ["grid"], ["frame_hw"], start=1, end=3),
        node("Concat", ["minus_one_three", "frame_hw"], ["unstack_shape"], axis=0),
        node("Reshape", ["warped_stacked", "unstack_shape"], ["warped_nchw"]),
        node("Round", ["warped_nchw"], ["warped_levels"]),  # OpenCV's uint8 warp rounds to whole levels
        node("Transpose", ["warped_levels"], ["warped"], perm=[0, 2, 3, 1]),
        # blend in NHWC float32, the same expression and order as the numpy path
        node("Transpose", ["mask"], ["weight"], perm=[0, 2, 3, 1]),
        node("Cast", ["frame"], ["frame_float"], to=TensorProto.FLOAT),
        node("Mul", ["weight", "warped"], ["face_part"]),
        node("Sub", ["one", "weight"], ["keep"]),
        node("Mul", ["keep", "frame_float"], ["frame_part"]),
        node("Add", ["face_part", "frame_part"], ["blended"]),
        node("Clip", ["blended", "zero", "levels"], ["blended_clipped"]),
        node("Floor", ["blended_clipped"], ["blended_levels"]),  # truncation, like numpy's astype(uint8)
        node("Cast", ["blended_levels"], ["frame_out"], to=TensorProto.UINT8),
    ]
    graph = helper.make_graph(nodes, GRAPH_NAME, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", PASTE_BACK_OPSET)],
                              producer_name="liveportrait-onnx")
    model.ir_version = 10  # onnxruntime 1.2x loads IR ≤ 10 (opset 20 needs ≥ 9)
    onnx.checker.check_model(model, full_check=True)
    return model


def write_paste_back_graph(path: str | Path) -> onnx.ModelProto:
    """Build, check and write paste_back.onnx atomically; returns the model (the exporter records it)."""
    path = Path(path)
    model = build_paste_back_graph()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(model.SerializeToString())
    tmp.replace(path)
    return model


def export_paste_back(out: str | Path, key: str = GRAPH_NAME) -> ModelEntry:
    """Write ``<out>/paste_back.onnx`` after checking it against the numpy path; returns its manifest entry.

    Raises ValueError when the graph differs from the numpy path by more than OpenCV's fixed-point rounding can
    explain (it is then not written).
    """
    model = build_paste_back_graph()
    parity = check_against_numpy(model)
    if parity["max_abs_levels_vs_numpy"] > MAX_LEVELS_VS_NUMPY or parity["crop_max_abs_levels"] > 0:
        raise ValueError(f"paste_back.onnx differs from the numpy paste-back ({parity}); not written")
    path = Path(out) / f"{key}.onnx"
    write_paste_back_graph(path)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return ModelEntry(key=key, file=path.name, graph=GRAPH_NAME, sha256=sha256_file(path),
                      bytes=path.stat().st_size, opset=opset, precision="fp32", grid_sample="4d",
                      inputs=_specs(model.graph.input), outputs=_specs(model.graph.output), parity=parity)


def _specs(values: Iterable[onnx.ValueInfoProto]) -> list[TensorSpec]:
    """Manifest tensor specs (symbolic dims as their names) of graph inputs or outputs."""
    specs = []
    for v in values:
        t = v.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim)
        specs.append(TensorSpec(v.name, dims, helper.tensor_dtype_to_np_dtype(t.elem_type).name))
    return specs


def check_against_numpy(model: onnx.ModelProto, seed: int = 3) -> dict[str, float]:
    """Run the graph on ORT-CPU and the numpy path on one synthetic rotated crop; max/mean abs diff in levels.

    The exporter stores these in the manifest's parity field: GridSample weights are exact, OpenCV's are 5-bit
    fixed point, so a level or two at sharp edges is expected; more means the graph is wrong.
    """
    import onnxruntime as ort

    from runtime.paste_back import paste_back, prepare_paste_back
    from runtime.paste_back_gpu import grid_for

    rng = np.random.default_rng(seed)
    h, w = 301, 357
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    frame = np.stack([120 + 90 * np.sin(xx / 23.0), 128 + 80 * np.cos(yy / 31.0), 40 + 0.5 * xx], axis=2)
    frame = np.clip(frame + rng.normal(0, 6, frame.shape), 0, 255).astype(np.uint8)
    angle, scale = 0.35, 0.4  # crop pixel → frame pixel: rotate, shrink, move to the middle
    c, s_ = np.cos(angle) * scale, np.sin(angle) * scale
    m_c2o = np.array([[c, -s_, 90.0], [s_, c, 40.0], [0, 0, 1]], dtype=np.float32)
    yc, xc = np.mgrid[0:CROP_SIZE, 0:CROP_SIZE].astype(np.float32) / CROP_SIZE
    crop = np.stack([np.sin(6 * xc) * 0.5 + 0.5, yc, (xc * yc) ** 0.5], axis=0)[None].astype(np.float32)
    mask = prepare_paste_back(None, m_c2o, (w, h))
    crop_u8 = (np.clip(crop[0].transpose(1, 2, 0), 0, 1) * 255.0).astype(np.uint8)
    want = paste_back(crop_u8, m_c2o, frame, mask)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got, got_crop = session.run(None, {"crop": crop, "grid": grid_for(m_c2o, (h, w)), "mask": mask[None, None, ..., 0],
                                       "frame": frame[None]})
    diff = np.abs(got[0].astype(np.int16) - want.astype(np.int16))
    return {"max_abs_levels_vs_numpy": float(diff.max()), "mean_abs_levels_vs_numpy": float(diff.mean()),
            "crop_max_abs_levels": float(np.abs(got_crop[0].astype(np.int16) - crop_u8).max())}
