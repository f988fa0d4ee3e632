"""SPADE folds for the CPU graph: the same numbers as SPADE and the learned shortcut, checked in float64."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import spectral_norm

from export.coreml_friendly import make_coreml_friendly
from export.networks.spade import SPADE, SPADEDecoder, fold_spectral_norm
from export.spade_fold import FoldedShortcut, FoldedSPADE, fold_spade
from export.winograd import output_form_for
from runtime.cpu_route import cpu_flags
from runtime.manifest import read_manifest


def _randomised(module: nn.Module, seed: int) -> nn.Module:
    """Float64 copy with every parameter redrawn (biases far from 0, so a lost `1 +` or bias shows)."""
    gen = torch.Generator().manual_seed(seed)
    module = module.double().eval()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) / max(p[0].numel(), 1) ** 0.5)
    return module


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max()) / float(want.abs().max())


@pytest.mark.parametrize("seed", [0, 1])
def test_folded_spade_equals_spade(seed: int) -> None:
    spade = _randomised(SPADE(24, 16), seed)
    gen = torch.Generator().manual_seed(10 + seed)
    x = torch.randn(2, 24, 16, 16, generator=gen, dtype=torch.float64)
    seg = torch.randn(2, 16, 8, 8, generator=gen, dtype=torch.float64)
    folded = FoldedSPADE(spade)
    with torch.no_grad():
        want, got = spade(x, seg), folded(x, seg)
        assert torch.equal(folded.mlp_gamma.bias, spade.mlp_gamma.bias + 1)
    assert _rel(got, want) <= 1e-12


@pytest.mark.parametrize("seed", [0, 1])
def test_folded_shortcut_equals_conv_s_after_spade(seed: int) -> None:
    """β_s through the 1×1 conv_s: one conv of the hidden map to conv_s's (fewer) outputs, same result."""
    spade = _randomised(SPADE(32, 16), seed)
    conv_s = _randomised(nn.Conv2d(32, 8, kernel_size=1, bias=False), seed + 5)
    gen = torch.Generator().manual_seed(20 + seed)
    x = torch.randn(1, 32, 16, 16, generator=gen, dtype=torch.float64)
    seg = torch.randn(1, 16, 4, 4, generator=gen, dtype=torch.float64)  # ×4 nearest, like up_1's
    folded = FoldedShortcut(spade, conv_s)
    assert folded.mlp_beta.out_channels == 8  # instead of SPADE's 32
    with torch.no_grad():
        want, got = conv_s(spade(x, seg)), folded(x, seg)
    assert _rel(got, want) <= 1e-12


def test_shortcut_fold_refuses_what_it_cannot_fold() -> None:
    spade = SPADE(16, 8)
    with pytest.raises(ValueError, match="fold the spectral norm first"):
        FoldedShortcut(spade, spectral_norm(nn.Conv2d(16, 8, kernel_size=1, bias=False)))
    with pytest.raises(ValueError, match="1×1 conv_s without bias"):
        FoldedShortcut(spade, nn.Conv2d(16, 8, kernel_size=1, bias=True))
    with pytest.raises(ValueError, match="1×1 conv_s without bias"):
        FoldedShortcut(spade, nn.Conv2d(16, 8, kernel_size=3, padding=1, bias=False))


@pytest.mark.parametrize("coreml_form", [False, True])
def test_fold_spade_keeps_the_decoder_output(coreml_form: bool) -> None:
    """All 8 blocks: 24 SPADEs folded, the 2 learned shortcuts (up_0, up_1) through their conv_s."""
    decoder = SPADEDecoder(max_features=32, block_expansion=4, out_channels=8)
    fold_spectral_norm(decoder)
    decoder = _randomised(decoder, 3)
    if coreml_form:
        decoder = make_coreml_friendly(decoder)
    feature = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():
        want = decoder(feature)
        assert fold_spade(decoder) == 2
        got = decoder(feature)
    folded = [m for m in decoder.modules() if isinstance(m, FoldedSPADE | FoldedShortcut)]
    assert len(folded) == 8 * 2 + 2 * 1 and sum(isinstance(m, FoldedShortcut) for m in folded) == 2
    assert isinstance(decoder.up_1.conv_s, nn.Identity)
    assert _rel(got, want) <= 1e-12


def test_exported_cpu_graph_folds_both_shortcuts(models_with_variants: Path) -> None:
    """The exported CPU graph has both learned shortcuts folded, as many Winograd convolutions as the output form's
    channel bar admits (ConvTranspose form, bar 128: 64, up_1's γ/β pairs pass the per-input rule; DepthToSpace
    form, bar 192: 60, up_1's norm_1 and norm_s pairs stay direct) and stays within 1e-4 of scale of native."""
    entry = read_manifest(models_with_variants).models["warping_spade.wino"]
    assert entry.parity["spade_shortcuts_folded"] == 2
    depth_to_space = output_form_for(cpu_flags()) == "depth_to_space"  # the export ran on this CPU
    assert entry.parity["winograd_depth_to_space"] == float(depth_to_space)
    assert entry.parity["winograd_convs"] == (60 if depth_to_space else 64)
    assert entry.parity["max_abs_vs_native"] <= 1e-4 * entry.parity["output_scale"]
