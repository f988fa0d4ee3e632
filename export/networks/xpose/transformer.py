"""The X-Pose deformable transformer: text-aware encoder layers and the box/keypoint decoder layers.

Batch 1 throughout (the detector runs once per source image), tokens first: (L, C). Parameter names follow the
official checkpoint (`transformer.encoder.layers.i.*`, `...text_layers.i.*`, `...fusion_layers.i.*`,
`transformer.decoder.layers.i.*`).

The instance prompt is a single text token: upstream pads it to 350 rows but masks every padded row out of
every attention that reaches an output (fusion vision←text, decoder text cross-attention, the contrastive
logits, whose padded columns are -inf), and the text self-attention is the identity mask, so rows never mix.
We therefore carry only the real row. The one place padded rows could enter is the fusion's
`attn - attn.max()` stabiliser followed by a ±50000 clamp, which changes a softmax only when logits differ by
more than 50000 — never for finite, trained weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .deformable import MSDeformAttn

CLAMP = 50000.0  # upstream BiMultiHeadAttention clamps its logits to ±50000 (fp16 safety); kept for parity


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mha: nn.MultiheadAttention,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """nn.MultiheadAttention's maths on (Lq, C)/(Lk, C) with its own parameters; mask (Lq, Lk) bool True=blocked."""
    c = q.shape[-1]
    heads = mha.num_heads
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
    qh = F.linear(q, w_q, b_q).reshape(-1, heads, c // heads).transpose(0, 1)
    kh = F.linear(k, w_k, b_k).reshape(-1, heads, c // heads).transpose(0, 1)
    vh = F.linear(v, w_v, b_v).reshape(-1, heads, c // heads).transpose(0, 1)
    logits = (qh * (c // heads) ** -0.5) @ kh.transpose(1, 2)
    if mask is not None:
        logits = logits.masked_fill(mask, float("-inf"))
    out = (logits.softmax(-1) @ vh).transpose(0, 1).reshape(-1, c)
    return mha.out_proj(out)


def grouped_attention(x: torch.Tensor, pos: torch.Tensor, mha: nn.MultiheadAttention, group: int,
                      block_mask: torch.Tensor) -> torch.Tensor:
    """Self-attention of decoder layers 3-6: the dense mask blocks every pair of different groups, so attending
    group by group (G, group, C) with the group×group visibility mask is the same computation, 50× smaller."""
    c = x.shape[-1]
    heads = mha.num_heads
    d = c // heads
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
    qk_in = x + pos
    qh = F.linear(qk_in, w_q, b_q).reshape(-1, group, heads, d).permute(0, 2, 1, 3)
    kh = F.linear(qk_in, w_k, b_k).reshape(-1, group, heads, d).permute(0, 2, 1, 3)
    vh = F.linear(x, w_v, b_v).reshape(-1, group, heads, d).permute(0, 2, 1, 3)
    logits = (qh * d**-0.5) @ kh.transpose(-1, -2)  # G, heads, group, group
    logits = logits.masked_fill(block_mask, float("-inf"))
    out = (logits.softmax(-1) @ vh).permute(0, 2, 1, 3).reshape(-1, c)
    return mha.out_proj(out)


class DeformableEncoderLayer(nn.Module):
    """Deformable self-attention over all image tokens, then a ReLU FFN (post-norm)."""

    def __init__(self, dim: int = 256, ffn: int = 2048) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(dim)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn)
        self.linear2 = nn.Linear(ffn, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, src, pos, reference, shapes):
        src = self.norm1(src + self.self_attn(src + pos, reference, src, shapes))
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class TextEnhancerLayer(nn.Module):
    """Text self-attention (each token sees only itself upstream) + FFN, post-norm."""

    def __init__(self, dim: int = 256, heads: int = 4, ffn: int = 1024) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads)
        self.linear1 = nn.Linear(dim, ffn)
        self.linear2 = nn.Linear(ffn, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, text: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        idx = torch.arange(text.shape[0], device=text.device)
        eye = idx[:, None] != idx[None, :]  # every token sees only itself, as upstream's ~eye mask
        qk = text + pos
        text = self.norm1(text + attention(qk, qk, text, self.self_attn, eye))
        return self.norm2(text + self.linear2(F.relu(self.linear1(text))))


class BiMultiHeadAttention(nn.Module):
    """Image↔text cross-attention in both directions at once (GLIP-style fusion)."""

    def __init__(self, v_dim: int = 256, l_dim: int = 256, embed: int = 1024, heads: int = 4) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, embed // heads
        self.scale = self.head_dim**-0.5
        self.v_proj = nn.Linear(v_dim, embed)
        self.l_proj = nn.Linear(l_dim, embed)
        self.values_v_proj = nn.Linear(v_dim, embed)
        self.values_l_proj = nn.Linear(l_dim, embed)
        self.out_v_proj = nn.Linear(embed, v_dim)
        self.out_l_proj = nn.Linear(embed, l_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], self.heads, self.head_dim).transpose(0, 1)  # heads, L, d

    def forward(self, v: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """v (S, C) image tokens, text (T, C) real text tokens (no padding). Returns (delta_v, delta_text)."""
        q = self._heads(self.v_proj(v) * self.scale)
        k = self._heads(self.l_proj(text))
        value_v = self._heads(self.values_v_proj(v))
        value_l = self._heads(self.values_l_proj(text))
        logits = q @ k.transpose(1, 2)  # heads, S, T
        logits = (logits - logits.max()).clamp(-CLAMP, CLAMP)
        logits_t = logits.transpose(1, 2)
        logits_t = (logits_t - logits_t.max(-1, keepdim=True)[0]).clamp(-CLAMP, CLAMP)
        out_v = logits.softmax(-1) @ value_l  # heads, S, d
        out_l = logits_t.softmax(-1) @ value_v  # heads, T, d
        out_v = out_v.transpose(0, 1).reshape(v.shape[0], -1)
        out_l = out_l.transpose(0, 1).reshape(text.shape[0], -1)
        return self.out_v_proj(out_v), self.out_l_proj(out_l)


class FusionLayer(nn.Module):
    """Pre-norm bi-attention with layer-scale (gamma) residuals on both streams."""

    def __init__(self, dim: int = 256, embed: int = 1024, heads: int = 4) -> None:
        super().__init__()
        self.layer_norm_v = nn.LayerNorm(dim)
        self.layer_norm_l = nn.LayerNorm(dim)
        self.attn = BiMultiHeadAttention(dim, dim, embed, heads)
        self.gamma_v = nn.Parameter(torch.full((dim,), 1e-4))
        self.gamma_l = nn.Parameter(torch.full((dim,), 1e-4))

    def forward(self, v: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = self.layer_norm_v(v)
        text = self.layer_norm_l(text)
        delta_v, delta_l = self.attn(v, text)
        return v + self.gamma_v * delta_v, text + self.gamma_l * delta_l


class DeformableDecoderLayer(nn.Module):
    """Query self-attention, text cross-attention, deformable image cross-attention, FFN (all post-norm)."""

    def __init__(self, dim: int = 256, heads: int = 8, ffn: int = 2048) -> None:
        super().__init__()
        self.cross_attn = MSDeformAttn(dim)
        self.norm1 = nn.LayerNorm(dim)
        self.ca_text = nn.MultiheadAttention(dim, heads)
        self.catext_norm = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn)
        self.linear2 = nn.Linear(ffn, dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, tgt, query_pos, reference, text, memory, shapes, group_mask=None, group: int = 0):
        """tgt/query_pos (Lq, C); reference (Lq, 4) sigmoid boxes; text (T, C); memory (S, C).
        group_mask None: every query sees every query; else (group, group) visibility mask per group."""
        if group_mask is None:
            qk = tgt + query_pos
            sa = attention(qk, qk, tgt, self.self_attn)
        else:
            sa = grouped_attention(tgt, query_pos, self.self_attn, group, group_mask)
        tgt = self.norm2(tgt + sa)
        tgt = self.catext_norm(tgt + attention(tgt + query_pos, text, text, self.ca_text))
        tgt = self.norm1(tgt + self.cross_attn(tgt + query_pos, reference, memory, shapes))
        return self.norm3(tgt + self.linear2(F.relu(self.linear1(tgt))))
