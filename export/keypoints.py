"""Torch versions of the keypoint math (rotation, transform), used for realistic probe inputs and the bench.

The runtime has its own numpy versions (runtime/motion.py); tests check the two agree.
"""

from __future__ import annotations

import math

import torch


def rotation_matrix(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Degrees (N×1 each) → N×3×3, composed Rz·Ry·Rx and transposed so that kp @ R rotates row vectors."""
    x, y, z = (a.reshape(-1) * (math.pi / 180.0) for a in (pitch, yaw, roll))
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rx = torch.stack([one, zero, zero, zero, x.cos(), -x.sin(), zero, x.sin(), x.cos()], 1).reshape(-1, 3, 3)
    ry = torch.stack([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()], 1).reshape(-1, 3, 3)
    rz = torch.stack([z.cos(), -z.sin(), zero, z.sin(), z.cos(), zero, zero, zero, one], 1).reshape(-1, 3, 3)
    return (rz @ ry @ rx).transpose(1, 2)


def transform_keypoints(
    kp: torch.Tensor,
    pitch: torch.Tensor,
    yaw: torch.Tensor,
    roll: torch.Tensor,
    t: torch.Tensor,
    exp: torch.Tensor,
    scale: torch.Tensor,
) -> torch.Tensor:
    """Canonical keypoints → posed keypoints: scale·(kp·R + exp) + (tx, ty, 0)."""
    n = kp.shape[0]
    out = kp.reshape(n, -1, 3) @ rotation_matrix(pitch, yaw, roll) + exp.reshape(n, -1, 3)
    out = out * scale.reshape(n, 1, 1)
    shift = torch.zeros_like(out[:, :1, :])
    shift[..., :2] = t.reshape(n, 1, 3)[..., :2]
    return out + shift
