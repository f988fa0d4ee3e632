"""Random X-Pose weights in the official `xpose.pth` layout, for tests and CI.

`{'model': {'module.' + key: tensor}}` with every tied head stored under each of its names (equal values), the
constant Swin buffers, and a few `clip_model.*` extras (as a release that bundles CLIP would carry) so the
loader's skip path runs. Weights are fan-in scaled so activations stay finite through 6+6 transformer layers,
sampling offsets follow Deformable DETR's radial pattern, and the score logits spread (not all equal) on images.
Also writes the two CLIP text caches as pickles of fp16 tensors, the official `clip_embedding_{9,68}.pkl` format.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn

from export.networks.xpose import XPose
from export.networks.xpose.deformable import MSDeformAttn

XPOSE_CHECKPOINT = "xpose.pth"
CLIP_EXTRA_KEYS = {  # shapes of CLIP ViT-B/32 text-model tensors
    "clip_model.ln_final.weight": (512,),
    "clip_model.logit_scale": (),
    "clip_model.positional_embedding": (77, 512),
    "clip_model.text_projection": (512, 512),
}


def _radial_offsets(attn: MSDeformAttn) -> torch.Tensor:
    """Deformable DETR's sampling-offset bias: head h looks along angle 2πh/heads, point i at distance i+1."""
    theta = torch.arange(attn.heads, dtype=torch.float32) * (2.0 * math.pi / attn.heads)
    grid = torch.stack([theta.cos(), theta.sin()], -1)
    grid = grid / grid.abs().max(-1, keepdim=True)[0]
    grid = grid.view(attn.heads, 1, 1, 2).repeat(1, attn.levels, attn.points, 1)
    grid = grid * torch.arange(1, attn.points + 1, dtype=torch.float32).view(1, 1, -1, 1)
    return grid.reshape(-1)


@torch.no_grad()
def random_xpose(seed: int = 0) -> XPose:
    """XPose with deterministic, well-scaled random weights (eval mode)."""
    gen = torch.Generator().manual_seed(seed)
    model = XPose().eval()

    def randn(shape, std: float, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=gen) * std + mean

    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            module.weight.copy_(randn(module.weight.shape, 1.0 / math.sqrt(module.weight[0].numel())))
            if module.bias is not None:
                module.bias.copy_(randn(module.bias.shape, 0.02))
        elif isinstance(module, nn.MultiheadAttention):
            module.in_proj_weight.copy_(randn(module.in_proj_weight.shape, 1.0 / math.sqrt(module.embed_dim)))
            module.in_proj_bias.copy_(randn(module.in_proj_bias.shape, 0.02))
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            module.weight.copy_(randn(module.weight.shape, 0.05, 1.0))
            module.bias.copy_(randn(module.bias.shape, 0.02))
        elif isinstance(module, nn.Embedding):
            module.weight.copy_(randn(module.weight.shape, 1.0))
    for module in model.modules():
        if isinstance(module, MSDeformAttn):
            module.sampling_offsets.weight.copy_(randn(module.sampling_offsets.weight.shape, 0.02))
            module.sampling_offsets.bias.copy_(_radial_offsets(module) + randn((module.sampling_offsets.out_features,),
                                                                                0.1))
            module.attention_weights.weight.copy_(randn(module.attention_weights.weight.shape, 0.05))
    for name, param in model.named_parameters():
        if name.endswith(("gamma_v", "gamma_l")):
            param.copy_(randn(param.shape, 0.02, 0.1))
        elif name.endswith("relative_position_bias_table"):
            param.copy_(randn(param.shape, 0.02))
        elif name == "transformer.level_embed":
            param.copy_(randn(param.shape, 1.0))
        elif name == "transformer.tgt_embed.weight":
            # query content is paired with the encoder's score *rank*; random scores have near-ties (gaps ~1e-5
            # among 900 dense values) that two runtimes may order differently. One shared content row makes the
            # decoder exactly permutation-equivariant, so such a swap permutes queries and changes no output.
            param.copy_(randn((1, param.shape[1]), 1.0).expand_as(param))
    # last layers of the box / keypoint heads: small corrections around the anchors, as trained DETRs have
    for mlp in (model.bbox_embed[0], model.pose_embed[0], model.pose_hw_embed[0], model.transformer.enc_out_bbox_embed):
        mlp.layers[-1].weight.copy_(randn(mlp.layers[-1].weight.shape, 0.1 / math.sqrt(256)))
    return model


def xpose_payload(seed: int = 0) -> dict:
    """The official checkpoint payload: {'model': {'module.' + key: tensor}} plus CLIP extras."""
    state = {f"module.{k}": v.detach().clone().contiguous() for k, v in random_xpose(seed).state_dict().items()}
    gen = torch.Generator().manual_seed(seed + 1)
    for key, shape in CLIP_EXTRA_KEYS.items():
        state[f"module.{key}"] = torch.randn(shape, generator=gen)
    return {"model": state, "epoch": 0}


def write_xpose_checkpoint(family_dir: Path, seed: int = 0) -> Path:
    """Write `family_dir/xpose.pth` (~260 MB) and the CLIP text pickles; returns the checkpoint path."""
    family_dir = Path(family_dir)
    family_dir.mkdir(parents=True, exist_ok=True)
    path = family_dir / XPOSE_CHECKPOINT
    torch.save(xpose_payload(seed), path)
    write_clip_pickles(family_dir)
    return path


def write_clip_pickles(folder: Path) -> None:
    """clip_embedding_9.pkl / _68.pkl as upstream caches them: {(instances, keypoint names): (ins, kpt)} of fp16
    tensors, from the shipped arrays (keypoint names are placeholders: only the layout matters here)."""
    from export.xpose_text import SHIPPED_TEXT

    arrays = np.load(SHIPPED_TEXT)
    for n in (9, 68):
        key = (("face",), tuple(f"keypoint {i}" for i in range(n)))
        value = (torch.from_numpy(arrays[f"ins_text_embeddings_{n}"].astype(np.float16)),
                 torch.from_numpy(arrays[f"kpt_text_embeddings_{n}"].astype(np.float16)))
        with open(Path(folder) / f"clip_embedding_{n}.pkl", "wb") as fh:
            pickle.dump({key: value}, fh)
