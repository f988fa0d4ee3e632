"""Swin-T backbone of X-Pose, written so one traced graph serves every input size.

Every size-dependent quantity (the pads to multiples of the 7-px window and of the patch size, the shifted-window
region mask, patch-merging pads, crops) is computed from the runtime shape with tensor ops, never from Python
branches on sizes, so `torch.onnx.export` records Shape/Range/Pad nodes instead of constants. Parameter names
follow the official backbone (`backbone.0.*` in the X-Pose checkpoint).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

WINDOW = 7
SHIFT = WINDOW // 2
SHIFT_MASK_VALUE = -100.0  # the official additive mask between different shifted-window regions


def _pad_to(size: torch.Tensor | int, multiple: int) -> torch.Tensor | int:
    """How much to add to `size` to reach a multiple of `multiple` (0 when it already is one)."""
    return (multiple - size % multiple) % multiple


class Mlp(nn.Module):
    """fc1 → GELU → fc2, the transformer block's feed-forward part."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def relative_position_index(window: int = WINDOW) -> torch.Tensor:
    """Index into the (2w-1)² bias table for every (query, key) pair of a w×w window (the official buffer)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, plus the learned relative position bias."""

    def __init__(self, dim: int, heads: int, window: int = WINDOW) -> None:
        super().__init__()
        self.heads, self.window = heads, window
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (windows, w², C); mask: (windows, w², w²) additive, or None."""
        n = self.window * self.window
        c = x.shape[-1]
        qkv = self.qkv(x).reshape(-1, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        attn = attn + bias.reshape(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            attn = attn + mask.unsqueeze(1)
        attn = attn.softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(-1, n, c))


def window_partition(x: torch.Tensor, window: int = WINDOW) -> torch.Tensor:
    """(B, Hp, Wp, C) → (B·windows, w², C), windows in row-major order."""
    b, hp, wp, c = x.shape
    x = x.reshape(b, hp // window, window, wp // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, hp: torch.Tensor | int, wp: torch.Tensor | int,
                   window: int = WINDOW) -> torch.Tensor:
    """Inverse of window_partition for batch 1: (windows, w², C) → (1, Hp, Wp, C)."""
    c = windows.shape[-1]
    x = windows.reshape(1, hp // window, wp // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(1, hp, wp, c)


def shifted_window_mask(hp: torch.Tensor | int, wp: torch.Tensor | int, device: torch.device,
                        window: int = WINDOW, shift: int = SHIFT) -> torch.Tensor:
    """(windows, w², w²) additive mask of the shifted windows for a padded Hp×Wp map: tokens of different regions
    (the last `window` and last `shift` rows/columns split the map into 3×3 regions) get -100, as upstream."""
    rows = torch.arange(hp, device=device)
    cols = torch.arange(wp, device=device)
    row_id = (rows >= hp - window).long() + (rows >= hp - shift).long()
    col_id = (cols >= wp - window).long() + (cols >= wp - shift).long()
    region = (row_id[:, None] * 3 + col_id[None, :]).to(torch.float32)
    ids = window_partition(region[None, :, :, None], window).squeeze(-1)  # windows, w²
    diff = ids[:, None, :] - ids[:, :, None]
    return torch.where(diff != 0, torch.full_like(diff, SHIFT_MASK_VALUE), torch.zeros_like(diff))


class SwinBlock(nn.Module):
    """(Shifted-)window attention block: pads to the window grid, attends, crops back."""

    def __init__(self, dim: int, heads: int, shift: int) -> None:
        super().__init__()
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor, h: torch.Tensor | int, w: torch.Tensor | int,
                mask: torch.Tensor) -> torch.Tensor:
        c = x.shape[-1]
        shortcut = x
        y = self.norm1(x).reshape(1, h, w, c)
        y = F.pad(y, (0, 0, 0, _pad_to(w, WINDOW), 0, _pad_to(h, WINDOW)))
        hp, wp = y.shape[1], y.shape[2]
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y), mask if self.shift else None)
        y = window_reverse(y, hp, wp)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        y = y[:, :h, :w, :].reshape(1, -1, c)
        x = shortcut + y
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2×2 neighbourhood → one token with twice the channels (odd sizes padded by one, as upstream)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, h: torch.Tensor | int, w: torch.Tensor | int) -> torch.Tensor:
        c = x.shape[-1]
        x = x.reshape(1, h, w, c)
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.reshape(1, -1, 4 * c)))


class SwinStage(nn.Module):
    """`depth` blocks alternating plain and shifted windows, then an optional patch merging."""

    def __init__(self, dim: int, depth: int, heads: int, downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(SwinBlock(dim, heads, 0 if i % 2 == 0 else SHIFT) for i in range(depth))
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, h, w):
        hp = h + _pad_to(h, WINDOW)
        wp = w + _pad_to(w, WINDOW)
        mask = shifted_window_mask(hp, wp, x.device)
        for blk in self.blocks:
            x = blk(x, h, w, mask)
        if self.downsample is None:
            return x, x, h, w
        return x, self.downsample(x, h, w), (h + 1) // 2, (w + 1) // 2


class PatchEmbed(nn.Module):
    """4×4 patches (input padded right/bottom to a multiple of 4) → 96 channels, LayerNorm-ed."""

    def __init__(self, dim: int = 96, patch: int = 4) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(3, dim, patch, patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        x = F.pad(x, (0, _pad_to(w, self.patch), 0, _pad_to(h, self.patch)))
        x = self.proj(x)
        return x


class SwinTransformer(nn.Module):
    """Swin-T (96 channels, depths 2-2-6-2, heads 3-6-12-24, window 7) returning stages 1-3 as NCHW maps."""

    def __init__(self, dim: int = 96, depths: tuple[int, ...] = (2, 2, 6, 2),
                 heads: tuple[int, ...] = (3, 6, 12, 24), out_indices: tuple[int, ...] = (1, 2, 3)) -> None:
        super().__init__()
        self.out_indices = out_indices
        self.patch_embed = PatchEmbed(dim)
        self.num_features = [dim * 2**i for i in range(len(depths))]
        self.layers = nn.ModuleList(
            SwinStage(self.num_features[i], depths[i], heads[i], downsample=i < len(depths) - 1)
            for i in range(len(depths))
        )
        for i in out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(image)
        h, w = x.shape[2], x.shape[3]
        x = self.patch_embed.norm(x.flatten(2).transpose(1, 2))
        outs = []
        for i, stage in enumerate(self.layers):
            out, x, h_next, w_next = stage(x, h, w)
            if i in self.out_indices:
                out = getattr(self, f"norm{i}")(out)
                outs.append(out.reshape(1, h, w, -1).permute(0, 3, 1, 2))
            h, w = h_next, w_next
        return outs
