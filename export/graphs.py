"""Contract wrappers: each turns our networks into the exact inputs/outputs of one `models_onnx/` graph.

The contract (names, shapes, degrees in the motion graph) is what the runtime relies on; keeping it in thin
wrappers leaves the networks themselves key-for-key identical to the official ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

NUM_KP = 21
NUM_BINS = 66


def bins_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """Head-pose logits (N×66) → degrees (N×1): softmax expectation over 3° bins centred at −97.5°."""
    prob = torch.softmax(logits, dim=1)
    index = torch.arange(NUM_BINS, dtype=logits.dtype, device=logits.device)
    return (prob * index).sum(dim=1, keepdim=True) * 3.0 - 97.5


class AppearanceGraph(nn.Module):
    """image N×3×256×256 → feature_3d N×32×16×64×64."""

    def __init__(self, appearance: nn.Module) -> None:
        super().__init__()
        self.appearance = appearance

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.appearance(image)


class MotionGraph(nn.Module):
    """image → pitch, yaw, roll (degrees), t, exp (N×21×3), scale, kp (N×21×3)."""

    def __init__(self, motion: nn.Module) -> None:
        super().__init__()
        self.motion = motion

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.motion(image)
        n = image.shape[0]
        return (
            bins_to_degrees(out["pitch"]),
            bins_to_degrees(out["yaw"]),
            bins_to_degrees(out["roll"]),
            out["t"],
            out["exp"].reshape(n, NUM_KP, 3),
            out["scale"],
            out["kp"].reshape(n, NUM_KP, 3),
        )


class WarpingSpadeGraph(nn.Module):
    """(feature_3d, kp_driving, kp_source) → image N×3×512×512: warping module then SPADE decoder."""

    def __init__(self, warping: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.warping = warping
        self.decoder = decoder

    def forward(self, feature_3d: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> torch.Tensor:
        warped = self.warping(feature_3d, kp_driving, kp_source)["out"]
        return self.decoder(warped)


class WarpingGraph(nn.Module):
    """(feature_3d, kp_driving, kp_source) → warped N×256×64×64: the warping half of a split warping_spade."""

    def __init__(self, warping: nn.Module) -> None:
        super().__init__()
        self.warping = warping

    def forward(self, feature_3d: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> torch.Tensor:
        return self.warping(feature_3d, kp_driving, kp_source)["out"]


class DecoderGraph(nn.Module):
    """warped N×256×64×64 → image N×3×512×512: the SPADE half, so it can run at another precision."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, warped: torch.Tensor) -> torch.Tensor:
        return self.decoder(warped)


class MlpGraph(nn.Module):
    """feat → delta for the stitching and the eye / lip retargeting MLPs."""

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.mlp(feat)


@dataclass(frozen=True)
class GraphSpec:
    """What one contract graph is made of and how it looks from the outside."""

    name: str
    networks: tuple[str, ...]
    inputs: tuple[tuple[str, tuple[int | str, ...]], ...]
    outputs: tuple[tuple[str, tuple[int | str, ...]], ...]


GRAPH_SPECS: dict[str, GraphSpec] = {
    spec.name: spec
    for spec in (
        GraphSpec(
            "appearance_feature_extractor",
            ("appearance_feature_extractor",),
            (("image", ("N", 3, 256, 256)),),
            (("feature_3d", ("N", 32, 16, 64, 64)),),
        ),
        GraphSpec(
            "motion_extractor",
            ("motion_extractor",),
            (("image", ("N", 3, 256, 256)),),
            (
                ("pitch", ("N", 1)),
                ("yaw", ("N", 1)),
                ("roll", ("N", 1)),
                ("t", ("N", 3)),
                ("exp", ("N", NUM_KP, 3)),
                ("scale", ("N", 1)),
                ("kp", ("N", NUM_KP, 3)),
            ),
        ),
        GraphSpec(
            "warping_spade",
            ("warping_module", "spade_generator"),
            (
                ("feature_3d", ("N", 32, 16, 64, 64)),
                ("kp_driving", ("N", NUM_KP, 3)),
                ("kp_source", ("N", NUM_KP, 3)),
            ),
            (("image", ("N", 3, 512, 512)),),
        ),
        GraphSpec(
            "warping",
            ("warping_module",),
            (
                ("feature_3d", ("N", 32, 16, 64, 64)),
                ("kp_driving", ("N", NUM_KP, 3)),
                ("kp_source", ("N", NUM_KP, 3)),
            ),
            (("warped", ("N", 256, 64, 64)),),
        ),
        GraphSpec("spade_decoder", ("spade_generator",), (("warped", ("N", 256, 64, 64)),),
                  (("image", ("N", 3, 512, 512)),)),
        GraphSpec("stitching", ("stitching",), (("feat", ("N", 126)),), (("delta", ("N", 65)),)),
        GraphSpec("eye_retargeting", ("eye",), (("feat", ("N", 66)),), (("delta", ("N", 63)),)),
        GraphSpec("lip_retargeting", ("lip",), (("feat", ("N", 65)),), (("delta", ("N", 63)),)),
    )
}


def build_graph_module(name: str, networks: dict[str, nn.Module]) -> nn.Module:
    """Wrap the loaded networks into the contract module for graph `name`."""
    spec = GRAPH_SPECS[name]
    parts = [networks[n] for n in spec.networks]
    if name == "appearance_feature_extractor":
        return AppearanceGraph(*parts).eval()
    if name == "motion_extractor":
        return MotionGraph(*parts).eval()
    if name == "warping_spade":
        return WarpingSpadeGraph(*parts).eval()
    if name == "warping":
        return WarpingGraph(*parts).eval()
    if name == "spade_decoder":
        return DecoderGraph(*parts).eval()
    return MlpGraph(*parts).eval()
