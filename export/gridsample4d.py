"""Trilinear 5-D grid sampling expressed with one 4-D GridSample.

CoreML, OpenVINO and TensorRT <= 10 accept only 4-D (bilinear) GridSample. LivePortrait warps an
N x C x D x H x W feature volume with a 5-D trilinear grid sample (zeros padding, align_corners=False).
This module computes the same result from one 4-D GridSample over a 2-D atlas of the depth slices:

* every depth slice gets a one-pixel zero border and the slices are tiled into a near-square
  ``rows x cols`` atlas, so a bilinear tap that falls off a slice reads zeros, exactly like the
  zeros padding of the 5-D op (x and y are clamped to [-1, W] / [-1, H] so far-away points read
  the border too);
* each sample point is split into its two neighbouring depth slices z0 and z0 + 1; its (x, y)
  position is mapped into each slice's tile and both taps are sampled by one 4-D GridSample;
* taps whose slice lies outside [0, D) get weight zero and the two taps are blended with the
  fractional depth weight.

The graph is written for the CoreML EP's ML Program op set: no Pad (zeros are concatenated), no
Floor (``round(p - 0.5)`` gives a valid lower neighbour: at exact integers it may pick z - 1 with
weight 1 on z, which is the same value), no comparisons (masks are clipped affine ramps), no
tensor above rank 5 and no Shape/Gather (batch is the ``-1`` of each reshape).
All coordinate arithmetic and the sampled atlas are float32 whatever the input dtype: the atlas is
up to ``cols * (W + 2)`` pixels wide, where fp16 coordinates would be off by a tenth of a pixel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GridSample3dVia2d", "atlas_layout"]


def atlas_layout(depth: int) -> tuple[int, int]:
    """Return (rows, cols) of the near-square tiling of ``depth`` slices (square keeps coordinates small)."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    cols = math.ceil(math.sqrt(depth))
    rows = math.ceil(depth / cols)
    return rows, cols


def _zeros_like_slice(x: torch.Tensor, dim: int) -> torch.Tensor:
    """A zero tensor shaped like one index of ``x`` along ``dim``, built without Shape/ConstantOfShape ops."""
    return x.narrow(dim, 0, 1) * 0.0


def _build_atlas(volume: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Tile the zero-bordered slices of N x C x D x H x W into N x C x rows*(H+2) x cols*(W+2)."""
    _, channels, depth, height, width = (int(s) for s in volume.shape)
    zero_col = _zeros_like_slice(volume, 4)
    framed = torch.cat([zero_col, volume, zero_col], dim=4)
    zero_row = _zeros_like_slice(framed, 3)
    framed = torch.cat([zero_row, framed, zero_row], dim=3)
    spare = rows * cols - depth
    if spare:
        empty = _zeros_like_slice(framed, 2)
        framed = torch.cat([framed] + [empty] * spare, dim=2)
    tile_h, tile_w = height + 2, width + 2
    # Fold N and C together so that no tensor exceeds rank 5 (CoreML's limit).
    tiles = framed.reshape(-1, rows, cols, tile_h, tile_w).permute(0, 1, 3, 2, 4)
    return tiles.reshape(-1, channels, rows * tile_h, cols * tile_w)


def _unnormalize(coord: torch.Tensor, size: int) -> torch.Tensor:
    """Map [-1, 1] grid coordinates to pixel coordinates as grid_sample does with align_corners=False."""
    return ((coord + 1.0) * size - 1.0) * 0.5


class GridSample3dVia2d(nn.Module):
    """Drop-in for ``F.grid_sample(x, grid, "bilinear", "zeros", align_corners=False)`` on 5-D inputs.

    Exports to ONNX with a single 4-D GridSample node and standard arithmetic; has no parameters.
    """

    def forward(self, input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Sample ``input`` (N x C x D x H x W) at ``grid`` (N x Do x Ho x Wo x 3, xyz in [-1, 1])."""
        if input.dim() != 5 or grid.dim() != 5 or int(grid.shape[-1]) != 3:
            raise ValueError(
                "GridSample3dVia2d expects input N x C x D x H x W and grid N x Do x Ho x Wo x 3, got "
                f"{tuple(input.shape)} and {tuple(grid.shape)}"
            )
        out_dtype = input.dtype
        _, channels, depth, height, width = (int(s) for s in input.shape)
        _, out_d, out_h, out_w, _ = (int(s) for s in grid.shape)
        rows, cols = atlas_layout(depth)
        tile_h, tile_w = height + 2, width + 2
        atlas_h, atlas_w = rows * tile_h, cols * tile_w

        volume = input if input.dtype == torch.float32 else input.float()
        atlas = _build_atlas(volume, rows, cols)
        g = grid if grid.dtype == torch.float32 else grid.float()
        px = _unnormalize(g[..., 0:1], width).clamp(-1.0, float(width))  # N x Do x Ho x Wo x 1
        py = _unnormalize(g[..., 1:2], height).clamp(-1.0, float(height))
        pz = _unnormalize(g[..., 2:3], depth)

        z_low = torch.round(pz - 0.5)  # lower neighbour slice (see module docstring)
        w_high = pz - z_low
        taps_grid, weights = [], []
        for z, w in ((z_low, 1.0 - w_high), (z_low + 1.0, w_high)):
            # 1 inside [0, D-1], 0 outside: z is integer-valued, so these clipped ramps are exact.
            inside = (z + 1.0).clamp(0.0, 1.0) * (float(depth) - z).clamp(0.0, 1.0)
            weights.append(w * inside)
            z_tile = z.clamp(0.0, float(depth - 1))
            # Row of the tile: (z - (cols-1)/2) / cols is within 0.5 - 1/(2 cols) of an integer, so round is exact.
            tile_row = torch.round((z_tile - 0.5 * (cols - 1)) * (1.0 / cols))
            tile_col = z_tile - tile_row * float(cols)
            # Atlas pixel u = tile_col * tile_w + 1 + px, normalised as (2u + 1) / atlas_w - 1; the integer parts
            # are grouped so the only rounding is on small terms (2 / cols is exact for power-of-two cols).
            gu = px * (2.0 / atlas_w) + (tile_col * (2.0 / cols) + (3.0 - atlas_w) / atlas_w)
            gv = py * (2.0 / atlas_h) + (tile_row * (2.0 / rows) + (3.0 - atlas_h) / atlas_h)
            taps_grid.append(torch.cat([gu, gv], dim=-1))

        grid2d = torch.cat(taps_grid, dim=1).reshape(-1, 2 * out_d * out_h, out_w, 2)
        sampled = F.grid_sample(atlas, grid2d, mode="bilinear", padding_mode="zeros", align_corners=False)
        rows_per_tap = out_d * out_h
        low = sampled[:, :, :rows_per_tap]
        high = sampled[:, :, rows_per_tap:]
        w_low = weights[0].reshape(-1, 1, rows_per_tap, out_w)
        w_high4 = weights[1].reshape(-1, 1, rows_per_tap, out_w)
        out = low * w_low + high * w_high4
        out = out.reshape(-1, channels, out_d, out_h, out_w)
        return out if out_dtype == torch.float32 else out.to(out_dtype)
