"""3×3×3 convolutions with Winograd along depth only: a third fewer multiplications, at fp32 accuracy.

The dense-motion hourglass runs 3×3×3 convolutions on 16-slice volumes; the CPU graph computes each as one 2-D
convolution over the depth slices with the three depth taps stacked in its output channels, then a shift-and-sum
(`DepthTapConv3d`): 3 slice-convolutions per output slice. Its last convolution (142 → 142 channels at 64×64) is
the largest node of the warping graph (36 GMAC a frame) and runs near the CPU's fp32 peak, so only fewer
multiplications make it faster.

Winograd F(m, 3) along depth computes every m output slices from m + 2 input slices with m + 2 slice-convolutions
instead of 3·m. The graphs use F(2, 3) (points 0, ±1, ∞; 4 instead of 6); F(4, 3) (points 0, ±1, ±2, ∞, the
matrices of `export/winograd.py`; 6 instead of 12) is here and tested, but measured no faster in the warping graph
on the AVX2 EPYC (A/B at batch 2: 4.89 vs 4.97 s a frame, noise) and moved its output 8.1e-5 of scale from the
native graph instead of 6.2e-5, too close to the 1e-4 bar:

* input transform Bᵀ·d of every (m + 2)-slice window (stride m, zero slice padding): one MatMul of the slices
  (N × D × C·H·W) by a constant banded (D/m · (m + 2)) × D matrix, which builds the windows and leaves the padding
  out, no transposes;
* one grouped 2-D convolution (m + 2 groups) with the kernels U = G·w combined over the depth taps (float64);
* output transform Aᵀ·M: one MatMul whose m rows are already consecutive output slices, then the bias.

H and W stay direct, so the error is that of a 1-D transform: for the 142-channel conv 3.4e-7 of the output
scale by F(2, 3), 1.3e-6 by F(4, 3), direct 2.3e-7. Work by F(2, 3): 36 → 24 GMAC for the last conv, measured
alone 652 → 428 ms on the AVX2 EPYC (the first, elementwise form of the transforms: 459 ms).

Applies to stride-1, 3-tap, depth-padding-1 convolutions on a multiple of the tile in slices; the hourglass's up blocks
keep the shift-and-sum form (their nearest upsampling feeds the 2-D convolution, which `export/polyphase.py`
computes at the small size instead).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from export.coreml_friendly import DepthTapConv3d, _UpBlock
from export.winograd import winograd_matrices

__all__ = ["DepthWinogradConv3d", "depth_winograd_kernels", "depth_winograd_matrices", "use_depth_winograd"]


def depth_winograd_matrices(tile: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Bᵀ, G, Aᵀ) of F(`tile`, 3) in float64: tile 4 as in `export/winograd.py`, tile 2 with points 0, ±1, ∞."""
    if tile == 4:
        return winograd_matrices()
    if tile == 2:
        bt = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
        g = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
        at = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)
        return bt, g, at
    raise ValueError(f"depth Winograd has tiles 2 and 4, not {tile}")


def depth_winograd_kernels(weight: np.ndarray, g: np.ndarray) -> np.ndarray:
    """U = G·w along the depth taps of an O×C×3×kh×kw kernel, as the grouped (α·O)×C×kh×kw kernel, in float64."""
    in_ch, kh, kw = weight.shape[1], weight.shape[3], weight.shape[4]
    return np.einsum("jt,octhw->jochw", g, weight.astype(np.float64)).reshape(-1, in_ch, kh, kw)


