"""Warping module (W): warps the source feature volume by the keypoint-driven dense motion."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import GridSample3d, SameBlock2d
from .dense_motion import DenseMotionNetwork


class WarpingNetwork(nn.Module):
    """forward(feature_3d N×32×16×64×64, kp_driving N×21×3, kp_source N×21×3) → {'out', 'occlusion_map', 'deformation'}.

    'out' is the warped N×256×64×64 feature map the SPADE decoder consumes.
    """

    def __init__(
        self,
        num_kp: int = 21,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        reshape_channel: int = 32,
        estimate_occlusion_map: bool = True,
        dense_motion_params: dict | None = None,
    ) -> None:
        super().__init__()
        params = {"block_expansion": 32, "max_features": 1024, "num_blocks": 5, "reshape_depth": 16, "compress": 4}
        params.update(dense_motion_params or {})
        self.dense_motion_network = DenseMotionNetwork(
            num_kp=num_kp, feature_channel=reshape_channel, estimate_occlusion_map=estimate_occlusion_map, **params
        )
        width = block_expansion * (2**num_down_blocks)
        self.third = SameBlock2d(max_features, width, lrelu=True)
        self.fourth = nn.Conv2d(width, width, kernel_size=1)
        self.sampler: nn.Module = GridSample3d()

    def forward(
        self, feature_3d: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> dict[str, torch.Tensor | None]:
        motion = self.dense_motion_network(feature_3d, kp_driving, kp_source)
        occlusion = motion.get("occlusion_map")
        deformation = motion["deformation"]
        warped = self.sampler(feature_3d, deformation)
        n, c, d, h, w = warped.shape
        out = self.fourth(self.third(warped.view(n, c * d, h, w)))
        if occlusion is not None:
            out = out * occlusion
        return {"occlusion_map": occlusion, "deformation": deformation, "out": out}


def set_grid_sampler(warping_module: WarpingNetwork, sampler_module: nn.Module) -> WarpingNetwork:
    """Route both 5-D grid samples of a warping module through `sampler_module` (e.g. a 4-D decomposition)."""
    if any(True for _ in sampler_module.parameters()) or any(True for _ in sampler_module.buffers()):
        raise ValueError("grid sampler must hold no parameters or buffers (it would change the checkpoint keys)")
    warping_module.dense_motion_network.sampler = sampler_module
    warping_module.sampler = sampler_module
    return warping_module
