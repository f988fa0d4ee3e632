"""Strict, key-for-key loading of the official LivePortrait checkpoints into our networks.

Anything that does not line up (missing file, missing key, extra key, wrong shape) raises CheckpointError naming
the key(s) and the file, so a wrong or truncated download fails loudly instead of animating garbage.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .networks import NETWORKS

FAMILIES = ("liveportrait", "liveportrait_animals")
ANIMAL_FAMILY = "liveportrait_animals"
ANIMAL_BASE_MODELS = "base_models_v1.1"  # the current animal release (upstream inference_config *_animal paths)
_MAX_LISTED = 8


class CheckpointError(RuntimeError):
    """A checkpoint is absent or does not match the network it is meant for."""


def checkpoint_sha256(path: Path) -> str:
    """Hex sha256 of a checkpoint file (recorded in the manifest to tie each graph to its weights)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def relative_checkpoint(name: str, family: str = "liveportrait") -> str:
    """Network `name`'s checkpoint relative to a pretrained_weights/ tree. The animal family keeps its four base
    models in `liveportrait_animals/base_models_v1.1/` and uses the *human* stitching/retargeting module, as
    upstream's inference config does."""
    if name not in NETWORKS:
        raise KeyError(f"unknown network {name!r}; known: {', '.join(NETWORKS)}")
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")
    rel = NETWORKS[name].checkpoint
    if family == ANIMAL_FAMILY:
        if rel.startswith("base_models/"):
            return f"{family}/{ANIMAL_BASE_MODELS}/{rel.removeprefix('base_models/')}"
        return f"liveportrait/{rel}"
    return f"{family}/{rel}"


def checkpoint_path(name: str, weights_root: Path, family: str = "liveportrait") -> Path:
    """Where network `name`'s checkpoint lives in a pretrained_weights/ tree."""
    return Path(weights_root) / relative_checkpoint(name, family)


def strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the `module.` prefix DataParallel/DDP training leaves on keys."""
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def _read(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path}. Put the official LivePortrait weights in pretrained_weights/ "
            "(same tree as the official release), or write random test weights with "
            "`python -m export.fixtures --out DIR`."
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(data).__name__}, expected a dict of tensors")
    return dict(data)


def listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")


def state_dict_problems(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """What keeps `state_dict` from having exactly the model's keys with the model's shapes (empty: it fits)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing key(s): {listing(missing)}")
    if unexpected:
        problems.append(f"unexpected key(s): {listing(unexpected)}")
    for key, ref in expected.items():
        got = state_dict.get(key)
        if got is None:
            continue
        if not isinstance(got, torch.Tensor):
            problems.append(f"key {key} holds a {type(got).__name__}, expected a tensor of shape {tuple(ref.shape)}")
        elif tuple(got.shape) != tuple(ref.shape):
            problems.append(f"wrong shape for {key}: expected {tuple(ref.shape)}, got {tuple(got.shape)}")
    return problems


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError unless `state_dict` has exactly the model's keys with the model's shapes."""
    problems = state_dict_problems(model, state_dict)
    if problems:
        raise CheckpointError(f"{source} does not match {type(model).__name__}: " + "; ".join(problems))


def load_network(name: str, weights_root: Path, family: str = "liveportrait") -> nn.Module:
    """Build network `name`, load its official checkpoint strictly and return it in eval mode."""
    path = checkpoint_path(name, weights_root, family)
    spec = NETWORKS[name]
    data = _read(path)
    source = str(path)
    if spec.nested_key is not None:
        if spec.nested_key not in data:
            raise CheckpointError(
                f"{path} has no entry {spec.nested_key!r} (found: {listing(sorted(map(str, data)))})"
            )
        data = data[spec.nested_key]
        source = f"{path}[{spec.nested_key!r}]"
        if not isinstance(data, Mapping):
            raise CheckpointError(f"{source} holds a {type(data).__name__}, expected a state_dict")
    state_dict = strip_module_prefix(data)
    model = spec.factory()
    check_state_dict(model, state_dict, source)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def load_all(weights_root: Path, family: str = "liveportrait") -> dict[str, nn.Module]:
    """Every registered network of one family, loaded strictly (the nested stitching file is read once per MLP)."""
    return {name: load_network(name, weights_root, family) for name in NETWORKS}
