"""X-Pose (UniPose, Swin-T) as LivePortrait runs it, one traceable forward from image + text features to the
contract outputs (logits, boxes, keypoints).

The official forward takes list-of-dict targets, pads text to 350 rows, builds a 3450² mask in a Python loop and
calls a compiled CUDA op; this one takes four tensors and computes every size and mask in the graph (see masks.py
and transformer.py for the equivalences). State-dict keys match `torch.load(xpose.pth)['model']` one for one,
including the tied heads (one MLP registered under every official name) and the parameters the official forward
multiplies by zero (label_enc, pos_proj, padding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .masks import (
    GROUP,
    NUM_GROUPS,
    NUM_KEYPOINTS,
    group_visibility_mask,
    image_position_embedding,
    query_sine_embedding,
    reference_grid,
    sine_embedding,
)
from .swin import SwinTransformer
from .transformer import DeformableDecoderLayer, DeformableEncoderLayer, FusionLayer, TextEnhancerLayer

D_MODEL = 256
NUM_QUERIES = 900
NUM_LEVELS = 4
NUM_LAYERS = 6
BOX_LAYERS = 2  # decoder layers that refine boxes only; top-50 selection after the second
INVERSE_SIGMOID_EPS = 1e-3


def inverse_sigmoid(x: torch.Tensor, eps: float = INVERSE_SIGMOID_EPS) -> torch.Tensor:
    """log(x / (1 - x)) with both terms clamped at eps (DETR's convention)."""
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


class MLP(nn.Module):
    """Linear layers with ReLU between them (`layers.i` as upstream)."""

    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class Encoder(nn.Module):
    """Six rounds of (image↔text fusion, text enhancer, deformable image self-attention)."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DeformableEncoderLayer() for _ in range(NUM_LAYERS))
        self.text_layers = nn.ModuleList(TextEnhancerLayer() for _ in range(NUM_LAYERS))
        self.fusion_layers = nn.ModuleList(FusionLayer() for _ in range(NUM_LAYERS))

    def forward(self, src, pos, reference, shapes, text, text_pos):
        for layer, text_layer, fusion in zip(self.layers, self.text_layers, self.fusion_layers, strict=True):
            src, text = fusion(src, text)
            text = text_layer(text, text_pos)
            src = layer(src, pos, reference, shapes)
        return src, text


class Decoder(nn.Module):
    """Six decoder layers; the heads are shared with the top level (assigned by XPose)."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DeformableDecoderLayer() for _ in range(NUM_LAYERS))
        self.norm = nn.LayerNorm(D_MODEL)
        self.ref_point_head = MLP([2 * D_MODEL, D_MODEL, D_MODEL])
        self.hw = nn.Embedding(17, 2)
        self.hw_append = nn.Embedding(NUM_KEYPOINTS - 17, 2)
        self.bbox_embed: nn.ModuleList
        self.pose_embed: nn.ModuleList
        self.pose_hw_embed: nn.ModuleList


class Transformer(nn.Module):
    """Encoder, two-stage query selection and decoder containers (`transformer.*` keys)."""

    def __init__(self) -> None:
        super().__init__()
        self.level_embed = nn.Parameter(torch.zeros(NUM_LEVELS, D_MODEL))
        self.encoder = Encoder()
        self.decoder = Decoder()
        self.tgt_embed = nn.Embedding(NUM_QUERIES, D_MODEL)
        self.enc_output = nn.Linear(D_MODEL, D_MODEL)
        self.enc_output_norm = nn.LayerNorm(D_MODEL)
        self.enc_out_bbox_embed = MLP([D_MODEL, D_MODEL, D_MODEL, 4])


def encoder_proposals(memory: torch.Tensor, shapes: list[tuple]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-stage anchors: every token proposes a box at its pixel centre, 0.05·2^level wide, as logits; tokens
    whose box leaves (0.01, 0.99) get +inf proposals and zeroed memory (upstream gen_encoder_output_proposals)."""
    proposals = []
    for lvl, (h, w) in enumerate(shapes):
        centre = reference_grid(h, w, memory.device)
        wh = torch.full_like(centre, 0.05 * (2.0**lvl))
        proposals.append(torch.cat([centre, wh], -1))
    proposals = torch.cat(proposals, 0)
    valid = ((proposals > 0.01) & (proposals < 0.99)).all(-1, keepdim=True)
    logits = torch.log(proposals / (1 - proposals))
    logits = logits.masked_fill(~valid, float("inf"))
    return memory.masked_fill(~valid, 0.0), logits


class XPose(nn.Module):
    """image (1,3,H,W) ImageNet-normalised, instance_text (1,512), keypoint_text (68,512), keypoint_mask (68,)
    → logits (1,50), boxes (1,50,4), keypoints (1,50,68,2)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.ModuleList([SwinTransformer()])
        self.transformer = Transformer()
        self.label_enc = nn.Embedding(2001, D_MODEL)  # upstream adds it ×0: loaded, unused
        self.projection = MLP([512, D_MODEL, D_MODEL, D_MODEL])
        self.projection_kpt = MLP([512, D_MODEL, D_MODEL, D_MODEL])
        self.pos_proj = nn.Linear(D_MODEL, 768)  # ×0 upstream
        self.padding = nn.Embedding(1, 768)  # ×0 upstream
        channels = self.backbone[0].num_features[1:]
        self.input_proj = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(c, D_MODEL, 1), nn.GroupNorm(32, D_MODEL)) for c in channels]
            + [nn.Sequential(nn.Conv2d(channels[-1], D_MODEL, 3, 2, 1), nn.GroupNorm(32, D_MODEL))]
        )
        bbox = MLP([D_MODEL, D_MODEL, D_MODEL, 4])
        pose = MLP([D_MODEL, D_MODEL, D_MODEL, 2])
        pose_hw = MLP([D_MODEL, D_MODEL, D_MODEL, 2])
        self.bbox_embed = nn.ModuleList([bbox] * NUM_LAYERS)
        self.pose_embed = nn.ModuleList([pose] * (NUM_LAYERS - BOX_LAYERS + 1))
        self.pose_hw_embed = nn.ModuleList([pose_hw] * (NUM_LAYERS - BOX_LAYERS))
        dec = self.transformer.decoder
        dec.bbox_embed, dec.pose_embed, dec.pose_hw_embed = self.bbox_embed, self.pose_embed, self.pose_hw_embed

    def levels(self, image: torch.Tensor) -> tuple[list[torch.Tensor], list[tuple]]:
        """The four 256-channel maps (strides 8, 16, 32, 64) and their (H, W)."""
        feats = self.backbone[0](image)
        srcs = [proj(f) for proj, f in zip(self.input_proj[:3], feats, strict=True)]
        srcs.append(self.input_proj[3](feats[-1]))
        return srcs, [(s.shape[2], s.shape[3]) for s in srcs]

    def forward(self, image: torch.Tensor, instance_text: torch.Tensor, keypoint_text: torch.Tensor,
                keypoint_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tr, dec = self.transformer, self.transformer.decoder
        text = self.projection(instance_text)  # 1, C: the single instance token
        kpt_embed = self.projection_kpt(keypoint_text)  # 68, C
        text_pos = sine_embedding(torch.ones_like(text[:, :1]), feats=D_MODEL, temperature=10000.0)

        srcs, shapes = self.levels(image)
        src = torch.cat([s.flatten(2)[0].transpose(0, 1) for s in srcs], 0)  # S, C
        pos = torch.cat([image_position_embedding(h, w, image.device).flatten(2)[0].transpose(0, 1)
                         + tr.level_embed[lvl] for lvl, (h, w) in enumerate(shapes)], 0)
        reference = torch.cat([reference_grid(h, w, image.device) for h, w in shapes], 0)
        memory, text = tr.encoder(src, pos, reference, shapes, text, text_pos)

        # two-stage selection of 900 queries by their 'face' score
        out_memory, proposals = encoder_proposals(memory, shapes)
        out_memory = tr.enc_output_norm(tr.enc_output(out_memory))
        scores = (out_memory @ text.transpose(0, 1))[:, 0]
        top = torch.topk(scores, NUM_QUERIES)[1]
        ref = (tr.enc_out_bbox_embed(out_memory) + proposals)[top].sigmoid()
        tgt = tr.tgt_embed.weight

        block_mask = group_visibility_mask(keypoint_mask)
        output = tgt
        for lid in range(NUM_LAYERS):
            query_pos = dec.ref_point_head(query_sine_embedding(ref))
            grouped = lid >= BOX_LAYERS
            output = dec.layers[lid](output, query_pos, ref, text, memory, shapes,
                                     block_mask if grouped else None, GROUP)
            if lid == NUM_LAYERS - 1:
                break
            if lid < BOX_LAYERS:
                new_ref = (self.bbox_embed[lid](output) + inverse_sigmoid(ref)).sigmoid()
                if lid == BOX_LAYERS - 1:
                    output, new_ref = self._select_groups(output, new_ref, text, kpt_embed)
            else:
                new_ref = self._refine(output, ref, lid)
            ref = new_ref

        hs = dec.norm(output).reshape(NUM_GROUPS, GROUP, D_MODEL)
        ref = ref.reshape(NUM_GROUPS, GROUP, 4)
        box_hs, box_ref = hs[:, 0], ref[:, 0]
        logits = (box_hs @ text.transpose(0, 1))[:, 0]
        boxes = (self.bbox_embed[-1](box_hs) + inverse_sigmoid(box_ref)).sigmoid()
        kpt_xy = self.pose_embed[NUM_LAYERS - 1 - BOX_LAYERS](hs[:, 1:])
        keypoints = (kpt_xy + inverse_sigmoid(ref[:, 1:, :2])).sigmoid()
        return logits[None], boxes[None], keypoints[None]

    def _select_groups(self, output, boxes, text, kpt_embed):
        """After layer 2: keep the 50 best boxes and give each 68 keypoint queries (text-initialised content,
        positions from the box and the learned keypoint box sizes). Returns (3450, C) queries, (3450, 4) refs."""
        score = (output @ text.transpose(0, 1))[:, 0]
        top = torch.topk(score, NUM_GROUPS)[1]
        box_ref, box_out = boxes[top], output[top]  # 50, 4 / 50, C
        kpt_out = kpt_embed[None].expand(NUM_GROUPS, NUM_KEYPOINTS, D_MODEL)
        delta_xy = self.pose_embed[-1](kpt_embed)[None, :, :2]  # 1, 68, 2
        kpt_xy = (inverse_sigmoid(box_ref[:, None, :2]) + delta_xy).sigmoid()
        dec = self.transformer.decoder
        kpt_wh = torch.cat([dec.hw.weight, dec.hw_append.weight], 0).sigmoid()[None] * box_ref[:, None, 2:]
        refs = torch.cat([box_ref[:, None], torch.cat([kpt_xy, kpt_wh], -1)], 1).reshape(-1, 4)
        queries = torch.cat([box_out[:, None], kpt_out], 1).reshape(-1, D_MODEL)
        return queries, refs

    def _refine(self, output, ref, lid):
        """Layers 3-5: boxes by bbox_embed, keypoints by pose_embed (x, y) and pose_hw_embed (w, h)."""
        out = output.reshape(NUM_GROUPS, GROUP, D_MODEL)
        unsig = inverse_sigmoid(ref).reshape(NUM_GROUPS, GROUP, 4)
        box = (self.bbox_embed[lid](out[:, 0]) + unsig[:, 0]).sigmoid()
        kpt = out[:, 1:]
        delta = torch.cat([self.pose_embed[lid - BOX_LAYERS](kpt), self.pose_hw_embed[lid - BOX_LAYERS](kpt)], -1)
        kpt_ref = (unsig[:, 1:] + delta).sigmoid()
        return torch.cat([box[:, None], kpt_ref], 1).reshape(-1, 4)
