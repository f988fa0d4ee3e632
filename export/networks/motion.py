"""Motion extractor (M): canonical keypoints, head-pose bins, translation, expression and scale of an image."""

from __future__ import annotations

import torch
from torch import nn

from .convnextv2 import ConvNeXtV2Motion


class MotionExtractor(nn.Module):
    """N×3×256×256 image in [0, 1] → raw heads: pitch/yaw/roll N×66 logits, t N×3, exp N×63, scale N×1, kp N×63.

    The backbone lives under `detector` because that is where the official checkpoint keys put it.
    """

    def __init__(self, num_kp: int = 21, num_bins: int = 66, backbone: str = "convnextv2_tiny") -> None:
        super().__init__()
        if backbone != "convnextv2_tiny":
            raise ValueError(f"unsupported motion-extractor backbone {backbone!r}; only 'convnextv2_tiny' exists")
        self.detector = ConvNeXtV2Motion(num_kp=num_kp, num_bins=num_bins)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.detector(image)
