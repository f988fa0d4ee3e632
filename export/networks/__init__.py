"""Our PyTorch LivePortrait networks and the registry that ties each to its official checkpoint.

NETWORKS maps a network name to (factory, checkpoint path relative to a model family dir such as
`pretrained_weights/liveportrait/`, nested key inside that checkpoint or None for a plain state_dict).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from torch import nn

from .appearance import AppearanceFeatureExtractor
from .dense_motion import DenseMotionNetwork
from .motion import MotionExtractor
from .spade import SPADEDecoder, fold_spectral_norm
from .stitching import EYE_SIZES, LIP_SIZES, STITCHING_SIZES, StitchingRetargetingNetwork
from .warping import WarpingNetwork, set_grid_sampler

STITCHING_CKPT = "retargeting_models/stitching_retargeting_module.pth"


class NetworkSpec(NamedTuple):
    """How to build one network and where its weights live inside a model family directory."""

    factory: Callable[[], nn.Module]
    checkpoint: str
    nested_key: str | None = None


def _mlp(sizes: tuple) -> Callable[[], nn.Module]:
    return lambda: StitchingRetargetingNetwork(sizes[0], sizes[1], sizes[2])


NETWORKS: dict[str, NetworkSpec] = {
    "appearance_feature_extractor": NetworkSpec(
        AppearanceFeatureExtractor, "base_models/appearance_feature_extractor.pth"
    ),
    "motion_extractor": NetworkSpec(MotionExtractor, "base_models/motion_extractor.pth"),
    "warping_module": NetworkSpec(WarpingNetwork, "base_models/warping_module.pth"),
    "spade_generator": NetworkSpec(SPADEDecoder, "base_models/spade_generator.pth"),
    "stitching": NetworkSpec(_mlp(STITCHING_SIZES), STITCHING_CKPT, "retarget_shoulder"),
    "lip": NetworkSpec(_mlp(LIP_SIZES), STITCHING_CKPT, "retarget_mouth"),
    "eye": NetworkSpec(_mlp(EYE_SIZES), STITCHING_CKPT, "retarget_eye"),
}

__all__ = [
    "NETWORKS",
    "NetworkSpec",
    "AppearanceFeatureExtractor",
    "DenseMotionNetwork",
    "MotionExtractor",
    "SPADEDecoder",
    "StitchingRetargetingNetwork",
    "WarpingNetwork",
    "fold_spectral_norm",
    "set_grid_sampler",
]
