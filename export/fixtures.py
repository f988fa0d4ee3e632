"""Random but well-behaved LivePortrait weights in the official file formats, for tests and CI.

`python -m export.fixtures --out DIR [--seed N]` writes DIR as a pretrained_weights/ tree (both model families, plus
stand-in detector/landmark graphs when export.stand_ins is available). The weights are scaled so that activations
stay finite and informative through every network (fan-in scaling, spectral-norm vectors from power iteration), then
calibrated on synthetic portraits (BatchNorm statistics measured, residual/stem outputs mean-centred) so the networks
respond to image content and keypoint motion like trained ones do, and the motion heads give plausible keypoints,
scale, pose and expression that differ between faces. The stand-in graphs use their own numpy stream.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from .networks import NETWORKS
from .networks.blocks import ResBlock3d
from .networks.convnextv2 import GRN, ChannelsFirstLayerNorm, ConvNeXtBlock
from .networks.spade import SPADE
from .networks.stitching import StitchingRetargetingNetwork

FAMILY_SEED_OFFSETS = {"liveportrait": 0, "liveportrait_animals": 7919}
POWER_ITERATIONS = 50
RELU_GAIN = math.sqrt(2.0)
STAMP_NAME = ".fixture_tree.json"
STAT_JITTER = 0.1  # calibrated BatchNorm statistics are perturbed by this fraction (mean: of the std; var: log-scale)
CONV_IMG_GAIN = 2.2  # decoder output conv: logits with std ≈ 1.5 on real portraits, sigmoid mostly unsaturated
MASK_GAIN = 3.0  # dense-motion mask conv: peaked softmax, so each keypoint's flow dominates near that keypoint
OCCLUSION_GAIN = 1.5  # occlusion conv: the occlusion map varies across the image and with the keypoints


def _randn(gen: torch.Generator, shape: torch.Size | tuple[int, ...], std: float, mean: float = 0.0) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=gen) * std + mean


def _fan_in(weight: torch.Tensor) -> int:
    return int(weight[0].numel())


def _power_iteration(weight: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Left/right top singular vectors (u, v) of the weight viewed as out×rest, as spectral norm stores them."""
    mat = weight.reshape(weight.shape[0], -1)
    u = nn.functional.normalize(torch.randn(mat.shape[0], generator=gen), dim=0, eps=1e-12)
    v = torch.zeros(mat.shape[1])
    for _ in range(POWER_ITERATIONS):
        v = nn.functional.normalize(mat.t() @ u, dim=0, eps=1e-12)
        u = nn.functional.normalize(mat @ v, dim=0, eps=1e-12)
    return u, v


def _init_linear_like(module: nn.Module, gen: torch.Generator, gain: float, bias_std: float = 0.01) -> None:
    """Fan-in scaled weight (std = gain / sqrt(fan_in)) and small biases; handles spectral-normed convs too."""
    weight = module.weight_orig if hasattr(module, "weight_orig") else module.weight
    weight.copy_(_randn(gen, weight.shape, gain / math.sqrt(_fan_in(weight))))
    if getattr(module, "bias", None) is not None:
        module.bias.copy_(_randn(gen, module.bias.shape, bias_std))
    if hasattr(module, "weight_orig"):
        u, v = _power_iteration(weight, gen)
        module.weight_u.copy_(u)
        module.weight_v.copy_(v)


def _init_norm(module: nn.Module, gen: torch.Generator) -> None:
    """Affine ≈ identity; BatchNorm running statistics ≈ (0, 1) with a little noise."""
    if getattr(module, "weight", None) is not None:
        module.weight.copy_(_randn(gen, module.weight.shape, 0.05, 1.0))
        module.bias.copy_(_randn(gen, module.bias.shape, 0.02))
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        module.running_mean.copy_(_randn(gen, module.running_mean.shape, 0.05))
        module.running_var.copy_(torch.exp(_randn(gen, module.running_var.shape, 0.1)))
        module.num_batches_tracked.fill_(100000)


def _init_generic(model: nn.Module, gen: torch.Generator) -> None:
    """Default pass: ReLU-gain fan-in scaling for every conv/linear, identity-like norms, small GRN parameters."""
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            _init_linear_like(module, gen, RELU_GAIN)
        elif isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, ChannelsFirstLayerNorm)):
            _init_norm(module, gen)
        elif isinstance(module, GRN):
            module.gamma.copy_(_randn(gen, module.gamma.shape, 0.05))
            module.beta.copy_(_randn(gen, module.beta.shape, 0.02))


