"""ConvNeXt-V2 tiny backbone with the LivePortrait motion heads (keypoints, pose bins, translation, expression)."""

from __future__ import annotations

import torch
from torch import nn

TINY_DEPTHS = (3, 3, 9, 3)
TINY_DIMS = (96, 192, 384, 768)


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over dim 1 of an N×C×H×W tensor, written out (mean, biased variance, eps inside the sqrt)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class GRN(nn.Module):
    """Global Response Normalisation on channels-last input: per-channel spatial L2 norm, divided by its mean."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class ConvNeXtBlock(nn.Module):
    """Depthwise 7×7 conv → LayerNorm → Linear ×4 → GELU → GRN → Linear, residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.grn = GRN(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(y)))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtV2Motion(nn.Module):
    """Backbone + linear heads; forward returns the raw head outputs (pose logits, not yet degrees)."""

    def __init__(
        self,
        in_chans: int = 3,
        depths: tuple[int, ...] = TINY_DEPTHS,
        dims: tuple[int, ...] = TINY_DIMS,
        num_kp: int = 21,
        num_bins: int = 66,
    ) -> None:
        super().__init__()
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4), ChannelsFirstLayerNorm(dims[0]))]
        )
        for i in range(len(dims) - 1):
            self.downsample_layers.append(
                nn.Sequential(ChannelsFirstLayerNorm(dims[i]), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2))
            )
        self.stages = nn.ModuleList(
            nn.Sequential(*[ConvNeXtBlock(dim) for _ in range(depth)]) for dim, depth in zip(dims, depths, strict=True)
        )
        feat = dims[-1]
        self.norm = nn.LayerNorm(feat, eps=1e-6)
        self.fc_kp = nn.Linear(feat, 3 * num_kp)
        self.fc_scale = nn.Linear(feat, 1)
        self.fc_pitch = nn.Linear(feat, num_bins)
        self.fc_yaw = nn.Linear(feat, num_bins)
        self.fc_roll = nn.Linear(feat, num_bins)
        self.fc_t = nn.Linear(feat, 3)
        self.fc_exp = nn.Linear(feat, 3 * num_kp)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled, normalised N×768 descriptor the heads read."""
        for down, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(down(x))
        return self.norm(x.mean([-2, -1]))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        return {
            "pitch": self.fc_pitch(f),
            "yaw": self.fc_yaw(f),
            "roll": self.fc_roll(f),
            "t": self.fc_t(f),
            "exp": self.fc_exp(f),
            "scale": self.fc_scale(f),
            "kp": self.fc_kp(f),
        }
