"""make_coreml_friendly: each rewritten block equals the original op, and the rewritten graphs are 100 % CoreML."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from export.coreml_friendly import (
    ChannelAffine3d,
    DepthFoldedAvgPool,
    DepthFoldedUpsample,
    DepthTapConv3d,
    fold_batchnorm,
    make_coreml_friendly,
)
from export.graphs import GRAPH_SPECS, WarpingSpadeGraph
from export.gridsample4d import GridSample3dVia2d
from export.networks.blocks import ResBlock3d, UpBlock3d
from export.networks.convnextv2 import ConvNeXtBlock
from export.networks.spade import SPADEDecoder, fold_spectral_norm
from export.networks.warping import WarpingNetwork, set_grid_sampler
from export.onnx_export import cpu_session, probe_images, simplify, trace
from runtime.coreml_check import check_coreml_compat, format_report

TOL = 1e-5  # max-abs relative to the output scale: only summation order differs


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got - ref).abs().max()) / max(float(ref.abs().max()), 1e-12)


def randomise_norms(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial batch-norm statistics so that folding mistakes show (defaults are an identity map)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(1 + 0.2 * torch.randn(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
    return module.eval()


def to_onnx(module: nn.Module, args: tuple[torch.Tensor, ...], names_in: list[str], names_out: list[str]):
    """Trace at opset 20 with a dynamic batch and simplify, as the exporter does."""
    from export.graphs import GraphSpec

    spec = GraphSpec("test", (), tuple((n, ()) for n in names_in), tuple((n, ()) for n in names_out))
    return simplify(trace(module, spec, args))


# ------------------------------------------------------------------ single ops


@pytest.mark.parametrize(
    ("kernel", "padding"),
    [
        ((3, 3, 3), (1, 1, 1)),  # hourglass / ResBlock3d
        ((7, 7, 7), (3, 3, 3)),  # dense-motion mask
        ((1, 1, 1), (0, 0, 0)),  # compress
        ((3, 1, 1), (0, 0, 0)),  # depth shrinks
        ((3, 5, 3), (2, 0, 1)),  # depth grows, height shrinks
    ],
)
def test_depth_tap_conv_matches_conv3d(kernel: tuple[int, int, int], padding: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    conv = nn.Conv3d(5, 6, kernel, padding=padding).eval()
    x = torch.randn(2, 5, 8, 9, 10)
    with torch.no_grad():
        ref, got = conv(x), DepthTapConv3d(conv)(x)
    assert got.shape == ref.shape
    assert rel_err(got, ref) < TOL


@pytest.mark.parametrize(("kernel", "padding"), [((3, 3, 3), (1, 1, 1)), ((1, 1, 1), (0, 0, 0))])
def test_depth_tap_conv_upsamples_the_slices_it_convolves(kernel: tuple[int, int, int],
                                                          padding: tuple[int, int, int]) -> None:
    """conv(x, upsample=2) is the Conv3d of the (1, 2, 2) nearest upsampling, for 3x3x3 and 1x1x1 (bias once)."""
    torch.manual_seed(2)
    conv = nn.Conv3d(5, 6, kernel, padding=padding).eval()
    x = torch.randn(2, 5, 4, 6, 7)
    with torch.no_grad():
        ref = conv(F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest"))
        got = DepthTapConv3d(conv)(x, upsample=2)
    assert got.shape == ref.shape
    assert rel_err(got, ref) < TOL


def test_up_block_graph_feeds_its_resize_straight_into_the_conv() -> None:
    """The rewritten UpBlock3d upsamples the depth slices right before the 2-D conv, the form the polyphase pass
    rewrites (export/polyphase.py), with the original block's numbers."""
    torch.manual_seed(3)
    block = randomise_norms(UpBlock3d(6, 4), seed=4)
    x = torch.randn(1, 6, 3, 5, 5)
    friendly = make_coreml_friendly(block)
    with torch.no_grad():
        assert rel_err(friendly(x), block(x)) < TOL
    model = to_onnx(friendly, (x,), ["x"], ["y"])
    producer = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 1 and producer[convs[0].input[0]].op_type == "Resize"


