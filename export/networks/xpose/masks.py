"""Position embeddings, reference grids and the decoder's self-attention mask of X-Pose, as tensor ops.

Everything here is computed from runtime shapes or from the `keypoint_mask` input, so the traced graph needs no
per-size constants; the 3450-step Python loop of the official `prepare_for_mask` becomes a 69×69 comparison.
"""

from __future__ import annotations

import math

import torch

NUM_GROUPS = 50  # instance boxes kept after decoder layer 2
NUM_KEYPOINTS = 68  # keypoint query rows per group (upstream num_body_points)
GROUP = NUM_KEYPOINTS + 1  # 1 box query + 68 keypoint queries
TWO_PI = 2 * math.pi


def _interleave_sin_cos(x: torch.Tensor) -> torch.Tensor:
    """[..., F] angles → [..., F] as sin(even), cos(odd) pairs in place (DETR's sine embedding layout)."""
    return torch.stack((x[..., 0::2].sin(), x[..., 1::2].cos()), dim=-1).flatten(-2)


def _dim_t(feats: int, temperature: float, device: torch.device) -> torch.Tensor:
    dim_t = torch.arange(feats, dtype=torch.float32, device=device)
    return temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / feats)


def image_position_embedding(h, w, device: torch.device, feats: int = 128, temperature: float = 20.0) -> torch.Tensor:
    """(1, 2·feats, H, W) normalised sine embedding of an unpadded H×W map (upstream PositionEmbeddingSineHW with
    temperatures 20/20, normalize=True, every pixel valid): y channels first, then x."""
    eps = 1e-6
    y = torch.arange(1, h + 1, dtype=torch.float32, device=device)
    x = torch.arange(1, w + 1, dtype=torch.float32, device=device)
    hf = y[-1:]
    wf = x[-1:]
    y = y / (hf + eps) * TWO_PI
    x = x / (wf + eps) * TWO_PI
    dim_t = _dim_t(feats, temperature, device)
    pos_y = _interleave_sin_cos(y[:, None] / dim_t)  # H, feats
    pos_x = _interleave_sin_cos(x[:, None] / dim_t)  # W, feats
    ny, nx = pos_y.shape[0], pos_x.shape[0]
    pos = torch.cat([pos_y[:, None, :].expand(ny, nx, feats), pos_x[None, :, :].expand(ny, nx, feats)], -1)
    return pos.permute(2, 0, 1).unsqueeze(0)


def sine_embedding(values: torch.Tensor, feats: int = 128, temperature: float = 10000.0) -> torch.Tensor:
    """[..., n] scalars → [..., n·feats]: each scalar ·2π gets its own sine block (upstream
    get_sine_pos_embed / gen_sineembed_for_position layout, in the given column order)."""
    dim_t = _dim_t(feats, temperature, values.device)
    blocks = [_interleave_sin_cos(values[..., i:i + 1] * TWO_PI / dim_t) for i in range(values.shape[-1])]
    return torch.cat(blocks, -1)


def query_sine_embedding(boxes: torch.Tensor) -> torch.Tensor:
    """(Lq, 4) sigmoid boxes (cx, cy, w, h) → (Lq, 512) embedding in upstream's (y, x, w, h) order."""
    return sine_embedding(boxes[:, [1, 0, 2, 3]], feats=128, temperature=10000.0)


def reference_grid(h, w, device: torch.device) -> torch.Tensor:
    """(H·W, 2) pixel centres (x, y) normalised to [0, 1], row-major (the encoder's reference points)."""
    ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
    ny, nx = ys.shape[0], xs.shape[0]
    return torch.stack([xs[None, :].expand(ny, nx), ys[:, None].expand(ny, nx)], -1).reshape(-1, 2)


def group_visibility_mask(keypoint_mask: torch.Tensor) -> torch.Tensor:
    """(69, 69) bool, True = blocked: inside one group (box + 68 keypoints) a query sees only tokens of the same
    visibility; the box counts as visible."""
    vis = torch.cat([torch.ones_like(keypoint_mask[:1]), keypoint_mask])
    return vis[:, None] != vis[None, :]


def decoder_self_attention_mask(keypoint_mask: torch.Tensor, groups: int = NUM_GROUPS) -> torch.Tensor:
    """The full (groups·69)² bool mask of decoder layers 3-6 (True = blocked): other groups are blocked, and inside
    a group the visibility rule applies. The model uses the 69×69 block directly (group-wise attention); this
    dense form documents and tests the equivalence."""
    block = group_visibility_mask(keypoint_mask)
    eye = torch.eye(groups, dtype=torch.bool, device=keypoint_mask.device)
    same_group = eye[:, None, :, None].expand(groups, GROUP, groups, GROUP)
    inside = block[None, :, None, :].expand(groups, GROUP, groups, GROUP)
    return (~same_group | inside).reshape(groups * GROUP, groups * GROUP)
