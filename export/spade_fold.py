"""SPADE's modulation with less work for the same numbers: `1 + γ` in γ's bias, the shortcut's β through its 1×1 conv.

Every SPADE computes IN(x)·(1 + γ(h)) + β(h), with γ and β 3×3 convolutions of the hidden map h. Two exact
rewrites for the CPU graph (`warping_spade.wino`), applied to the PyTorch decoder before tracing:

* the `1 +` goes into γ's bias, so the graph has one elementwise pass fewer per SPADE (at 256² that is a pass over
  67 MB a frame in each of up_1's norms);
* the learned shortcut of a block whose width changes is conv_s(SPADE_s(x)), conv_s a 1×1 convolution without bias,
  so it is linear and β_s can go through it: conv_s(IN(x)·(1 + γ_s)) + (conv_s ∘ β_s)(h_s), where conv_s ∘ β_s is one
  3×3 convolution from the 128 hidden channels straight to conv_s's outputs (weights W_s·W_β, bias W_s·b_β, in
  float64). up_1's β_s then computes 64 instead of 256 channels at 256² (up_0's: 256 instead of 512 at 128²), and
  the 256-channel addition of β_s disappears.

Exact in real arithmetic; in fp32 only the summation order changes.
"""

from __future__ import annotations

import torch
from torch import nn

from export.coreml_friendly import _SPADE, _nearest_to
from export.networks.spade import SPADE, SPADEDecoder

__all__ = ["FoldedSPADE", "FoldedShortcut", "fold_spade"]


def _gamma_plus_one(conv: nn.Conv2d) -> nn.Conv2d:
    """A copy of γ's convolution whose bias carries the modulation's `1 +`."""
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding)
    folded.weight = nn.Parameter(conv.weight.detach().clone())
    folded.bias = nn.Parameter(conv.bias.detach() + 1.0)
    return folded


def _plain_weight(conv: nn.Conv2d) -> torch.Tensor:
    if hasattr(conv, "weight_orig"):
        raise ValueError("fold the spectral norm first (export.networks.spade.fold_spectral_norm)")
    return conv.weight.detach()


class FoldedSPADE(nn.Module):
    """IN(x)·γ₁(h) + β(h) with γ₁ = γ + 1 (bias folded); the same output as the `SPADE` it is built from."""

    def __init__(self, spade: SPADE | _SPADE) -> None:
        super().__init__()
        self.param_free_norm = spade.param_free_norm
        self.mlp_shared = spade.mlp_shared
        self.mlp_gamma = _gamma_plus_one(spade.mlp_gamma)
        self.mlp_beta = spade.mlp_beta

    def _modulated(self, x: torch.Tensor, segmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(IN(x)·γ₁(h), h) with h the hidden map of the conditioning resized to x."""
        hidden = self.mlp_shared(_nearest_to(segmap, int(x.shape[2]), int(x.shape[3])))
        return self.param_free_norm(x) * self.mlp_gamma(hidden), hidden

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        scaled, hidden = self._modulated(x, segmap)
        return scaled + self.mlp_beta(hidden)


class FoldedShortcut(FoldedSPADE):
    """conv_s(SPADE_s(x)) as conv_s(IN(x)·γ₁(h)) + β_s'(h), β_s' = conv_s ∘ β_s: the learned shortcut's output."""

    def __init__(self, spade: SPADE | _SPADE, conv_s: nn.Conv2d) -> None:
        if conv_s.kernel_size != (1, 1) or conv_s.bias is not None:
            raise ValueError("the shortcut fold needs a 1×1 conv_s without bias")
        super().__init__(spade)
        self.conv_s = conv_s
        mix = _plain_weight(conv_s).double()[:, :, 0, 0]  # fout × fin
        beta = spade.mlp_beta
        self.mlp_beta = nn.Conv2d(beta.in_channels, conv_s.out_channels, beta.kernel_size, padding=beta.padding)
        dtype = beta.weight.dtype
        self.mlp_beta.weight = nn.Parameter(torch.einsum("of,fchw->ochw", mix, beta.weight.detach().double()).to(dtype))
        self.mlp_beta.bias = nn.Parameter((mix @ beta.bias.detach().double()).to(dtype))

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        scaled, hidden = self._modulated(x, segmap)
        return self.conv_s(scaled) + self.mlp_beta(hidden)


def fold_spade(decoder: SPADEDecoder) -> int:
    """Swap, in place, every SPADE of `decoder` (spectral norm already folded; plain or in its CoreML-friendly form)
    for its folded form and every learned shortcut for `FoldedShortcut` (its block's conv_s becomes the identity);
    returns how many shortcuts were folded. The conditioning map is resized by a constant integer factor, as in
    the CoreML-friendly form (the same numbers as a resize to a size)."""
    shortcuts = 0
    for block in decoder.blocks():
        if block.learned_shortcut and isinstance(block.norm_s, SPADE | _SPADE):
            block.norm_s = FoldedShortcut(block.norm_s, block.conv_s)
            block.conv_s = nn.Identity()
            shortcuts += 1
        for name in ("norm_0", "norm_1"):
            norm = getattr(block, name)
            if isinstance(norm, SPADE | _SPADE):
                setattr(block, name, FoldedSPADE(norm))
    return shortcuts