class DepthWinogradConv3d(nn.Module):
    """The same convolution as a `DepthTapConv3d` with 3 depth taps and depth padding 1, by F(tile, 3) along depth
    (the depth must be a multiple of the tile)."""

    @staticmethod
    def takes(tap_conv: DepthTapConv3d) -> bool:
        """Whether `tap_conv` has the form this computes: 3 depth taps, depth padding 1, not 1×1×1."""
        return not tap_conv.pointwise and tap_conv.taps == 3 and tap_conv.pad_d == 1

    def __init__(self, tap_conv: DepthTapConv3d, tile: int = 2) -> None:
        super().__init__()
        if not self.takes(tap_conv):
            raise ValueError(f"depth Winograd needs 3 depth taps with padding 1; got {tap_conv.taps} taps, "
                             f"padding {tap_conv.pad_d}")
        bt, g, at = depth_winograd_matrices(tile)
        self.tile = tile
        self.alpha = self.tile + 2
        out_ch, in_ch = tap_conv.out_channels, tap_conv.in_channels
        stacked = tap_conv.conv.weight.detach()  # tap-major: channel t·O + o holds weight[o, :, t]
        kh, kw = (int(s) for s in stacked.shape[2:])
        weight = stacked.double().reshape(3, out_ch, in_ch, kh, kw).permute(1, 2, 0, 3, 4).numpy()
        self.out_channels = out_ch
        self.conv = nn.Conv2d(self.alpha * in_ch, self.alpha * out_ch, (kh, kw), padding=tap_conv.conv.padding,
                              groups=self.alpha, bias=False)
        self.conv.weight = nn.Parameter(torch.from_numpy(depth_winograd_kernels(weight, g)).to(stacked.dtype))
        self.register_buffer("bt", torch.from_numpy(bt).to(stacked.dtype))
        self.register_buffer("at", torch.from_numpy(at).to(stacked.dtype))
        self.register_buffer("bias", tap_conv.bias.detach().clone().view(1, 1, -1, 1, 1))

    def window_transform(self, depth: int) -> torch.Tensor:
        """Bᵀ applied to every (m + 2)-slice window of a `depth`-slice volume, as one (tiles·α) × depth matrix.

        Window t reads slices m·t − 1 … m·t + m; the zero padding is the slices the matrix leaves out. One MatMul
        over the unpadded slices instead of building the overlapping windows (a padding Concat, three Slices and
        a Concat: ~45 ms a frame for the hourglass's last convolution on a 2-core Xeon)."""
        m, alpha = self.tile, self.alpha
        band = np.zeros((depth // m, alpha, depth))
        for t in range(depth // m):
            for x in range(alpha):
                if 0 <= m * t + x - 1 < depth:
                    band[t, :, m * t + x - 1] = self.bt[:, x].double().numpy()
        return torch.from_numpy(band.reshape(-1, depth)).to(self.bt.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, channels, depth, height, width = (int(s) for s in x.shape)
        m, alpha = self.tile, self.alpha
        if depth % m:
            raise ValueError(f"depth Winograd F({m}, 3) needs a multiple of {m} slices, got {depth}")
        tiles, plane = depth // m, channels * height * width
        slices = x.transpose(1, 2).reshape(-1, depth, plane)  # N x D x CHW
        v = torch.matmul(self.window_transform(depth), slices)  # N x (tiles·α) x CHW
        products = self.conv(v.reshape(-1, alpha * channels, height, width))
        y = torch.matmul(self.at, products.reshape(-1, tiles, alpha, self.out_channels * height * width))
        y = y.reshape(-1, depth, self.out_channels, height, width) + self.bias  # the m rows are m slices
        return y.transpose(1, 2)


def use_depth_winograd(module: nn.Module, tile: int = 2) -> int:
    """Swap, in place, every eligible `DepthTapConv3d` called without upsampling for its F(`tile`, 3) form (the
    hourglass keeps its 16 slices throughout: its pools and upsamplings are (1, 2, 2)).

    Up blocks (`UpBlock3d`'s stand-in passes `upsample=2`) keep theirs; returns how many were swapped.
    """
    skip = {id(m.conv) for m in module.modules() if isinstance(m, _UpBlock)}
    swapped = 0
    for parent in list(module.modules()):
        for name, child in list(parent._modules.items()):
            if isinstance(child, DepthTapConv3d) and id(child) not in skip and DepthWinogradConv3d.takes(child):
                parent._modules[name] = DepthWinogradConv3d(child, tile)
                swapped += 1
    return swapped
