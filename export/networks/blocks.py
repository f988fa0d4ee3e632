"""Building blocks shared by the LivePortrait networks.

Attribute names (`conv`, `norm`, `encoder.down_blocks`, ...) are chosen so that the state-dict keys equal the
official checkpoints key for key; the arithmetic follows the official order so outputs match to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def make_coordinate_grid(spatial_size: tuple[int, int, int], ref: torch.Tensor) -> torch.Tensor:
    """Normalised (x, y, z) sample positions of a D×H×W volume, shape D×H×W×3, values in [-1, 1].

    Channel 0 is x (width, rightwards), 1 is y (height, downwards), 2 is z (depth) — the order grid_sample expects.
    """
    depth, height, width = (int(s) for s in spatial_size)

    def axis(n: int) -> torch.Tensor:
        steps = torch.arange(n, dtype=ref.dtype, device=ref.device)
        return 2 * (steps / (n - 1)) - 1

    xs = axis(width).view(1, 1, width).expand(depth, height, width)
    ys = axis(height).view(1, height, 1).expand(depth, height, width)
    zs = axis(depth).view(depth, 1, 1).expand(depth, height, width)
    return torch.stack([xs, ys, zs], dim=3)


def kp2gaussian(kp: torch.Tensor, spatial_size: tuple[int, int, int], kp_variance: float) -> torch.Tensor:
    """Render each keypoint (N×K×3) as an isotropic Gaussian blob over the grid: N×K×D×H×W, peak 1 at the point."""
    grid = make_coordinate_grid(spatial_size, kp)  # D×H×W×3
    lead = kp.shape[:-1]  # (N, K)
    centred = grid.view((1,) * len(lead) + tuple(grid.shape)) - kp.view(tuple(lead) + (1, 1, 1, 3))
    return torch.exp(-0.5 * (centred**2).sum(-1) / kp_variance)


class GridSample3d(nn.Module):
    """5-D trilinear grid sampling (zeros padding, align_corners=False) as a swappable module.

    The exporter replaces instances of this module with a decomposed 4-D equivalent for back-ends without 5-D
    GridSample; keeping it a parameter-free module with a fixed forward(input, grid) signature makes that a plain
    attribute assignment.
    """

    def forward(self, input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        return F.grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class SameBlock2d(nn.Module):
    """Conv → BatchNorm → (Leaky)ReLU keeping the resolution."""

    def __init__(self, in_ch: int, out_ch: int, lrelu: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_ch, affine=True)
        self.ac = nn.LeakyReLU() if lrelu else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ac(self.norm(self.conv(x)))


class DownBlock2d(nn.Module):
    """Conv → BatchNorm → ReLU → 2×2 average pool (halves H and W)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_ch, affine=True)
        self.pool = nn.AvgPool2d(kernel_size=(2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class DownBlock3d(nn.Module):
    """3-D Conv → BatchNorm → ReLU → (1,2,2) average pool (halves H and W, keeps depth)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_ch, affine=True)
        self.pool = nn.AvgPool3d(kernel_size=(1, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class UpBlock3d(nn.Module):
    """Nearest (1,2,2) upsample → 3-D Conv → BatchNorm → ReLU."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_ch, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")
        return F.relu(self.norm(self.conv(x)))


class ResBlock3d(nn.Module):
    """Pre-activation residual block: BN → ReLU → conv → BN → ReLU → conv, plus the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(channels, affine=True)
        self.norm2 = nn.BatchNorm3d(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.relu(self.norm1(x)))
        y = self.conv2(F.relu(self.norm2(y)))
        return y + x


def _level_width(expansion: int, level: int, cap: int) -> int:
    """Channel count of hourglass level `level` (level 0 is the input side)."""
    return min(cap, expansion * (2**level))


class HourglassEncoder(nn.Module):
    """Stack of DownBlock3d; returns every intermediate (input first) for the skip connections."""

    def __init__(self, expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        blocks = []
        for i in range(num_blocks):
            cin = in_features if i == 0 else _level_width(expansion, i, max_features)
            blocks.append(DownBlock3d(cin, _level_width(expansion, i + 1, max_features)))
        self.down_blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(nn.Module):
    """Stack of UpBlock3d with skip concatenation, then a 3-D conv → BN → ReLU at full resolution."""

    def __init__(self, expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            mult = 1 if i == num_blocks - 1 else 2
            blocks.append(
                UpBlock3d(mult * _level_width(expansion, i + 1, max_features), _level_width(expansion, i, max_features))
            )
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = expansion + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters, affine=True)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        skips = list(skips)
        out = skips.pop()
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass(nn.Module):
    """3-D U-Net used by the dense motion network."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        self.encoder = HourglassEncoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = HourglassDecoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
