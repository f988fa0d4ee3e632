"""Multi-scale deformable attention with `grid_sample`, so it traces to standard ONNX (no compiled CUDA op).

The official module calls MultiScaleDeformableAttention (a compiled CUDA/CPU extension with no ONNX symbolic).
Here each level is sampled with one 4-D bilinear `grid_sample` (zeros padding, align_corners=False, the same
sampling rule as the extension), so the graph runs on every execution provider, CoreML and OpenVINO included.
The level sizes come from the runtime feature shapes, never from constants.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def deformable_sample(values: list[torch.Tensor], locations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Attention-weighted bilinear samples of every level.

    values: per level (heads, head_dim, H_l, W_l); locations: (Lq, heads, levels, points, 2) as (x, y) in [0, 1]
    of each level; weights: (Lq, heads, levels, points). Returns (Lq, heads·head_dim).
    """
    lq = locations.shape[0]
    grids = 2.0 * locations - 1.0
    w = weights.permute(1, 0, 2, 3).unsqueeze(1)  # heads, 1, Lq, levels, points
    out = None
    for lvl, value in enumerate(values):
        grid = grids[:, :, lvl].permute(1, 0, 2, 3)  # heads, Lq, points, 2
        sampled = F.grid_sample(value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        term = (sampled * w[..., lvl, :]).sum(-1)  # heads, head_dim, Lq
        out = term if out is None else out + term
    return out.permute(2, 0, 1).reshape(lq, -1)


class MSDeformAttn(nn.Module):
    """Deformable attention over `levels` feature maps, `points` samples per head and level (batch 1)."""

    def __init__(self, dim: int = 256, levels: int = 4, heads: int = 8, points: int = 4) -> None:
        super().__init__()
        self.dim, self.levels, self.heads, self.points = dim, levels, heads, points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, reference: torch.Tensor, memory: torch.Tensor,
                shapes: list[tuple]) -> torch.Tensor:
        """query (Lq, C); reference (Lq, 2) as (x, y) or (Lq, 4) as (cx, cy, w, h), the same on every level
        (valid ratios are 1: the input is never padded); memory (S, C) = the levels flattened row-major;
        shapes: [(H_l, W_l)] of the levels in order. Returns (Lq, C)."""
        lq = query.shape[0]
        head_dim = self.dim // self.heads
        value = self.value_proj(memory)
        values, start = [], 0
        for h, w in shapes:
            chunk = value[start:start + h * w]  # h·w, C
            values.append(chunk.reshape(h, w, self.heads, head_dim).permute(2, 3, 0, 1))
            start = start + h * w
        offsets = self.sampling_offsets(query).reshape(lq, self.heads, self.levels, self.points, 2)
        weights = self.attention_weights(query).reshape(lq, self.heads, self.levels * self.points)
        weights = weights.softmax(-1).reshape(lq, self.heads, self.levels, self.points)
        if reference.shape[-1] == 2:
            normaliser = torch.stack(
                [torch.stack([torch.as_tensor(w), torch.as_tensor(h)]) for h, w in shapes]
            ).to(query.dtype)  # levels, 2 as (W, H)
            locations = reference[:, None, None, None, :] + offsets / normaliser[None, None, :, None, :]
        else:
            locations = (reference[:, None, None, None, :2]
                         + offsets / self.points * reference[:, None, None, None, 2:] * 0.5)
        return self.output_proj(deformable_sample(values, locations, weights))