def _tune_residual_branches(model: nn.Module, gen: torch.Generator) -> None:
    """Shrink the last layer of residual branches so deep stacks do not blow up (as trained nets tend to)."""
    for module in model.modules():
        if isinstance(module, ConvNeXtBlock):
            _init_linear_like(module.pwconv2, gen, 0.5)
        elif isinstance(module, ResBlock3d):
            _init_linear_like(module.conv2, gen, 0.5)
        elif isinstance(module, SPADE):
            # gamma/beta modulate a unit-variance normalised map: keep them moderate
            _init_linear_like(module.mlp_gamma, gen, 0.3)
            _init_linear_like(module.mlp_beta, gen, 0.3)
    if hasattr(model, "conv_img"):  # decoder output layer: contrasty but mostly unsaturated sigmoid
        conv = model.conv_img[0] if isinstance(model.conv_img, nn.Sequential) else model.conv_img
        _init_linear_like(conv, gen, CONV_IMG_GAIN)


def _tune_motion_heads(model: nn.Module, gen: torch.Generator) -> None:
    """Heads read a LayerNorm-ed 768-vector (≈ unit variance, about a third of it image-dependent after
    calibration): plausible biases, and weight spreads large enough that different faces give different motion."""
    det = model.detector
    width = det.fc_kp.in_features

    def head(linear: nn.Linear, spread: float, bias: torch.Tensor) -> None:
        linear.weight.copy_(_randn(gen, linear.weight.shape, spread / math.sqrt(width)))
        linear.bias.copy_(bias)

    num_kp3 = det.fc_kp.out_features
    head(det.fc_kp, 0.06, torch.rand(num_kp3, generator=gen) * 1.2 - 0.6)  # canonical kp within ±0.6
    head(det.fc_scale, 0.1, torch.tensor([1.2]) + _randn(gen, (1,), 0.05))
    head(det.fc_t, 0.04, _randn(gen, (3,), 0.02))
    head(det.fc_exp, 0.04, _randn(gen, (num_kp3,), 0.01))
    bins = torch.arange(det.fc_pitch.out_features, dtype=torch.float32)
    for linear in (det.fc_pitch, det.fc_yaw, det.fc_roll):
        centre = (det.fc_pitch.out_features - 1) / 2 + float(torch.rand(1, generator=gen) * 6 - 3)  # ±9 degrees
        head(linear, 1.0, -((bins - centre) ** 2) / (2 * 4.0**2))


def _tune_mlp(model: StitchingRetargetingNetwork, gen: torch.Generator) -> None:
    """Retargeting MLPs predict small keypoint corrections: scale the output layer down."""
    _init_linear_like(model.mlp[-1], gen, 0.02, bias_std=0.002)


CALIBRATION_SIZE = 128  # the networks are fully convolutional: half-size probes give the same statistics, 4× faster


def calibration_images(size: int = CALIBRATION_SIZE) -> torch.Tensor:
    """Two synthetic portraits (2×3×size×size in [0, 1]): skin-toned face ellipse with hair, eyes and mouth on a
    gradient background, the second shifted and smaller, so calibration statistics include spatial structure."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    noise_gen = torch.Generator().manual_seed(12345)  # own stream: calibration never shifts the weight draws
    images = []
    for cx, cy, zoom in ((0.0, 0.05, 1.0), (0.12, -0.05, 0.8)):
        x, y = (xx - cx) / zoom, (yy - cy) / zoom
        face = torch.sigmoid((1 - (x / 0.5) ** 2 - (y / 0.68) ** 2) * 12)
        hair = torch.sigmoid((1 - (x / 0.58) ** 2 - ((y + 0.25) / 0.6) ** 2) * 12) * (y < -0.3).float()
        eyes = torch.exp(-(((x.abs() - 0.2) / 0.07) ** 2 + ((y + 0.1) / 0.035) ** 2))
        mouth = torch.exp(-((x / 0.16) ** 2 + ((y - 0.35) / 0.03) ** 2))
        base = torch.stack([0.35 + 0.25 * yy, 0.45 + 0.1 * xx, 0.6 - 0.2 * yy])
        skin = torch.tensor([0.85, 0.65, 0.55]).view(3, 1, 1)
        img = base * (1 - face) + skin * face
        img = img * (1 - 0.8 * hair) + 0.12 * hair
        img = img - 0.55 * eyes - torch.tensor([0.1, 0.4, 0.35]).view(3, 1, 1) * mouth
        images.append(img + torch.randn(3, size, size, generator=noise_gen) * 0.03)
    return torch.stack(images).clamp(0, 1)


def calibration_keypoints(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(kp_driving, kp_source) 2×21×3 for calibrating the warping module: canonical-range points, driving moved."""
    kp_source = torch.rand(2, 21, 3, generator=gen) * 1.2 - 0.6
    return kp_source + _randn(gen, kp_source.shape, 0.05), kp_source