def test_depth_tap_conv_refuses_strided_conv() -> None:
    with pytest.raises(ValueError, match="stride"):
        DepthTapConv3d(nn.Conv3d(2, 2, 3, stride=2, padding=1))


def test_batchnorm_folding_and_affine() -> None:
    torch.manual_seed(1)
    conv = nn.Conv3d(3, 4, 3, padding=1)
    bn = randomise_norms(nn.BatchNorm3d(4), seed=3)
    x = torch.randn(2, 3, 4, 6, 6)
    with torch.no_grad():
        ref = bn(conv.eval()(x))
        assert rel_err(fold_batchnorm(conv, bn)(x), ref) < TOL
        y = torch.randn(2, 4, 3, 5, 5)
        assert rel_err(ChannelAffine3d(bn)(y), bn(y)) < TOL
    with pytest.raises(ValueError, match="4-channel batch norm into a 5-channel conv"):
        fold_batchnorm(nn.Conv3d(3, 5, 1), bn)


def test_pool_and_upsample_are_exact_per_slice() -> None:
    x = torch.randn(2, 3, 4, 8, 6)
    assert torch.equal(DepthFoldedAvgPool(nn.AvgPool3d((1, 2, 2)))(x), F.avg_pool3d(x, (1, 2, 2)))
    assert torch.equal(DepthFoldedUpsample(2)(x), F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest"))
    with pytest.raises(ValueError, match="keep depth"):
        DepthFoldedAvgPool(nn.AvgPool3d(2))


def test_pixel_shuffle_is_exact() -> None:
    x = torch.randn(2, 12, 5, 7)
    rewritten = make_coreml_friendly(nn.Sequential(nn.PixelShuffle(2)).eval())
    assert torch.equal(rewritten(x), F.pixel_shuffle(x, 2))


def test_copy_leaves_original_untouched_and_needs_eval() -> None:
    block = randomise_norms(ResBlock3d(4))
    before = {k: v.clone() for k, v in block.state_dict().items()}
    rewritten = make_coreml_friendly(block)
    assert not any(isinstance(m, nn.Conv3d | nn.BatchNorm3d) for m in rewritten.modules())
    assert all(torch.equal(before[k], v) for k, v in block.state_dict().items())
    with pytest.raises(ValueError, match="eval"):
        make_coreml_friendly(ResBlock3d(4).train())


# ------------------------------------------------------------------ blocks exported and checked


def test_resblock3d_graph_is_one_coreml_partition() -> None:
    block = randomise_norms(ResBlock3d(4), seed=5)
    x = torch.randn(1, 4, 4, 8, 8)
    original = check_coreml_compat(to_onnx(block, (x,), ["x"], ["y"]))
    assert not original.fully_supported  # 5-D Conv and BatchNormalization
    model = to_onnx(make_coreml_friendly(block), (x,), ["x"], ["y"])
    report = check_coreml_compat(model)
    assert report.fully_supported, format_report(report)
    x2 = torch.randn(3, 4, 4, 8, 8)
    got = cpu_session(model).run(None, {"x": x2.numpy()})[0]
    with torch.no_grad():
        assert rel_err(torch.from_numpy(got), block(x2)) < 1e-5


def test_convnext_block_graph_has_no_reduce_l2() -> None:
    torch.manual_seed(2)
    block = ConvNeXtBlock(8).eval()
    with torch.no_grad():
        block.grn.gamma.normal_(0, 0.5)
        block.grn.beta.normal_(0, 0.1)
    x = torch.randn(1, 8, 8, 8)
    assert not check_coreml_compat(to_onnx(block, (x,), ["x"], ["y"])).fully_supported  # ReduceL2
    rewritten = make_coreml_friendly(block)
    model = to_onnx(rewritten, (x,), ["x"], ["y"])
    report = check_coreml_compat(model)
    assert report.fully_supported, format_report(report)
    gelus = [n for n in model.graph.node if n.op_type == "Gelu"]  # opset 20: one Gelu op, exact (erf) form kept
    assert gelus and all(onnx.helper.get_node_attr_value(n, "approximate") in (b"none", "none") for n in gelus)
    x2 = torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        assert rel_err(rewritten(x2), block(x2)) < TOL


# ------------------------------------------------------------------ whole networks


def small_warping_spade(seed: int = 0) -> WarpingSpadeGraph:
    """The real WarpingNetwork + SPADEDecoder code at toy widths (feature N x 4 x 4 x 16 x 16 → image 64 x 64)."""
    torch.manual_seed(seed)
    warping = WarpingNetwork(
        block_expansion=4, max_features=16, reshape_channel=4,
        dense_motion_params={"block_expansion": 4, "max_features": 32, "num_blocks": 3, "reshape_depth": 4,
                             "compress": 2},
    )  # fmt: skip
    decoder = SPADEDecoder(max_features=32, block_expansion=4, out_channels=8)
    fold_spectral_norm(decoder.eval())
    return randomise_norms(WarpingSpadeGraph(warping, decoder), seed)


def small_inputs(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    feature = torch.randn(batch, 4, 4, 16, 16, generator=gen)
    kp_source = torch.rand(batch, 21, 3, generator=gen) * 1.4 - 0.7
    kp_driving = kp_source + 0.05 * torch.randn(batch, 21, 3, generator=gen)
    return feature, kp_driving, kp_source


def test_warping_spade_rewrite_matches_and_is_one_partition() -> None:
    graph = small_warping_spade()
    rewritten = make_coreml_friendly(graph)
    args = small_inputs(2, seed=4)
    with torch.no_grad():
        ref = graph(*args)
        ref_warp, got_warp = graph.warping(*args), rewritten.warping(*args)
        for key in ("deformation", "occlusion_map", "out"):  # same 5-D sampler: only the rewrite differs
            assert rel_err(got_warp[key], ref_warp[key]) < TOL, key
        # The toy SPADE decoder (default init, instance norms on 8x8 maps) amplifies fp32 rounding ~50x; in float64
        # the rewrite is exact up to the fp32 storage of the folded weights.
        assert rel_err(rewritten(*args), ref) < 1e-4
        args64 = tuple(a.double() for a in args)
        assert rel_err(rewritten.double()(*args64), graph.double()(*args64)) < 1e-6
        rewritten.float(), graph.float()
        set_grid_sampler(rewritten.warping, GridSample3dVia2d())
        assert rel_err(rewritten(*args), ref) < 1e-3  # + the 4-D sampler: the exporter's GS4D_TOL

    spec = GRAPH_SPECS["warping_spade"]
    names_in, names_out = [n for n, _ in spec.inputs], [n for n, _ in spec.outputs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = to_onnx(rewritten, small_inputs(1, seed=5), names_in, names_out)
    onnx.checker.check_model(model)
    report = check_coreml_compat(model)
    assert report.fully_supported, format_report(report)
    ranks = {len(v.type.tensor_type.shape.dim) for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    assert max(ranks) <= 5
    got = cpu_session(model).run(None, {n: a.numpy() for n, a in zip(names_in, args, strict=True)})[0]
    assert rel_err(torch.from_numpy(got), ref) < 1e-4


def test_full_size_appearance_and_motion_rewrites_match() -> None:
    """Real widths, fixture-style weights: the rewrite changes rounding only (1e-5 of the output scale)."""
    from export.fixtures import random_network
    from export.graphs import AppearanceGraph, MotionGraph

    images = torch.from_numpy(probe_images(1, seed=3))
    for graph in (AppearanceGraph(random_network("appearance_feature_extractor", 0)),
                  MotionGraph(random_network("motion_extractor", 0))):  # fmt: skip
        graph.eval()
        rewritten = make_coreml_friendly(graph)
        with torch.no_grad():
            ref, got = graph(images), rewritten(images)
        ref = ref if isinstance(ref, tuple) else (ref,)
        got = got if isinstance(got, tuple) else (got,)
        scale = max(float(r.abs().max()) for r in ref)
        err = max(float((g - r).abs().max()) for g, r in zip(got, ref, strict=True))
        assert np.isfinite(err) and err / scale < TOL, (type(graph).__name__, err, scale)
