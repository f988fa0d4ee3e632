"""Dense motion network: turns 21 sparse keypoint motions into a dense 3-D deformation field and an occlusion map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import GridSample3d, Hourglass, kp2gaussian, make_coordinate_grid

KP_VARIANCE = 0.01


class DenseMotionNetwork(nn.Module):
    """forward(feature N×32×D×H×W, kp_driving N×K×3, kp_source N×K×3) → {'mask', 'deformation', 'occlusion_map'}.

    All 5-D sampling goes through `self.sampler` so the exporter can swap in a 4-D decomposition.
    """

    def __init__(
        self,
        block_expansion: int = 32,
        num_blocks: int = 5,
        max_features: int = 1024,
        num_kp: int = 21,
        feature_channel: int = 32,
        reshape_depth: int = 16,
        compress: int = 4,
        estimate_occlusion_map: bool = True,
    ) -> None:
        super().__init__()
        self.num_kp = num_kp
        self.hourglass = Hourglass(block_expansion, (num_kp + 1) * (compress + 1), num_blocks, max_features)
        self.mask = nn.Conv3d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress, affine=True)
        self.occlusion = (
            nn.Conv2d(self.hourglass.out_filters * reshape_depth, 1, kernel_size=7, padding=3)
            if estimate_occlusion_map
            else None
        )
        self.sampler: nn.Module = GridSample3d()

    def sparse_motions(self, feature: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> torch.Tensor:
        """Per-keypoint backward flows N×(K+1)×D×H×W×3: identity for the background, then grid − kp_d + kp_s."""
        n, _, d, h, w = feature.shape
        identity = make_coordinate_grid((d, h, w), kp_source).view(1, 1, d, h, w, 3)
        shifted = identity - kp_driving.view(n, self.num_kp, 1, 1, 1, 3)
        shifted = shifted + kp_source.view(n, self.num_kp, 1, 1, 1, 3)
        return torch.cat([identity.repeat(n, 1, 1, 1, 1, 1), shifted], dim=1)

    def deformed_features(self, feature: torch.Tensor, motions: torch.Tensor) -> torch.Tensor:
        """Sample the compressed feature once per flow: N×(K+1)×C×D×H×W."""
        n, c, d, h, w = feature.shape
        k1 = self.num_kp + 1
        tiled = feature.unsqueeze(1).repeat(1, k1, 1, 1, 1, 1).view(n * k1, c, d, h, w)
        sampled = self.sampler(tiled, motions.view(n * k1, d, h, w, 3))
        return sampled.view(n, k1, c, d, h, w)

    def heatmaps(
        self, spatial: tuple[int, int, int], kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> torch.Tensor:
        """Gaussian(kp_driving) − Gaussian(kp_source) with a zero background channel first: N×(K+1)×1×D×H×W."""
        diff = kp2gaussian(kp_driving, spatial, KP_VARIANCE) - kp2gaussian(kp_source, spatial, KP_VARIANCE)
        zeros = torch.zeros_like(diff[:, :1])
        return torch.cat([zeros, diff], dim=1).unsqueeze(2)

    def forward(
        self, feature: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        n, _, d, h, w = feature.shape
        feature = F.relu(self.norm(self.compress(feature)))

        motions = self.sparse_motions(feature, kp_driving, kp_source)
        deformed = self.deformed_features(feature, motions)
        heat = self.heatmaps((d, h, w), kp_driving, kp_source)

        stacked = torch.cat([heat, deformed], dim=2).view(n, -1, d, h, w)
        prediction = self.hourglass(stacked)

        mask = F.softmax(self.mask(prediction), dim=1)
        flows = motions.permute(0, 1, 5, 2, 3, 4)  # N×(K+1)×3×D×H×W
        deformation = (flows * mask.unsqueeze(2)).sum(dim=1).permute(0, 2, 3, 4, 1)

        out = {"mask": mask, "deformation": deformation}
        if self.occlusion is not None:
            pn, _, _, ph, pw = prediction.shape
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction.view(pn, -1, ph, pw)))
        return out
