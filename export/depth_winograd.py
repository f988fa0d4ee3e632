"""3×3×3 convolutions with Winograd F(2, 3) along depth only: a third fewer multiplications, at fp32 accuracy.

The dense-motion hourglass runs 3×3×3 convolutions on 16-slice volumes; the CPU graph computes each as one 2-D
convolution over the depth slices with the three depth taps stacked in its output channels, then a shift-and-sum
(`DepthTapConv3d`): 3 slice-convolutions per output slice. Its last convolution (142 → 142 channels at 64×64) is
the largest node of the warping graph (36 GMAC a frame) and runs near the CPU's fp32 peak, so only fewer
multiplications make it faster.

Winograd F(2, 3) along depth computes every pair of output slices from four input slices with four
slice-convolutions instead of six:

* input transform Bᵀ·d over each 4-slice window (stride 2, zero slice padding): V₀ = d₀ − d₂, V₁ = d₁ + d₂,
  V₂ = d₂ − d₁, V₃ = d₁ − d₃ (additions only);
* one grouped 2-D convolution (4 groups) with the kernels U = G·w combined over the depth taps
  (G rows (1, 0, 0), (½, ½, ½), (½, −½, ½), (0, 0, 1), computed in float64);
* output transform Aᵀ·m: y₀ = m₀ + m₁ + m₂, y₁ = m₁ − m₂ − m₃, then the bias.

H and W stay direct, so no spatial tiles, no interpolation points beyond 0, ±1 and ∞, and the rounding stays that
of a direct convolution (measured well under 1e-6 of the output scale per convolution). 2 of every 3 multiplies
of the slice convolution remain: 36 → 24 GMAC for the hourglass's last convolution.

Applies to stride-1, 3-tap, depth-padding-1 convolutions on an even number of slices; the hourglass's up blocks
keep the shift-and-sum form (their nearest upsampling feeds the 2-D convolution, which `export/polyphase.py`
computes at the small size instead).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from export.coreml_friendly import DepthTapConv3d

__all__ = ["DepthWinogradConv3d", "depth_winograd_kernels", "use_depth_winograd"]

# F(2, 3) with points 0, ±1 and ∞
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def depth_winograd_kernels(weight: np.ndarray) -> np.ndarray:
    """U = G·w along the depth taps of an O×C×3×kh×kw kernel, as the grouped (4·O)×C×kh×kw kernel, in float64."""
    return np.einsum("jt,octhw->jochw", _G, weight.astype(np.float64)).reshape(-1, *weight.shape[1:2],
                                                                                *weight.shape[3:])


class DepthWinogradConv3d(nn.Module):
    """The same convolution as a `DepthTapConv3d` with 3 depth taps and depth padding 1, by F(2, 3) along depth."""

    def __init__(self, tap_conv: DepthTapConv3d) -> None:
        super().__init__()
        if tap_conv.pointwise or tap_conv.taps != 3 or tap_conv.pad_d != 1:
            raise ValueError(f"depth Winograd needs 3 depth taps with padding 1; got {tap_conv.taps} taps, "
                             f"padding {tap_conv.pad_d}")
        out_ch, in_ch = tap_conv.out_channels, tap_conv.in_channels
        stacked = tap_conv.conv.weight.detach()  # tap-major: channel t·O + o holds weight[o, :, t]
        kh, kw = (int(s) for s in stacked.shape[2:])
        weight = stacked.double().reshape(3, out_ch, in_ch, kh, kw).permute(1, 2, 0, 3, 4).numpy()
        kernels = torch.from_numpy(depth_winograd_kernels(weight)).to(stacked.dtype)
        self.out_channels = out_ch
        self.conv = nn.Conv2d(4 * in_ch, 4 * out_ch, (kh, kw), padding=tap_conv.conv.padding, groups=4, bias=False)
        self.conv.weight = nn.Parameter(kernels)
        self.register_buffer("bias", tap_conv.bias.detach().clone().view(1, 1, 1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, channels, depth, height, width = (int(s) for s in x.shape)
        if depth % 2:
            raise ValueError(f"depth Winograd F(2, 3) needs an even number of slices, got {depth}")
        slices = x.transpose(1, 2)  # N x D x C x H x W
        zero = slices[:, :1] * 0.0  # no ConstantOfShape
        padded = torch.cat([zero, slices, zero], dim=1)  # N x (D + 2) x C x H x W
        d0, d1, d2, d3 = (padded[:, i : i + depth : 2] for i in range(4))  # window starts 0, 2, 4, ...
        v = torch.cat([d0 - d2, d1 + d2, d2 - d1, d1 - d3], dim=2)  # N x D/2 x 4C x H x W
        m = self.conv(v.reshape(-1, 4 * channels, height, width))
        m = m.reshape(-1, depth // 2, 4, self.out_channels, height, width)
        m0, m1, m2, m3 = (m[:, :, j : j + 1] for j in range(4))
        y = torch.cat([m0 + m1 + m2, m1 - m2 - m3], dim=2) + self.bias  # N x D/2 x 2 x O x H x W
        return y.reshape(-1, depth, self.out_channels, height, width).transpose(1, 2)


def use_depth_winograd(module: nn.Module) -> int:
    """Swap, in place, every eligible `DepthTapConv3d` called without upsampling for its depth-Winograd form.

    Up blocks (`UpBlock3d`'s stand-in passes `upsample=2`) keep theirs; returns how many were swapped.
    """
    from export.coreml_friendly import _UpBlock

    skip = {id(m.conv) for m in module.modules() if isinstance(m, _UpBlock)}
    swapped = 0
    for parent in list(module.modules()):
        for name, child in list(parent._modules.items()):
            if (isinstance(child, DepthTapConv3d) and id(child) not in skip and not child.pointwise
                    and child.taps == 3 and child.pad_d == 1):
                parent._modules[name] = DepthWinogradConv3d(child)
                swapped += 1
    return swapped