def _quantised(x: torch.Tensor) -> torch.Tensor:
    """Round to fp16 precision so calibrated values do not carry machine-dependent float noise in their last bits."""
    return x.half().float()


def _calibrate(
    model: nn.Module, run: Callable[[], object], gen: torch.Generator, centre: tuple[nn.Module, ...]
) -> None:
    """One forward pass on calibration data that (in execution order, so each layer sees calibrated inputs) sets
    every BatchNorm's running statistics to the measured ones (jittered by STAT_JITTER) and shifts the bias of
    each module in `centre` so its output has zero mean per channel. Trained networks have both properties; random
    ones otherwise normalise with (0, 1) statistics that leave each channel a near-constant, image-independent
    offset, which is why activations (and the animation) barely depended on the input."""
    hooks = []

    def set_stats(bn: nn.modules.batchnorm._BatchNorm, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0].transpose(0, 1).reshape(args[0].shape[1], -1)
        mean, var = x.mean(1), x.var(1, unbiased=False).clamp_min(1e-4)
        bn.running_mean.copy_(_quantised(mean + _randn(gen, mean.shape, STAT_JITTER) * var.sqrt()))
        bn.running_var.copy_(_quantised(var * torch.exp(_randn(gen, var.shape, STAT_JITTER))))

    def centre_bias(module: nn.Module, _args: tuple, out: torch.Tensor) -> torch.Tensor:
        dim = out.dim() - 1 if isinstance(module, nn.Linear) else 1
        mean = out.transpose(0, dim).reshape(out.shape[dim], -1).mean(1)
        new_bias = _quantised(module.bias - mean)
        shape = [1] * out.dim()
        shape[dim] = -1
        out = out + (new_bias - module.bias).view(shape)
        module.bias.copy_(new_bias)
        return out

    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            hooks.append(module.register_forward_pre_hook(set_stats))
    for module in centre:
        hooks.append(module.register_forward_hook(centre_bias))
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()


@lru_cache(maxsize=4)
def _calibration_feature(seed: int) -> torch.Tensor:
    """feature_3d of the calibration images through this seed's appearance network (shared by warping/decoder)."""
    with torch.no_grad():
        return random_network("appearance_feature_extractor", seed)(calibration_images())


def _calibrate_network(name: str, model: nn.Module, gen: torch.Generator, seed: int) -> None:
    """Data calibration per network (see _calibrate); the MLPs have neither BatchNorm nor a need for it."""
    if name == "appearance_feature_extractor":
        _calibrate(model, lambda: model(calibration_images()), gen, (model.first.conv,))
    elif name == "motion_extractor":
        det = model.detector
        centre = tuple(layer[0] if i == 0 else layer[1] for i, layer in enumerate(det.downsample_layers))
        centre += tuple(m.pwconv2 for m in det.modules() if isinstance(m, ConvNeXtBlock))
        _calibrate(model, lambda: det.features(calibration_images()), gen, centre)
    elif name == "warping_module":
        kp_driving, kp_source = calibration_keypoints(gen)
        dm = model.dense_motion_network
        _init_linear_like(dm.mask, gen, MASK_GAIN)
        _init_linear_like(dm.occlusion, gen, OCCLUSION_GAIN)
        _calibrate(model, lambda: model(_calibration_feature(seed), kp_driving, kp_source), gen,
                   (dm.mask, dm.occlusion))


