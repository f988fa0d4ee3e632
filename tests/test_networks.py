"""Our networks against the official checkpoint layout and against the formulas they must implement."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from export.fixtures import random_network
from export.networks import NETWORKS, WarpingNetwork, fold_spectral_norm, set_grid_sampler
from export.networks.blocks import GridSample3d, kp2gaussian, make_coordinate_grid
from export.networks.convnextv2 import GRN, ChannelsFirstLayerNorm
from export.networks.dense_motion import DenseMotionNetwork

OFFICIAL = json.loads((Path(__file__).parent / "assets" / "official_state_dict_keys.json").read_text())
OFFICIAL_NAME = {
    "stitching": "stitching_retargeting_module.stitching",
    "lip": "stitching_retargeting_module.lip",
    "eye": "stitching_retargeting_module.eye",
}
# parameter counts quoted for the official release (millions for the four base models)
EXPECTED_PARAMS = {
    "appearance_feature_extractor": 0.84e6,
    "motion_extractor": 28.12e6,
    "warping_module": 45.53e6,
    "spade_generator": 55.37e6,
    "stitching": 45_249,
    "lip": 37_311,
    "eye": 144_703,
}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_state_dict_matches_official_keys_and_shapes(name: str) -> None:
    ref = OFFICIAL[OFFICIAL_NAME.get(name, name)]
    ours = NETWORKS[name].factory().state_dict()
    for key, shape in ref["keys"].items():
        assert key in ours, f"{name}: official key {key} missing"
        assert list(ours[key].shape) == shape, f"{name}: {key} is {list(ours[key].shape)}, official {shape}"
    extra = sorted(set(ours) - set(ref["keys"]))
    assert not extra, f"{name}: keys the official checkpoint lacks: {extra}"
    assert len(ours) == ref["num_tensors"]


@pytest.mark.parametrize("name", list(NETWORKS))
def test_parameter_counts(name: str) -> None:
    count = sum(p.numel() for p in NETWORKS[name].factory().parameters())
    ref = OFFICIAL[OFFICIAL_NAME.get(name, name)]["num_params"]
    assert count == ref
    expected = EXPECTED_PARAMS[name]
    if isinstance(expected, float):  # quoted in millions, two decimals
        assert round(count / 1e6, 2) == expected / 1e6
    else:
        assert count == expected


def test_make_coordinate_grid_corners_and_axis_order() -> None:
    grid = make_coordinate_grid((4, 5, 6), torch.zeros(1))
    assert grid.shape == (4, 5, 6, 3)
    assert grid[0, 0, 0].tolist() == [-1.0, -1.0, -1.0]
    assert grid[-1, -1, -1].tolist() == [1.0, 1.0, 1.0]
    assert grid[0, 0, -1].tolist() == [1.0, -1.0, -1.0]  # x runs along width
    assert grid[0, -1, 0].tolist() == [-1.0, 1.0, -1.0]  # y along height
    assert grid[-1, 0, 0].tolist() == [-1.0, -1.0, 1.0]  # z along depth
    assert torch.allclose(grid[0, 0, 1], torch.tensor([2 / 5 - 1, -1.0, -1.0]))


def test_kp2gaussian_peak_and_falloff() -> None:
    size = (5, 9, 9)
    grid = make_coordinate_grid(size, torch.zeros(1))
    kp = torch.stack([grid[2, 4, 4], grid[1, 0, 8]]).view(1, 2, 3)  # on grid nodes
    heat = kp2gaussian(kp, size, 0.01)
    assert heat.shape == (1, 2, 5, 9, 9)
    assert heat[0, 0, 2, 4, 4].item() == pytest.approx(1.0, abs=1e-7)
    assert heat[0, 1, 1, 0, 8].item() == pytest.approx(1.0, abs=1e-7)
    step = 2 / 8  # neighbour along x
    assert heat[0, 0, 2, 4, 5].item() == pytest.approx(math.exp(-0.5 * step**2 / 0.01), rel=1e-5)
    assert heat.max().item() <= 1.0


def test_grid_sample3d_uses_voxel_centres_and_zero_padding() -> None:
    vol = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 1, 2, 3, 4)
    # align_corners=False: voxel i of n sits at (2i + 1) / n - 1
    point = torch.tensor([(2 * 1 + 1) / 4 - 1, (2 * 2 + 1) / 3 - 1, (2 * 0 + 1) / 2 - 1])
    outside = torch.tensor([3.0, 0.0, 0.0])
    grid = torch.stack([point, outside]).view(1, 1, 1, 2, 3)
    out = GridSample3d()(vol, grid)
    assert out[0, 0, 0, 0, 0].item() == pytest.approx(vol[0, 0, 0, 2, 1].item(), abs=1e-5)
    assert out[0, 0, 0, 0, 1].item() == 0.0


def test_channels_first_layernorm_matches_layer_norm() -> None:
    torch.manual_seed(0)
    ln = ChannelsFirstLayerNorm(8)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = torch.randn(2, 8, 5, 6) * 3 + 1
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (8,), ln.weight, ln.bias, 1e-6).permute(0, 3, 1, 2)
    assert torch.allclose(ln(x), ref, atol=1e-5)


def test_grn_formula() -> None:
    torch.manual_seed(0)
    grn = GRN(4)
    with torch.no_grad():
        grn.gamma.normal_()
        grn.beta.normal_()
    x = torch.randn(1, 3, 5, 4)
    gx = x.pow(2).sum(dim=(1, 2), keepdim=True).sqrt()
    nx = gx / (gx.mean(-1, keepdim=True) + 1e-6)
    assert torch.allclose(grn(x), grn.gamma * x * nx + grn.beta + x, atol=1e-6)


def _small_warping() -> WarpingNetwork:
    return WarpingNetwork(
        dense_motion_params={"block_expansion": 4, "max_features": 16, "num_blocks": 2, "reshape_depth": 16}
    ).eval()


def test_dense_motion_is_identity_when_keypoints_do_not_move() -> None:
    torch.manual_seed(0)
    net = DenseMotionNetwork(block_expansion=4, max_features=16, num_blocks=2).eval()
    feat = torch.randn(2, 32, 16, 8, 8)
    kp = torch.rand(2, 21, 3) * 1.6 - 0.8
    with torch.no_grad():
        out = net(feat, kp, kp)
    identity = make_coordinate_grid((16, 8, 8), feat).expand(2, 16, 8, 8, 3)
    assert torch.allclose(out["deformation"], identity, atol=1e-5)
    assert torch.allclose(out["mask"].sum(1), torch.ones(2, 16, 8, 8), atol=1e-5)
    assert out["occlusion_map"].shape == (2, 1, 8, 8)
    assert 0 < out["occlusion_map"].min() and out["occlusion_map"].max() < 1


def test_set_grid_sampler_routes_both_samples() -> None:
    class Recording(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.shapes: list[tuple[int, ...]] = []

        def forward(self, input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
            self.shapes.append(tuple(input.shape))
            return F.grid_sample(input, grid, align_corners=False)

    net = _small_warping()
    feat, kp_s, kp_d = torch.randn(1, 32, 16, 8, 8), torch.rand(1, 21, 3) - 0.5, torch.rand(1, 21, 3) - 0.5
    with torch.no_grad():
        ref = net(feat, kp_d, kp_s)["out"]
        rec = Recording()
        set_grid_sampler(net, rec)
        got = net(feat, kp_d, kp_s)
    assert rec.shapes == [(22, 4, 16, 8, 8), (1, 32, 16, 8, 8)]
    assert got["out"].shape == (1, 256, 8, 8) and torch.equal(got["out"], ref)
    assert got["deformation"].shape == (1, 16, 8, 8, 3)
    with pytest.raises(ValueError, match="parameters"):
        set_grid_sampler(net, nn.Linear(2, 2))


def test_motion_and_appearance_output_shapes() -> None:
    img = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        m = NETWORKS["motion_extractor"].factory().eval()(img)
        f = NETWORKS["appearance_feature_extractor"].factory().eval()(img)
    shapes = {k: tuple(v.shape) for k, v in m.items()}
    assert shapes == {
        "pitch": (1, 66),
        "yaw": (1, 66),
        "roll": (1, 66),
        "t": (1, 3),
        "exp": (1, 63),
        "scale": (1, 1),
        "kp": (1, 63),
    }
    assert f.shape == (1, 32, 16, 64, 64)


def test_stitching_mlps_shapes() -> None:
    for name, (cin, cout) in {"stitching": (126, 65), "lip": (65, 63), "eye": (66, 63)}.items():
        assert NETWORKS[name].factory()(torch.zeros(3, cin)).shape == (3, cout)


def test_fold_spectral_norm_keeps_decoder_output() -> None:
    decoder = random_network("spade_generator", seed=1)
    feat = torch.randn(1, 256, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = decoder(feat)
        fold_spectral_norm(decoder)
        after = decoder(feat)
    assert before.shape == (1, 3, 64, 64)
    assert (after - before).abs().max().item() < 1e-5
    keys = decoder.state_dict()
    assert "G_middle_0.conv_0.weight" in keys and not any("weight_orig" in k for k in keys)
    fold_spectral_norm(decoder)  # idempotent
