"""SPADE decoder (G): warped N×256×64×64 feature → N×3×512×512 image in [0, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import remove_spectral_norm, spectral_norm

SPADE_HIDDEN = 128
LEAK = 0.2


class SPADE(nn.Module):
    """Parameter-free instance norm, then a per-pixel affine predicted from the (resized) conditioning map."""

    def __init__(self, norm_nc: int, label_nc: int) -> None:
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(norm_nc, affine=False)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, SPADE_HIDDEN, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(SPADE_HIDDEN, norm_nc, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(SPADE_HIDDEN, norm_nc, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        normalized = self.param_free_norm(x)
        segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        hidden = self.mlp_shared(segmap)
        return normalized * (1 + self.mlp_gamma(hidden)) + self.mlp_beta(hidden)


class SPADEResnetBlock(nn.Module):
    """Two spectral-normed 3×3 convs with SPADE + LeakyReLU(0.2) before each; 1×1 learned shortcut if widths differ."""

    def __init__(self, fin: int, fout: int, label_nc: int) -> None:
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = spectral_norm(nn.Conv2d(fin, fmiddle, kernel_size=3, padding=1))
        self.conv_1 = spectral_norm(nn.Conv2d(fmiddle, fout, kernel_size=3, padding=1))
        if self.learned_shortcut:
            self.conv_s = spectral_norm(nn.Conv2d(fin, fout, kernel_size=1, bias=False))
            self.norm_s = SPADE(fin, label_nc)
        self.norm_0 = SPADE(fin, label_nc)
        self.norm_1 = SPADE(fmiddle, label_nc)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        skip = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), LEAK))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), LEAK))
        return skip + dx

    def spectral_convs(self) -> list[str]:
        """Names of the spectral-normed convolutions of this block."""
        return ["conv_0", "conv_1"] + (["conv_s"] if self.learned_shortcut else [])


class SPADEDecoder(nn.Module):
    """fc → 6 middle SPADE blocks → ×2, up_0 → ×2, up_1 → LeakyReLU → conv + pixel shuffle → sigmoid."""

    def __init__(
        self,
        upscale: int = 2,
        max_features: int = 512,
        block_expansion: int = 64,
        out_channels: int = 64,
        num_down_blocks: int = 2,
    ) -> None:
        super().__init__()
        cin = min(max_features, block_expansion * (2**num_down_blocks))  # 256: width of the warped feature
        mid = 2 * cin
        self.fc = nn.Conv2d(cin, mid, kernel_size=3, padding=1)
        for i in range(6):
            setattr(self, f"G_middle_{i}", SPADEResnetBlock(mid, mid, cin))
        self.up_0 = SPADEResnetBlock(mid, cin, cin)
        self.up_1 = SPADEResnetBlock(cin, out_channels, cin)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        if upscale is None or upscale <= 1:
            self.conv_img = nn.Conv2d(out_channels, 3, kernel_size=3, padding=1)
        else:
            self.conv_img = nn.Sequential(
                nn.Conv2d(out_channels, 3 * upscale * upscale, kernel_size=3, padding=1), nn.PixelShuffle(upscale)
            )

    def blocks(self) -> list[SPADEResnetBlock]:
        """The eight SPADE residual blocks in execution order."""
        return [getattr(self, f"G_middle_{i}") for i in range(6)] + [self.up_0, self.up_1]

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        x = self.fc(feature)
        for i in range(6):
            x = getattr(self, f"G_middle_{i}")(x, feature)
        x = self.up_0(self.up(x), feature)
        x = self.up_1(self.up(x), feature)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, LEAK)))


def fold_spectral_norm(decoder: SPADEDecoder) -> SPADEDecoder:
    """Bake σ into plain conv weights (remove the spectral-norm hooks) so the exported graph has no σ computation.

    In eval mode spectral norm does no power iteration, so the folded weight weight_orig / σ gives the same output.
    Idempotent: blocks already folded are skipped.
    """
    was_training = decoder.training
    decoder.eval()
    for block in decoder.blocks():
        for name in block.spectral_convs():
            conv = getattr(block, name)
            if hasattr(conv, "weight_orig"):
                remove_spectral_norm(conv)
    decoder.train(was_training)
    return decoder