def random_network(name: str, seed: int = 0) -> nn.Module:
    """Network `name` filled with deterministic, well-scaled random weights (eval mode)."""
    spec = NETWORKS[name]
    gen = torch.Generator().manual_seed(seed * 1000 + list(NETWORKS).index(name))
    model = spec.factory().eval()
    with torch.no_grad():
        _init_generic(model, gen)
        _tune_residual_branches(model, gen)
        if name == "motion_extractor":
            _tune_motion_heads(model, gen)
        if isinstance(model, StitchingRetargetingNetwork):
            _tune_mlp(model, gen)
        _calibrate_network(name, model, gen, seed)
    return model


def random_state_dict(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """The checkpoint payload for network `name`: a plain dict of (cloned, contiguous) tensors."""
    return {k: v.detach().clone().contiguous() for k, v in random_network(name, seed).state_dict().items()}


def write_family(family_dir: Path, seed: int = 0) -> None:
    """Write one model family into `family_dir` in the release layout its name implies: liveportrait/ gets
    base_models/*.pth and the nested stitching checkpoint; liveportrait_animals/ gets base_models_v1.1/*.pth only
    (it uses the human stitching module)."""
    from .checkpoints import FAMILIES, relative_checkpoint

    family = Path(family_dir).name
    files: dict[str, dict] = {}
    for name, spec in NETWORKS.items():
        rel = relative_checkpoint(name, family) if family in FAMILIES else f"{family}/{spec.checkpoint}"
        if not rel.startswith(f"{family}/"):
            continue  # another family's file
        rel = rel.removeprefix(f"{family}/")
        state = random_state_dict(name, seed)
        if spec.nested_key is None:
            files[rel] = state
        else:  # official retargeting checkpoint: nested state_dicts with DDP `module.` prefixes
            files.setdefault(rel, {})[spec.nested_key] = {f"module.{k}": v for k, v in state.items()}
    for rel, payload in files.items():
        path = family_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(payload, path)


def write_fixture_tree(out: Path, seed: int = 0, *, stand_ins: bool = True, xpose: bool = False) -> Path:
    """Write a complete pretrained_weights/-style tree at `out` (usable as weights_root) and return `out`.

    stand_ins=False skips the detector/landmark stand-in graphs (for tests that only need the torch weights).
    xpose=True also writes liveportrait_animals/xpose.pth (~260 MB, the animal detector) and the CLIP text caches;
    off by default so test sessions that never export the animal family do not pay for it.
    """
    out = Path(out)
    for family, offset in FAMILY_SEED_OFFSETS.items():
        write_family(out / family, seed + offset)
    if xpose:
        from .xpose_fixture import write_xpose_checkpoint

        write_xpose_checkpoint(out / "liveportrait_animals", seed + FAMILY_SEED_OFFSETS["liveportrait_animals"])
    if not stand_ins:
        return out
    try:
        from .stand_ins import write_stand_in_graphs
    except ImportError:  # stand-in detector/landmark graphs are written by a sibling module when present
        write_stand_in_graphs = None
    if write_stand_in_graphs is not None:
        write_stand_in_graphs(out, seed)
    return out


def ensure_fixture_tree(out: Path, seed: int = 0, *, stand_ins: bool = True, xpose: bool = False) -> Path:
    """write_fixture_tree unless `out` already holds a complete tree from the same call (stamp file), so test
    sessions can share one tree instead of rewriting ~1 GB per module."""
    out = Path(out)
    stamp = out / STAMP_NAME
    wanted = json.dumps({"seed": seed, "stand_ins": stand_ins} | ({"xpose": True} if xpose else {}))
    if stamp.is_file() and stamp.read_text() == wanted:
        return out
    stamp.unlink(missing_ok=True)  # an interrupted rewrite must not look complete
    write_fixture_tree(out, seed, stand_ins=stand_ins, **({"xpose": True} if xpose else {}))
    stamp.write_text(wanted)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write random LivePortrait test weights in the official formats.")
    parser.add_argument("--out", type=Path, required=True, help="directory to fill (used as pretrained_weights/)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-stand-ins", action="store_true", help="skip the detector/landmark stand-in graphs")
    parser.add_argument("--no-xpose", action="store_true",
                        help="skip liveportrait_animals/xpose.pth (the 260 MB animal detector) and its text caches")
    args = parser.parse_args(argv)
    root = write_fixture_tree(args.out, args.seed, stand_ins=not args.no_stand_ins, xpose=not args.no_xpose)
    print(f"fixture weights written to {root}")


if __name__ == "__main__":
    main()
