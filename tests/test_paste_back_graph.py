"""paste_back.onnx (warp + mask blend as a graph) against the numpy/OpenCV paste-back, on the CPU EP."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from export.paste_back_graph import build_paste_back_graph, export_paste_back, write_paste_back_graph
from runtime.crop import CropResult, crop_face
from runtime.manifest import Manifest, read_manifest, sha256_file, verify_models
from runtime.options import AnimationOptions
from runtime.paste_back import paste_back, prepare_paste_back
from runtime.paste_back_gpu import GraphPaster, grid_for, load_paste_runner
from runtime.pipeline import Animator, DrivingMotion, SourceFace
from runtime.providers import resolve_device
from runtime.sessions import GraphRunner
from runtime.stages import to_uint8_images

ASSETS = Path(__file__).parent / "assets"


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return build_paste_back_graph()


@pytest.fixture(scope="module")
def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> GraphRunner:
    path = tmp_path_factory.mktemp("paste") / "paste_back.onnx"
    write_paste_back_graph(path)
    return GraphRunner("paste_back", path, resolve_device("cpu"))


def astronaut(size: tuple[int, int] | None = None) -> tuple[np.ndarray, float]:
    """The test portrait (RGB), optionally resized to (width, height); returns it and the x/y scale used."""
    image = cv2.cvtColor(cv2.imread(str(ASSETS / "source_astronaut.png"), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    if size is None:
        return image, 1.0
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), size[0] / image.shape[1]


def face_landmarks(scale: float = 1.0, theta: float = 0.15, center: tuple[float, float] = (225.0, 112.0)
                   ) -> np.ndarray:
    """A plausible 106-point set on the astronaut's face, tilted by theta (so the crop is rotated)."""
    rng = np.random.default_rng(2)
    angle = rng.uniform(0, 2 * np.pi, 106)
    radius = np.sqrt(rng.uniform(0.2, 1.0, 106))
    pts = np.column_stack([42 * radius * np.cos(angle), 55 * radius * np.sin(angle)])
    pts[[33, 35, 40, 39]] = [-20, -12]  # left-eye points (106-point layout)
    pts[[87, 89, 94, 93]] = [20, -12]
    pts[[52, 61]] = [[-4, 32], [4, 32]]  # lip pair
    c, s = np.cos(theta), np.sin(theta)
    pts = pts @ np.array([[c, -s], [s, c]]).T + np.asarray(center)
    return (pts * scale).astype(np.float32)


def animated(crop: CropResult, seed: int = 0) -> np.ndarray:
    """A 1×3×512×512 float 'generator output' from a real crop: shifted colours, smooth change, a little noise."""
    rng = np.random.default_rng(seed)
    x = crop.img_crop.astype(np.float32).transpose(2, 0, 1)[None] / 255.0
    yy, xx = np.mgrid[0:512, 0:512].astype(np.float32) / 512
    x = x * (0.9 + 0.15 * np.sin(5 * xx + 3 * yy + seed)) + rng.normal(0, 0.01, x.shape).astype(np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)  # slightly outside [0, 1] in places: the graph must clip


def run_graph(session: ort.InferenceSession, crop: np.ndarray, M_c2o: np.ndarray, mask: np.ndarray,
              frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = frame.shape[-3:-1]
    feeds = {"crop": crop, "grid": grid_for(M_c2o, (h, w)), "mask": np.ascontiguousarray(mask[None, None, ..., 0]),
             "frame": frame if frame.ndim == 4 else frame[None]}
    return tuple(session.run(["frame_out", "crop_out"], feeds))


def scene(size: tuple[int, int] | None = None) -> tuple[np.ndarray, CropResult, np.ndarray]:
    image, k = astronaut(size)
    crop = crop_face(image, face_landmarks(k))
    mask = prepare_paste_back(None, crop.M_c2o, (image.shape[1], image.shape[0]))
    return image, crop, mask


def test_graph_is_valid_and_uses_only_4d_gridsample(model: onnx.ModelProto) -> None:
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 20)]
    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in
             list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    samplers = [n for n in model.graph.node if n.op_type == "GridSample"]
    assert len(samplers) == 1
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in samplers[0].attribute}
    assert attrs == {"mode": b"linear", "padding_mode": b"zeros", "align_corners": 0}
    assert ranks[samplers[0].input[0]] == 4 and ranks[samplers[0].input[1]] == 4
    assert max(ranks.values()) <= 4  # nothing 5-D anywhere (CoreML / TensorRT <= 10 limits)
    assert {n.op_type for n in model.graph.node} <= {"Clip", "Mul", "Floor", "Transpose", "Cast", "Reshape",
                                                     "GridSample", "Shape", "Concat", "Round", "Sub", "Add"}


