"""X-Pose building blocks against independent references: key list, strict loading, deformable sampling, masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from export.checkpoints import CheckpointError
from export.networks.xpose import XPose
from export.networks.xpose.deformable import deformable_sample
from export.networks.xpose.loading import SKIPPED_PREFIXES, check_xpose_state_dict, tied_groups
from export.networks.xpose.masks import GROUP, decoder_self_attention_mask, group_visibility_mask
from export.networks.xpose.transformer import attention, grouped_attention

ASSETS = Path(__file__).parent / "assets"
OFFICIAL = json.loads((ASSETS / "xpose_state_dict_keys.json").read_text())


@pytest.fixture(scope="module")
def model() -> XPose:
    return XPose().eval()


@pytest.fixture(scope="module")
def state(model: XPose) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_state_dict_is_the_official_key_list(model: XPose) -> None:
    keys = OFFICIAL["xpose"]["keys"]
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == keys
    assert len(ours) == OFFICIAL["xpose"]["num_tensors"] == 863
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL["xpose"]["num_params"]
    assert sorted(k for k, _ in model.named_buffers()) == sorted(OFFICIAL["_checkpoint"]["buffers"])
    official_tied = sorted(sorted(g) for g in OFFICIAL["_checkpoint"]["tied_groups"])
    assert sorted(sorted(g) for g in tied_groups(model)) == official_tied


def test_exact_state_dict_loads(model: XPose, state: dict) -> None:
    assert check_xpose_state_dict(model, state, "ok") == []


def test_missing_and_unknown_keys_are_named(model: XPose, state: dict) -> None:
    broken = dict(state)
    del broken["transformer.decoder.layers.3.ca_text.in_proj_weight"]
    broken["transformer.decoder.layers.9.norm1.weight"] = torch.zeros(256)
    with pytest.raises(CheckpointError) as err:
        check_xpose_state_dict(model, broken, "xpose.pth")
    msg = str(err.value)
    assert "missing key(s): transformer.decoder.layers.3.ca_text.in_proj_weight" in msg
    assert "unexpected key(s): transformer.decoder.layers.9.norm1.weight" in msg


def test_wrong_shape_is_named(model: XPose, state: dict) -> None:
    broken = dict(state, **{"transformer.tgt_embed.weight": torch.zeros(300, 256)})
    with pytest.raises(CheckpointError, match=r"wrong shape for transformer.tgt_embed.weight: expected \(900, 256\)"):
        check_xpose_state_dict(model, broken, "xpose.pth")


def test_clip_model_keys_are_skipped_and_reported(model: XPose, state: dict) -> None:
    extra = dict(state, **{"clip_model.ln_final.weight": torch.zeros(512), "clip_model.logit_scale": torch.ones(())})
    assert SKIPPED_PREFIXES == ("clip_model.",)
    assert sorted(check_xpose_state_dict(model, extra, "xpose.pth")) == [
        "clip_model.ln_final.weight", "clip_model.logit_scale"]


def test_inconsistent_tied_head_is_an_error(model: XPose, state: dict) -> None:
    broken = dict(state)
    broken["transformer.decoder.bbox_embed.3.layers.1.bias"] = state["bbox_embed.0.layers.1.bias"] + 1.0
    with pytest.raises(CheckpointError, match=r"tied key\(s\) transformer.decoder.bbox_embed.3.layers.1.bias differ"):
        check_xpose_state_dict(model, broken, "xpose.pth")


def test_wrong_relative_position_buffer_is_an_error(model: XPose, state: dict) -> None:
    key = "backbone.0.layers.2.blocks.4.attn.relative_position_index"
    broken = dict(state, **{key: torch.zeros_like(state[key])})
    with pytest.raises(CheckpointError, match=f"buffer {key} differs"):
        check_xpose_state_dict(model, broken, "xpose.pth")


def _bilinear_reference(value: np.ndarray, x: float, y: float) -> np.ndarray:
    """Hand-written bilinear sample with zero padding, align_corners=False: (x, y) in [0, 1] of a (D, H, W) map."""
    _, h, w = value.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = int(np.floor(px)), int(np.floor(py))
    out = np.zeros(value.shape[0])
    for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * value[:, yy, xx]
    return out


def test_deformable_sampling_matches_hand_bilinear() -> None:
    gen = torch.Generator().manual_seed(3)
    heads, d, lq, points = 2, 3, 5, 3
    sizes = [(6, 7), (3, 4)]
    values = [torch.randn(heads, d, h, w, generator=gen) for h, w in sizes]
    # locations straddle the borders too, so zero padding is exercised
    locations = torch.rand(lq, heads, len(sizes), points, 2, generator=gen) * 1.3 - 0.15
    weights = torch.rand(lq, heads, len(sizes), points, generator=gen)
    got = deformable_sample(values, locations, weights).numpy()
    want = np.zeros((lq, heads, d))
    for q in range(lq):
        for m in range(heads):
            for lvl, v in enumerate(values):
                for p in range(points):
                    x, y = locations[q, m, lvl, p].tolist()
                    want[q, m] += weights[q, m, lvl, p].item() * _bilinear_reference(v[m].numpy(), x, y)
    np.testing.assert_allclose(got, want.reshape(lq, heads * d), atol=1e-5)


def test_deformable_sampling_at_pixel_centres_is_a_gather() -> None:
    value = torch.arange(2 * 4 * 5, dtype=torch.float32).reshape(1, 2, 4, 5)
    # pixel (row 2, col 3) centre in normalised coordinates
    loc = torch.tensor([(3 + 0.5) / 5, (2 + 0.5) / 4]).reshape(1, 1, 1, 1, 2)
    out = deformable_sample([value], loc, torch.ones(1, 1, 1, 1))
    assert out.tolist() == [[value[0, 0, 2, 3].item(), value[0, 1, 2, 3].item()]]


def _rule_mask(kpt_mask: list[float], groups: int) -> np.ndarray:
    """XPOSE.md's rule, literally: a query sees its own group only, and there only tokens of equal visibility
    (the box counts as visible)."""
    vis = [1.0] + kpt_mask
    n = groups * GROUP
    blocked = np.ones((n, n), bool)
    for i in range(n):
        for j in range(n):
            if i // GROUP == j // GROUP and vis[i % GROUP] == vis[j % GROUP]:
                blocked[i, j] = False
    return blocked


@pytest.mark.parametrize("n", [9, 68])
def test_decoder_mask_follows_the_rule(n: int) -> None:
    kpt_mask = [1.0] * n + [0.0] * (68 - n)
    dense = decoder_self_attention_mask(torch.tensor(kpt_mask), groups=3).numpy()
    np.testing.assert_array_equal(dense, _rule_mask(kpt_mask, 3))
    block = group_visibility_mask(torch.tensor(kpt_mask))
    assert block.shape == (GROUP, GROUP) and not block.diagonal().any()
    assert block[0, 1 : n + 1].sum() == 0 and (block[0, n + 1 :].all() if n < 68 else True)


def test_grouped_attention_equals_dense_masked_attention() -> None:
    gen = torch.Generator().manual_seed(5)
    mha = torch.nn.MultiheadAttention(16, 4).eval()
    groups = 3
    x = torch.randn(groups * GROUP, 16, generator=gen)
    pos = torch.randn(groups * GROUP, 16, generator=gen)
    kpt_mask = torch.tensor([1.0] * 9 + [0.0] * 59)
    with torch.no_grad():
        got = grouped_attention(x, pos, mha, GROUP, group_visibility_mask(kpt_mask))
        dense = decoder_self_attention_mask(kpt_mask, groups)
        want = attention(x + pos, x + pos, x, mha, dense)
        # and nn.MultiheadAttention itself with the dense boolean mask, as upstream calls it
        official = mha(x[:, None] + pos[:, None], x[:, None] + pos[:, None], x[:, None], attn_mask=dense)[0][:, 0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, official, atol=1e-5, rtol=1e-5)


def test_single_instance_token_equals_upstream_350_row_padding() -> None:
    """Upstream pads the instance text to 350 rows and masks the padding; carrying only the real row must give
    the same image stream, the same real text row, and the same decoder text cross-attention."""
    from export.networks.xpose.transformer import CLAMP, FusionLayer

    gen = torch.Generator().manual_seed(11)
    fusion = FusionLayer().eval()
    with torch.no_grad():
        fusion.gamma_v.fill_(0.5)
        fusion.gamma_l.fill_(0.5)
    v = torch.randn(40, 256, generator=gen)
    text = torch.randn(1, 256, generator=gen)
    padded = torch.cat([text, torch.randn(349, 256, generator=gen)])  # whatever the padding rows hold
    real = torch.zeros(350, dtype=torch.bool)
    real[0] = True
    a = fusion.attn
    with torch.no_grad():
        got_v, got_l = fusion(v, text)
        # the padded formulation, as upstream's BiAttentionBlock computes it
        vn, ln = fusion.layer_norm_v(v), fusion.layer_norm_l(padded)
        q = a._heads(a.v_proj(vn) * a.scale)
        k, val_v, val_l = a._heads(a.l_proj(ln)), a._heads(a.values_v_proj(vn)), a._heads(a.values_l_proj(ln))
        logits = q @ k.transpose(1, 2)
        logits = (logits - logits.max()).clamp(-CLAMP, CLAMP)
        logits_l = logits.transpose(1, 2)
        logits_l = (logits_l - logits_l.max(-1, keepdim=True)[0]).clamp(-CLAMP, CLAMP)
        out_v = logits.masked_fill(~real[None, None, :], float("-inf")).softmax(-1) @ val_l
        out_l = logits_l.softmax(-1) @ val_v
        want_v = vn + fusion.gamma_v * a.out_v_proj(out_v.transpose(0, 1).reshape(40, -1))
        want_l = ln + fusion.gamma_l * a.out_l_proj(out_l.transpose(0, 1).reshape(350, -1))
        torch.testing.assert_close(got_v, want_v, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got_l, want_l[:1], atol=1e-5, rtol=1e-5)

        mha = torch.nn.MultiheadAttention(256, 8).eval()
        queries = torch.randn(30, 256, generator=gen)
        official = mha(queries[:, None], padded[:, None], padded[:, None], key_padding_mask=~real[None])[0][:, 0]
        torch.testing.assert_close(attention(queries, text, text, mha), official, atol=1e-5, rtol=1e-5)
