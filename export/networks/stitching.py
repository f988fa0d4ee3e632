"""Stitching and eye/lip retargeting MLPs (S, R): small keypoint-space correctors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

STITCHING_SIZES = (126, (128, 128, 64), 65)  # kp_source ‖ kp_driving → 63 kp deltas + (tx, ty)
LIP_SIZES = (65, (128, 128, 64), 63)  # kp_source ‖ 2 lip ratios → kp deltas
EYE_SIZES = (66, (256, 256, 128, 128, 64), 63)  # kp_source ‖ 3 eye ratios → kp deltas


class StitchingRetargetingNetwork(nn.Module):
    """Plain ReLU MLP under `mlp` (Linear, ReLU, Linear, ... , Linear) so keys read mlp.0, mlp.2, ..."""

    def __init__(self, input_size: int, hidden_sizes: Sequence[int], output_size: int) -> None:
        super().__init__()
        widths = [input_size, *hidden_sizes]
        layers: list[nn.Module] = []
        for cin, cout in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(cin, cout), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], output_size))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)