@pytest.mark.parametrize("size", [None, (641, 537)], ids=["512x512", "odd-641x537"])
def test_graph_matches_numpy_paste_back(session: ort.InferenceSession, size: tuple[int, int] | None) -> None:
    image, crop, mask = scene(size)
    x = animated(crop)
    crop_u8 = to_uint8_images(x)[0]
    want = paste_back(crop_u8, crop.M_c2o, image, mask)
    got, got_crop = run_graph(session, x, crop.M_c2o, mask, image)
    assert got.shape == (1, *image.shape) and got.dtype == np.uint8
    assert np.array_equal(got_crop[0], crop_u8)  # the uint8 crop is exactly the numpy path's
    diff = np.abs(got[0].astype(np.int16) - want.astype(np.int16))
    # OpenCV samples at 1/32-pixel positions with fixed-point weights, GridSample exactly;
    # measured: 512² mean 1.8e-5, max 1 (14 pixels); 641×537 mean 1.1e-5, max 1 (11 pixels), in levels
    assert diff.mean() < 0.5 and diff.max() <= 2, (diff.mean(), diff.max())
    assert (diff > 0).mean() < 1e-3  # rounding like OpenCV's uint8 warp: without it ~10 % of pixels are off by 1
    # and the face really was replaced: the graph is not just returning the frame
    face = mask[..., 0] == 1
    assert np.abs(got[0][face].astype(np.int16) - image[face]).mean() > 3


def test_pixels_outside_the_mask_are_exactly_the_original(session: ort.InferenceSession) -> None:
    image, crop, mask = scene((641, 537))
    got, _ = run_graph(session, np.ones((1, 3, 512, 512), np.float32), crop.M_c2o, mask, image)
    outside = mask[..., 0] == 0
    assert outside.sum() > 0.5 * outside.size
    assert np.array_equal(got[0][outside], image[outside])
    assert np.all(got[0][mask[..., 0] == 1] == 255)


def test_batch_of_two_equals_two_single_runs(session: ort.InferenceSession) -> None:
    image, crop, mask = scene()
    a, b = animated(crop, seed=1), animated(crop, seed=2)
    batch, crops = run_graph(session, np.concatenate([a, b]), crop.M_c2o, mask, image)
    single_a, _ = run_graph(session, a, crop.M_c2o, mask, image)
    single_b, _ = run_graph(session, b, crop.M_c2o, mask, image)
    assert batch.shape == (2, *image.shape) and crops.shape == (2, 512, 512, 3)
    assert np.array_equal(batch[0], single_a[0]) and np.array_equal(batch[1], single_b[0])
    assert not np.array_equal(batch[0], batch[1])
    # one frame per crop (F = N) blends each crop into its own frame
    frames = np.stack([image, image[::-1].copy()])
    per_frame, _ = run_graph(session, np.concatenate([a, b]), crop.M_c2o, mask, frames)
    other, _ = run_graph(session, b, crop.M_c2o, mask, frames[1])
    assert np.array_equal(per_frame[0], single_a[0]) and np.array_equal(per_frame[1], other[0])


def test_grid_for_inverts_the_crop_matrix() -> None:
    ident = grid_for(np.eye(3), (3, 5))
    assert ident.shape == (1, 3, 5, 2) and ident.dtype == np.float32
    np.testing.assert_allclose(ident[0, 2, 4], [(2 * 4 + 1) / 512 - 1, (2 * 2 + 1) / 512 - 1], atol=1e-7)
    _, crop, _ = scene()
    grid = grid_for(crop.M_c2o, (40, 60), origin=(200, 90))
    u = ((grid[0].astype(np.float64) + 1) * 512 - 1) / 2  # back to crop pixels
    back = u @ crop.M_c2o[:2, :2].T.astype(np.float64) + crop.M_c2o[:2, 2]
    yy, xx = np.mgrid[90:130, 200:260]
    np.testing.assert_allclose(back, np.stack([xx, yy], axis=2), atol=2e-3)
    full = grid_for(crop.M_c2o, (200, 300))
    assert np.array_equal(full[:, 90:130, 200:260], grid)  # a window of the frame's grid, bit for bit


def test_graph_paster_equals_full_frame_graph(session: ort.InferenceSession, runner: GraphRunner) -> None:
    image, crop, mask = scene((641, 537))
    x = np.concatenate([animated(crop, 3), animated(crop, 4)])
    paster = GraphPaster(runner, crop.M_c2o, mask, image)
    assert paster.roi is not None and (paster.roi[2] - paster.roi[0]) < image.shape[1]  # only the footprint
    frames, crops = paster.paste_with_crops(x)
    full, full_crops = run_graph(session, x, crop.M_c2o, mask, image)
    assert np.array_equal(frames, full) and np.array_equal(crops, full_crops)
    assert np.array_equal(paster.paste(x[:1])[0], full[0])
    # another face pasted over already animated frames (base = N frames) and over one frame
    again = paster.paste(x[::-1], base=frames)
    want, _ = run_graph(session, x[::-1], crop.M_c2o, mask, frames)
    assert np.array_equal(again, want)
    with pytest.raises(ValueError, match="base must be"):
        paster.paste(x, base=image[:100])


