"""GridSample3dVia2d: numerics vs torch's 5-D grid_sample and the shape of its ONNX export."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from export.gridsample4d import GridSample3dVia2d, atlas_layout

TOL_OF_SCALE = 1e-4  # max-abs error allowed, relative to the largest |output|


def realistic_grid(n: int, d: int, h: int, w: int, seed: int = 0, spread: float = 0.1) -> torch.Tensor:
    """Identity grid stretched by 10 % plus random offsets, so some points fall outside the volume."""
    gen = torch.Generator().manual_seed(seed)
    z, y, x = torch.meshgrid(
        torch.linspace(-1, 1, d), torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij"
    )
    base = torch.stack([x, y, z], dim=-1).expand(n, d, h, w, 3)
    return base * 1.1 + spread * torch.randn(n, d, h, w, 3, generator=gen)


def reference(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """The op being replaced: trilinear, zeros padding, align_corners=False."""
    return F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def export_module(path: Path, channels: int, batch: int = 1, dims: tuple[int, int, int] = (16, 64, 64)) -> Path:
    """Export GridSample3dVia2d (batch-dynamic, opset 20, legacy exporter) to ``path``."""
    d, h, w = dims
    args = (torch.randn(batch, channels, d, h, w), realistic_grid(batch, d, h, w))
    _export(GridSample3dVia2d(), args, path)
    return path


def export_native(path: Path, channels: int, dims: tuple[int, int, int] = (16, 64, 64)) -> Path:
    """Export the native 5-D F.grid_sample (the graph CoreML/OpenVINO cannot take) to ``path``."""

    class Native(torch.nn.Module):
        def forward(self, volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
            return reference(volume, grid)

    d, h, w = dims
    _export(Native(), (torch.randn(1, channels, d, h, w), realistic_grid(1, d, h, w)), path)
    return path


def _export(module: torch.nn.Module, args: tuple[torch.Tensor, ...], path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            opset_version=20,
            dynamo=False,
            input_names=["input", "grid"],
            output_names=["output"],
            dynamic_axes={"input": {0: "N"}, "grid": {0: "N"}, "output": {0: "N"}},
        )


def grid_sample_input_ranks(model: onnx.ModelProto) -> list[int]:
    """Rank of the data input of every GridSample node, from ONNX shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {
        vi.name: len(vi.type.tensor_type.shape.dim)
        for vi in [*inferred.graph.input, *inferred.graph.value_info]
        if vi.type.tensor_type.HasField("shape")
    }
    return [ranks.get(n.input[0], -1) for n in inferred.graph.node if n.op_type == "GridSample"]


def test_atlas_layout_is_near_square() -> None:
    assert atlas_layout(16) == (4, 4)
    assert atlas_layout(5) == (2, 3)
    assert atlas_layout(1) == (1, 1)
    with pytest.raises(ValueError, match="depth"):
        atlas_layout(0)


@pytest.mark.parametrize(
    ("batch", "channels"),
    [(1, 32), (2, 32), (22, 4), (44, 4)],
    ids=["warping-n1", "warping-n2", "dense-motion-n1", "dense-motion-n2"],
)
def test_matches_trilinear_grid_sample_at_liveportrait_shapes(batch: int, channels: int) -> None:
    torch.manual_seed(batch * 100 + channels)
    volume = torch.randn(batch, channels, 16, 64, 64)
    grid = realistic_grid(batch, 16, 64, 64, seed=batch)
    assert (grid.abs() > 1).any(), "the test grid must reach outside the volume"
    expected = reference(volume, grid)
    got = GridSample3dVia2d()(volume, grid)
    assert got.shape == expected.shape
    scale = expected.abs().max().item()
    assert (got - expected).abs().max().item() <= TOL_OF_SCALE * scale


def test_exact_voxel_centres_far_points_and_spare_tiles() -> None:
    # D=5 leaves a spare tile in the 2 x 3 atlas; voxel centres put z exactly on integers (rounding ties).
    torch.manual_seed(3)
    volume = torch.randn(2, 3, 5, 7, 9)
    d, h, w = 5, 7, 9
    zi, yi, xi = torch.meshgrid(torch.arange(d), torch.arange(h), torch.arange(w), indexing="ij")
    centres = torch.stack([(2 * xi + 1) / w - 1, (2 * yi + 1) / h - 1, (2 * zi + 1) / d - 1], dim=-1).float()
    np.testing.assert_allclose(
        GridSample3dVia2d()(volume, centres.expand(2, d, h, w, 3)).numpy(), volume.numpy(), atol=1e-5
    )
    far = torch.rand(2, 4, 6, 8, 3, generator=torch.Generator().manual_seed(1)) * 6 - 3  # many far outside
    torch.testing.assert_close(GridSample3dVia2d()(volume, far), reference(volume, far), atol=1e-5, rtol=0)


def test_half_precision_input_keeps_dtype_and_accuracy() -> None:
    torch.manual_seed(4)
    volume = torch.randn(1, 4, 8, 16, 16)
    grid = realistic_grid(1, 8, 16, 16)
    got = GridSample3dVia2d()(volume.half(), grid.half())
    assert got.dtype == torch.float16
    expected = reference(volume.half().float(), grid.half().float())
    assert (got.float() - expected).abs().max().item() < 5e-3 * expected.abs().max().item()


def test_rejects_non_volumetric_inputs_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="N x C x D x H x W"):
        GridSample3dVia2d()(torch.zeros(1, 2, 8, 8), torch.zeros(1, 8, 8, 2))
    with pytest.raises(ValueError, match="x 3"):
        GridSample3dVia2d()(torch.zeros(1, 2, 4, 8, 8), torch.zeros(1, 4, 8, 8, 2))


def test_module_has_no_parameters() -> None:
    assert list(GridSample3dVia2d().parameters()) == []


def test_onnx_export_has_only_4d_grid_sample_and_matches_torch_on_ort(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    path = export_module(tmp_path / "gs4d.onnx", channels=32)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert grid_sample_input_ranks(model) == [4]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"

    native = export_native(tmp_path / "gs5d.onnx", channels=4)
    assert grid_sample_input_ranks(onnx.load(str(native))) == [5]  # the inspection can see a 5-D one

    torch.manual_seed(5)
    volume = torch.randn(2, 32, 16, 64, 64)  # batch 2 through a graph traced at batch 1
    grid = realistic_grid(2, 16, 64, 64, seed=7)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": volume.numpy(), "grid": grid.numpy()})
    expected = reference(volume, grid).numpy()
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= TOL_OF_SCALE * np.abs(expected).max()
