"""3×3×3 convolutions by Winograd F(2, 3) / F(4, 3) along depth: the 3-D convolution at fp32 accuracy, in torch and
as an exported ONNX graph, for every eligible hourglass convolution and no other."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from export.coreml_friendly import DepthTapConv3d, make_coreml_friendly
from export.depth_winograd import (
    DepthWinogradConv3d,
    depth_winograd_kernels,
    depth_winograd_matrices,
    use_depth_winograd,
)
from export.networks.blocks import Hourglass
from export.onnx_export import cpu_session
from runtime.manifest import read_manifest


def _conv(seed: int, c: int, o: int, kernel: tuple[int, int, int], padding: tuple[int, int, int]) -> nn.Conv3d:
    torch.manual_seed(seed)
    return nn.Conv3d(c, o, kernel, padding=padding).eval()


def _onnx(module: nn.Module, x: torch.Tensor) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), buffer, opset_version=20, dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return onnx.load_from_string(buffer.getvalue())


@pytest.mark.parametrize("tile", [2, 4])
def test_matrices_compute_a_3_tap_correlation_exactly(tile: int) -> None:
    """Aᵀ·[(G·g) ⊙ (Bᵀ·d)] is the `tile`-output correlation of a (tile + 2)-sample window with a 3-tap kernel."""
    bt, g, at = depth_winograd_matrices(tile)
    rng = np.random.default_rng(tile)
    d, w = rng.standard_normal(tile + 2), rng.standard_normal(3)
    u = depth_winograd_kernels(w.reshape(1, 1, 3, 1, 1), g).reshape(tile + 2)
    np.testing.assert_allclose(at @ (u * (bt @ d)), [d[i : i + 3] @ w for i in range(tile)], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="tiles 2 and 4, not 3"):
        depth_winograd_matrices(3)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("kernel", "padding", "depth", "tile"), [
    ((3, 3, 3), (1, 1, 1), 16, 2),  # the hourglass form
    ((3, 3, 3), (1, 1, 1), 2, 2),  # one window
    ((3, 1, 3), (1, 0, 1), 6, 2),  # other spatial kernels stay direct in H and W
    ((3, 3, 3), (1, 1, 1), 16, 4),
    ((3, 3, 3), (1, 1, 1), 4, 4),
])
def test_module_and_graph_match_the_3d_convolution(seed: int, kernel: tuple[int, int, int],
                                                    padding: tuple[int, int, int], depth: int, tile: int) -> None:
    conv = _conv(seed, 6, 5, kernel, padding)
    winograd = DepthWinogradConv3d(DepthTapConv3d(conv), tile).eval()
    x = torch.randn(2, 6, depth, 9, 11, generator=torch.Generator().manual_seed(10 + seed))
    with torch.no_grad():
        want = F.conv3d(x.double(), conv.weight.double(), conv.bias.double(), padding=padding)
        got = winograd(x).double()
    scale = float(want.abs().max())
    assert got.shape == want.shape
    assert float((got - want).abs().max()) <= 2e-6 * scale
    # exported: against the native Conv3d graph, at batch 1 and 2
    native, rewritten = cpu_session(_onnx(conv, x)), cpu_session(_onnx(winograd, x))
    for batch in (1, 2):
        feed = {"x": x[:batch].numpy()}
        a, b = native.run(None, feed)[0], rewritten.run(None, feed)[0]
        assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()


def test_ineligible_convolutions_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="3 depth taps with padding 1; got 5 taps"):
        DepthWinogradConv3d(DepthTapConv3d(_conv(0, 4, 4, (5, 3, 3), (2, 1, 1))))
    with pytest.raises(ValueError, match="padding 0"):
        DepthWinogradConv3d(DepthTapConv3d(_conv(0, 4, 4, (3, 3, 3), (0, 1, 1))))
    tap = DepthTapConv3d(_conv(0, 4, 4, (3, 3, 3), (1, 1, 1)))
    with pytest.raises(ValueError, match="multiple of 2 slices, got 5"):
        DepthWinogradConv3d(tap)(torch.zeros(1, 4, 5, 8, 8))
    with pytest.raises(ValueError, match="multiple of 4 slices, got 6"):
        DepthWinogradConv3d(tap, 4)(torch.zeros(1, 4, 6, 8, 8))


def test_hourglass_swaps_its_down_blocks_and_last_conv_and_keeps_its_output() -> None:
    torch.manual_seed(3)
    hourglass = Hourglass(block_expansion=4, in_features=3, num_blocks=2, max_features=16).eval()
    for bn in (m for m in hourglass.modules() if isinstance(m, nn.BatchNorm3d)):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    friendly = make_coreml_friendly(hourglass)
    assert use_depth_winograd(friendly) == 3  # 2 down blocks + the decoder's conv
    assert isinstance(friendly.decoder.conv, DepthWinogradConv3d)
    assert all(isinstance(b.conv, DepthWinogradConv3d) for b in friendly.encoder.down_blocks)
    assert all(isinstance(b.conv, DepthTapConv3d) for b in friendly.decoder.up_blocks)  # polyphase's form
    x = torch.randn(2, 3, 8, 16, 16)
    with torch.no_grad():
        want, got = hourglass(x), friendly(x)
    assert float((got - want).abs().max()) <= 1e-5 * float(want.abs().max())


def test_exported_cpu_graph_runs_the_hourglass_convolutions_by_depth_winograd(models_with_variants: Path) -> None:
    """The 5 down blocks and the decoder's last conv; the graph stays within 1e-4 of the native one."""
    entry = read_manifest(models_with_variants).models["warping_spade.wino"]
    assert entry.parity["depth_winograd_convs"] == 6
    assert entry.parity["max_abs_vs_native"] <= 1e-4 * entry.parity["output_scale"]
    model = onnx.load(models_with_variants / "warping_spade.wino.onnx", load_external_data=False)
    grouped = {n.name for n in model.graph.node if n.op_type == "Conv"  # F(2, 3): 4 groups
               and any(a.name == "group" and a.i == 4 for a in n.attribute) and "/hourglass/" in n.name}
    assert len(grouped) == 6
