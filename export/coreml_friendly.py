"""Rewrite our LivePortrait networks so that every exported node is one the CoreML EP (ML Program) takes.

Why: onnxruntime's CoreML EP converts only 1-D/2-D convolution and pooling, 4-D Resize and GridSample, tensors of
rank <= 5 and a fixed op table (no BatchNormalization, Exp, ReduceL2, Gather, Tile...). Every refused node is left to
the CPU EP with a copy at each partition edge, so the warping graph (3-D U-Net) would bounce between CoreML and CPU
dozens of times. ``make_coreml_friendly`` returns a deep copy whose forward passes compute the same values with
accepted ops only:

* BatchNorm3d that follows a convolution is folded into that convolution (eval statistics); any other BatchNorm3d
  (pre-activation ResBlock3d) becomes a per-channel Mul + Add.
* Conv3d (k_d x k_h x k_w, stride 1) becomes ONE Conv2d over depth-folded slices whose output channels hold the k_d
  depth taps, followed by a shift-and-sum of the taps along depth (zero slices concatenated, no Pad). 1x1x1 convs
  are a plain 1x1 Conv2d on N x C x D x (H*W).
* AvgPool3d (1, k, k) and nearest (1, 2, 2) upsampling act per depth slice: they run as 4-D AvgPool / Resize on
  N x (C*D) x H x W.
* The dense motion network's rank-6 tensors (per-keypoint flows, tiled features, Gaussian heatmaps) are laid out as
  rank-5 N x K x (D*H) x W x 3 tensors (every axis <= 16384), the batch is always the -1 of a Reshape (no
  Shape/Gather), the tiling is a Concat and exp(x) is Pow(e, x). Integer indexing is avoided (it exports as Gather).
* GRN's L2 norm (ReduceL2) is sqrt(ReduceSum(x * x)); GELU stays exact (Erf is accepted).

Only the arithmetic order changes (float rounding, ~1e-6 of the output scale). Parameters are copied, never shared,
so the caller's networks stay untouched.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from export.networks.blocks import (
    DownBlock3d,
    HourglassDecoder,
    ResBlock3d,
    UpBlock3d,
    make_coordinate_grid,
)
from export.networks.convnextv2 import GRN
from export.networks.dense_motion import KP_VARIANCE, DenseMotionNetwork
from export.networks.spade import SPADE

__all__ = [
    "ChannelAffine3d",
    "DepthFoldedAvgPool",
    "DepthFoldedUpsample",
    "DepthTapConv3d",
    "fold_batchnorm",
    "make_coreml_friendly",
]

# (parent type, conv attribute, batch-norm attribute that directly follows that conv)
_CONV_BN_PAIRS: tuple[tuple[type[nn.Module], str, str], ...] = (
    (DownBlock3d, "conv", "norm"),
    (UpBlock3d, "conv", "norm"),
    (HourglassDecoder, "conv", "norm"),
    (DenseMotionNetwork, "compress", "norm"),
    (ResBlock3d, "conv1", "norm2"),  # conv1 → norm2 → ReLU → conv2; norm1 comes first and cannot be folded
)


def _bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, shift) with bn(x) == x * scale + shift in eval mode."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("batch norm without running statistics cannot be rewritten as a fixed affine map")
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    return scale, shift


@torch.no_grad()
def fold_batchnorm(conv: nn.Conv3d, bn: nn.BatchNorm3d) -> nn.Conv3d:
    """A new Conv3d equal to bn(conv(x)) with eval statistics (folded in float64, stored in the conv's dtype)."""
    if conv.out_channels != bn.num_features:
        raise ValueError(f"cannot fold a {bn.num_features}-channel batch norm into a {conv.out_channels}-channel conv")
    scale, shift = _bn_scale_shift(bn)
    folded = copy.deepcopy(conv)
    dtype = conv.weight.dtype
    folded.weight.copy_((conv.weight.double() * scale.view(-1, 1, 1, 1, 1)).to(dtype))
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    if folded.bias is None:
        folded.bias = nn.Parameter(torch.zeros_like(conv.weight[:, 0, 0, 0, 0]))
    folded.bias.copy_((bias * scale + shift).to(dtype))
    return folded


class ChannelAffine3d(nn.Module):
    """Eval-mode BatchNorm3d as x * scale + shift (Mul + Add): the CoreML EP has no BatchNormalization builder."""

    def __init__(self, bn: nn.BatchNorm3d) -> None:
        super().__init__()
        scale, shift = _bn_scale_shift(bn)
        dtype = bn.running_var.dtype
        self.register_buffer("scale", scale.to(dtype).view(1, -1, 1, 1, 1))
        self.register_buffer("shift", shift.to(dtype).view(1, -1, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class DepthTapConv3d(nn.Module):
    """Conv3d (stride 1, no dilation, no groups, zero padding) computed with a single 4-D convolution.

    The input's depth slices are folded into the batch; one Conv2d produces, for every slice, the response of each
    of the k_d depth taps (k_d * O output channels); output slice d then sums tap t of input slice d + t - pad_d
    (zero outside the volume).
    Same multiply-adds as the 3-D convolution, only the summation order differs.
    """

    def __init__(self, conv: nn.Conv3d) -> None:
        super().__init__()
        if conv.groups != 1 or any(s != 1 for s in conv.stride) or any(d != 1 for d in conv.dilation):
            raise ValueError(
                f"DepthTapConv3d supports stride 1, dilation 1, groups 1; got stride {conv.stride}, "
                f"dilation {conv.dilation}, groups {conv.groups}"
            )
        if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
            raise ValueError(f"DepthTapConv3d needs explicit zero padding, got {conv.padding!r}/{conv.padding_mode}")
        out_ch, in_ch, kd, kh, kw = conv.weight.shape
        self.out_channels, self.in_channels, self.taps = int(out_ch), int(in_ch), int(kd)
        self.pad_d, pad_h, pad_w = (int(p) for p in conv.padding)
        self.pointwise = (kd, kh, kw) == (1, 1, 1) and (pad_h, pad_w) == (0, 0) and self.pad_d == 0
        # Tap-major stacking: output channel t*O + o holds weight[o, :, t].
        stacked = conv.weight.detach().permute(2, 0, 1, 3, 4).reshape(kd * out_ch, in_ch, kh, kw).clone()
        self.conv = nn.Conv2d(in_ch, kd * out_ch, (kh, kw), padding=(pad_h, pad_w), bias=False)
        self.conv.weight = nn.Parameter(stacked)
        bias = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(out_ch, dtype=stacked.dtype)
        if self.pointwise:
            self.conv.bias = nn.Parameter(bias)
        self.register_buffer("bias", bias.view(1, 1, 1, -1, 1))

    def forward(self, x: torch.Tensor, upsample: int = 1) -> torch.Tensor:
        """The convolution of `x`, or of `x` nearest-upsampled ×`upsample` in H and W (UpBlock3d's order).

        The upsampling runs on the (N*D) x C x H x W slices, right before the 2-D convolution: the same numbers as
        upsampling the 5-D volume first (nearest copies values), a quarter of the layout traffic at ×2, and the
        exported Resize then feeds the Conv directly, the form `export/polyphase.py` rewrites.
        """
        if self.pointwise and upsample != 1:  # its bias lives in the conv: upsample the volume, then the 1x1x1 path
            x = DepthFoldedUpsample(upsample)(x)
        _, channels, depth, height, width = (int(s) for s in x.shape)
        if self.pointwise:  # 1x1x1: no spatial mixing, so depth can stay where it is
            y = self.conv(x.reshape(-1, channels, depth, height * width))
            return y.reshape(-1, self.out_channels, depth, height, width)
        slices = x.transpose(1, 2).reshape(-1, channels, height, width)  # (N*D) x C x H x W
        if upsample != 1:  # only reached by non-pointwise convs
            slices = F.interpolate(slices, scale_factor=upsample, mode="nearest")
        responses = self.conv(slices)
        height, width = int(responses.shape[2]), int(responses.shape[3])  # differ from the input's if not 'same'
        taps = responses.reshape(-1, depth, self.taps, self.out_channels, height * width)
        pad = self.pad_d
        parts = [taps[:, :pad] * 0.0, taps, taps[:, :pad] * 0.0] if pad else [taps]  # zeros without ConstantOfShape
        padded = torch.cat(parts, dim=1) if pad else taps  # N x (D + 2 pad) x k_d x O x HW
        out_depth = depth + 2 * pad - self.taps + 1
        if out_depth < 1 or pad > depth:
            raise ValueError(f"depth {depth} is too small for a {self.taps}-tap conv with padding {pad}")
        # Slices, not integer indexing: an index would export as Gather, which the CoreML EP lacks.
        out = padded[:, 0:out_depth, 0:1]
        for t in range(1, self.taps):
            out = out + padded[:, t : t + out_depth, t : t + 1]
        out = out + self.bias  # N x D' x 1 x O x HW
        return out.reshape(-1, out_depth, self.out_channels, height, width).transpose(1, 2)


class DepthFoldedAvgPool(nn.Module):
    """AvgPool3d with kernel (1, k, k) as a 4-D AvgPool on N x (C*D) x H x W (pooling never mixes depth slices)."""

    def __init__(self, pool: nn.AvgPool3d) -> None:
        super().__init__()
        kernel = _triple(pool.kernel_size)
        stride = _triple(pool.stride if pool.stride is not None else pool.kernel_size)
        padding = _triple(pool.padding)
        if kernel[0] != 1 or stride[0] != 1 or padding[0] != 0:
            raise ValueError(f"only (1, k, k) average pools keep depth; got kernel {kernel}, stride {stride}")
        self.pool = nn.AvgPool2d(
            kernel[1:], stride[1:], padding[1:], ceil_mode=pool.ceil_mode, count_include_pad=pool.count_include_pad
        )
        if pool.divisor_override is not None:
            raise ValueError("AvgPool3d divisor_override has no 4-D equivalent here")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, channels, depth, height, width = (int(s) for s in x.shape)
        y = self.pool(x.reshape(-1, channels * depth, height, width))
        return y.reshape(-1, channels, depth, int(y.shape[2]), int(y.shape[3]))


class DepthFoldedUpsample(nn.Module):
    """Nearest (1, s, s) upsampling of N x C x D x H x W as a 4-D Resize on N x (C*D) x H x W."""

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.scale = int(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, channels, depth, height, width = (int(s) for s in x.shape)
        y = F.interpolate(x.reshape(-1, channels * depth, height, width), scale_factor=self.scale, mode="nearest")
        return y.reshape(-1, channels, depth, height * self.scale, width * self.scale)


class _UpBlock(nn.Module):
    """UpBlock3d with its upsampling per depth slice and its batch norm already folded into the conv."""

    def __init__(self, block: UpBlock3d) -> None:
        super().__init__()
        self.up = DepthFoldedUpsample(2)
        self.conv = block.conv
        self.norm = block.norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.conv, DepthTapConv3d):  # upsample the depth slices inside, right before the 2-D conv
            return F.relu(self.norm(self.conv(x, upsample=2)))
        return F.relu(self.norm(self.conv(self.up(x))))


class _GRN(nn.Module):
    """GRN with its L2 norm as sqrt(sum(x*x)) (ReduceSum + Sqrt; the CoreML EP has no ReduceL2)."""

    def __init__(self, grn: GRN) -> None:
        super().__init__()
        self.gamma = grn.gamma
        self.beta = grn.beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.sqrt((x * x).sum(dim=(1, 2), keepdim=True))
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class _SPADE(nn.Module):
    """SPADE whose conditioning map is resized by a constant integer factor (Resize needs constant scales)."""

    def __init__(self, spade: SPADE) -> None:
        super().__init__()
        self.param_free_norm = spade.param_free_norm
        self.mlp_shared = spade.mlp_shared
        self.mlp_gamma = spade.mlp_gamma
        self.mlp_beta = spade.mlp_beta

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        normalized = self.param_free_norm(x)
        segmap = _nearest_to(segmap, int(x.shape[2]), int(x.shape[3]))
        hidden = self.mlp_shared(segmap)
        return normalized * (1 + self.mlp_gamma(hidden)) + self.mlp_beta(hidden)


def _nearest_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Nearest resize of N x C x h x w to height x width with a constant integer scale (identity when equal)."""
    h, w = int(x.shape[2]), int(x.shape[3])
    if (h, w) == (height, width):
        return x
    if height % h or width % w:
        raise ValueError(f"nearest resize {h}x{w} -> {height}x{width} is not an integer upscale")
    return F.interpolate(x, scale_factor=(height // h, width // w), mode="nearest")


class _PixelShuffle(nn.Module):
    """PixelShuffle as Reshape/Transpose at rank 5 (DepthToSpace CRD needs static shapes in the CoreML EP)."""

    def __init__(self, shuffle: nn.PixelShuffle) -> None:
        super().__init__()
        self.factor = int(shuffle.upscale_factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, channels, height, width = (int(s) for s in x.shape)
        r = self.factor
        out_ch = channels // (r * r)
        y = x.reshape(-1, r, r, height, width).permute(0, 3, 1, 4, 2)  # (N*C') x H x r x W x r
        return y.reshape(-1, out_ch, height * r, width * r)


def _gaussian(grid: torch.Tensor, kp: torch.Tensor) -> torch.Tensor:
    """kp2gaussian on grid 1 x 1 x (D*H) x W x 3 for keypoints N x K x 1 x 1 x 3 → N x K x (D*H) x W.

    exp(x) is written Pow(e, x): the CoreML EP has no Exp builder (relative difference ~1e-7 near the peak).
    """
    centred = grid - kp
    return torch.pow(math.e, -0.5 * (centred**2).sum(-1) / KP_VARIANCE)


class _DenseMotion(nn.Module):
    """DenseMotionNetwork with rank <= 5 tensors, no dimension above 16384 and no batch-dependent shape ops.

    Per-keypoint tensors are laid out N x K x (D*H) x W [x 3]: (D*H) = 1024 keeps every axis under CoreML's 16384
    limit, where a flat D*H*W axis (65536) would not.
    """

    def __init__(self, net: DenseMotionNetwork) -> None:
        super().__init__()
        self.num_kp = net.num_kp
        self.hourglass = net.hourglass
        self.mask = net.mask
        self.compress = net.compress
        self.norm = net.norm
        self.occlusion = net.occlusion
        self.sampler = net.sampler

    def forward(
        self, feature: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        _, _, d, h, w = (int(s) for s in feature.shape)
        k, k1, rows = self.num_kp, self.num_kp + 1, d * h
        feature = F.relu(self.norm(self.compress(feature)))
        c = int(feature.shape[1])

        grid = make_coordinate_grid((d, h, w), kp_source).reshape(1, 1, rows, w, 3)
        kp_d = kp_driving.reshape(-1, k, 1, 1, 3)
        kp_s = kp_source.reshape(-1, k, 1, 1, 3)
        background = grid + kp_d[:, :1] * 0.0  # identity flow with the batch size, without Expand/Tile
        motions = torch.cat([background, grid - kp_d + kp_s], dim=1)  # N x K1 x DH x W x 3

        folded = feature.reshape(-1, 1, c * d, h, w)
        tiled = torch.cat([folded] * k1, dim=1).reshape(-1, c, d, h, w)  # (N*K1) x C x D x H x W
        deformed = self.sampler(tiled, motions.reshape(-1, d, h, w, 3)).reshape(-1, k1, c, rows, w)

        heat = _gaussian(grid, kp_d) - _gaussian(grid, kp_s)  # N x K x DH x W
        heat = torch.cat([heat[:, :1] * 0.0, heat], dim=1).reshape(-1, k1, 1, rows, w)
        stacked = torch.cat([heat, deformed], dim=2).reshape(-1, k1 * (c + 1), d, h, w)
        prediction = self.hourglass(stacked)

        mask = F.softmax(self.mask(prediction), dim=1)  # N x K1 x D x H x W
        flows = motions.permute(0, 1, 4, 2, 3)  # N x K1 x 3 x DH x W
        deformation = (flows * mask.reshape(-1, k1, 1, rows, w)).sum(dim=1)
        deformation = deformation.reshape(-1, 3, d, h, w).permute(0, 2, 3, 4, 1)

        out = {"mask": mask, "deformation": deformation}
        if self.occlusion is not None:
            pc = int(prediction.shape[1])
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction.reshape(-1, pc * d, h, w)))
        return out


def _triple(value: int | tuple[int, ...]) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (value, value, value)
    if len(value) != 3:
        raise ValueError(f"expected 3 values, got {value!r}")
    return (int(value[0]), int(value[1]), int(value[2]))


def _fold_pairs(root: nn.Module) -> None:
    """Fold every batch norm that directly follows a Conv3d into it (in place on the copy)."""
    for module in root.modules():
        for parent_type, conv_name, bn_name in _CONV_BN_PAIRS:
            if not isinstance(module, parent_type):
                continue
            conv, bn = getattr(module, conv_name), getattr(module, bn_name)
            if isinstance(conv, nn.Conv3d) and isinstance(bn, nn.BatchNorm3d):
                setattr(module, conv_name, fold_batchnorm(conv, bn))
                setattr(module, bn_name, nn.Identity())


def _replacement(module: nn.Module) -> nn.Module | None:
    """The CoreML-friendly stand-in for one module (children already rewritten), or None to keep it."""
    if isinstance(module, nn.Conv3d):
        return DepthTapConv3d(module)
    if isinstance(module, nn.BatchNorm3d):
        return ChannelAffine3d(module)
    if isinstance(module, nn.AvgPool3d):
        return DepthFoldedAvgPool(module)
    if isinstance(module, UpBlock3d):
        return _UpBlock(module)
    if isinstance(module, DenseMotionNetwork):
        return _DenseMotion(module)
    if isinstance(module, GRN):
        return _GRN(module)
    if isinstance(module, SPADE):
        return _SPADE(module)
    if isinstance(module, nn.PixelShuffle):
        return _PixelShuffle(module)
    return None


def _rewrite(module: nn.Module) -> nn.Module:
    for name, child in list(module._modules.items()):
        if child is not None:
            module._modules[name] = _rewrite(child)
    return _replacement(module) or module


@torch.no_grad()
def make_coreml_friendly(module: nn.Module) -> nn.Module:
    """Deep copy of ``module`` (eval mode) in which every 3-D / rank-6 / non-CoreML op is an equivalent CoreML one.

    Works on any of our networks or contract graph wrappers; modules with nothing to rewrite come back as a plain
    eval-mode copy. The grid sampler is left as it is: swap in ``GridSample3dVia2d`` (before or after) for 4-D
    sampling.
    """
    if module.training:
        raise ValueError("make_coreml_friendly folds eval-mode batch-norm statistics: call .eval() first")
    clone = copy.deepcopy(module).eval()
    _fold_pairs(clone)
    return _rewrite(clone).eval()