def test_graph_paster_crop_outside_frame_and_bad_mask(runner: GraphRunner) -> None:
    image, crop, mask = scene()
    far = crop.M_c2o.copy()
    far[:2, 2] += 5000  # the crop lands far outside the frame
    paster = GraphPaster(runner, far, prepare_paste_back(None, far, (512, 512)), image)
    x = animated(crop)
    frames, crops = paster.paste_with_crops(x)
    assert paster.roi is None and np.array_equal(frames[0], image)
    assert np.array_equal(crops, to_uint8_images(x))
    with pytest.raises(ValueError, match="dsize"):
        GraphPaster(runner, crop.M_c2o, mask[:-1], image)


def test_export_writes_a_verified_manifest_entry(tmp_path: Path) -> None:
    entry = export_paste_back(tmp_path)
    path = tmp_path / "paste_back.onnx"
    assert entry.file == path.name and entry.sha256 == sha256_file(path) and entry.bytes == path.stat().st_size
    assert entry.graph == "paste_back" and entry.precision == "fp32" and entry.grid_sample == "4d"
    assert entry.opset == 20
    assert [(t.name, t.dtype) for t in entry.inputs] == [("crop", "float32"), ("grid", "float32"),
                                                          ("mask", "float32"), ("frame", "uint8")]
    assert [t.shape for t in entry.outputs] == [("N", "H", "W", 3), ("N", 512, 512, 3)]
    assert entry.parity["max_abs_levels_vs_numpy"] <= 2 and entry.parity["crop_max_abs_levels"] == 0
    Manifest(models={entry.key: entry}).write(tmp_path)
    assert read_manifest(tmp_path).models["paste_back"] == entry
    verify_models(tmp_path, ["paste_back"])


def test_paste_runner_only_on_cuda() -> None:
    manifest = SimpleNamespace(models={"paste_back": object()})
    assert load_paste_runner(SimpleNamespace(device="cpu", manifest=manifest)) is None
    assert load_paste_runner(SimpleNamespace(device="cuda", manifest=SimpleNamespace(models={}))) is None


def test_animator_gpu_path_gives_the_numpy_frames(runner: GraphRunner) -> None:
    """The pipeline hook (forced onto the CPU graph) renders two faces like the numpy paste-back does."""
    image, k = astronaut((900, 537))
    faces, outputs = [], {}
    for i, center in enumerate([(225.0, 112.0), (520.0, 300.0)]):
        crop = crop_face(image, face_landmarks(k, theta=0.1 * (i + 1), center=center))
        mask = prepare_paste_back(None, crop.M_c2o, (image.shape[1], image.shape[0]))
        feature = SimpleNamespace(index=i)
        faces.append(SourceFace(image_256=crop.img_crop_256, info=None, feature=feature, crop=crop, mask=mask))
        outputs[i] = np.concatenate([animated(crop, 10 + i), animated(crop, 20 + i), animated(crop, 30 + i)])

    animator = Animator(SimpleNamespace())
    animator.composer = lambda face, options, driving_is_video: SimpleNamespace(
        x_s=None, compose=lambda info, eye, lip: np.zeros((len(info), 21, 3), np.float32))
    animator.stages.warp_decode = lambda feature, x_s, x_d: to_uint8_images(outputs[feature.index])
    animator.stages.warp_decode_on_device = lambda feature, x_s, x_d: outputs[feature.index]
    motions = [DrivingMotion(info=[0, 1, 2])]
    options = AnimationOptions()

    animator.stages.paste_runner = lambda: None  # what a CPU ModelSet gives: the numpy path
    numpy_frames = list(animator.image_to_video(faces, image, motions, options))
    animator.stages.paste_runner = lambda: runner
    graph_frames = list(animator.image_to_video(faces, image, motions, options))

    assert len(graph_frames) == len(numpy_frames) == 3
    for g, n in zip(graph_frames, numpy_frames, strict=True):
        assert np.array_equal(g.crop, n.crop) and g.source_crop is n.source_crop
        diff = np.abs(g.frame.astype(np.int16) - n.frame.astype(np.int16))
        assert g.frame.shape == image.shape and diff.mean() < 0.5 and diff.max() <= 2
    assert not np.array_equal(graph_frames[0].frame, graph_frames[1].frame)
