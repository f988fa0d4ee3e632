"""Strict loading of the official `xpose.pth` into our XPose module.

The official loader strips `module.` and loads with strict=False, so anything goes; here a missing key, an unknown
key, a wrong shape, an inconsistent tied group or a wrong constant buffer is a CheckpointError naming the key(s).
Keys a release is known to carry but the detector never uses (the bundled CLIP text model, `clip_model.*`) are
skipped by name and reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from .unipose import XPose

SKIPPED_PREFIXES = ("clip_model.",)  # CLIP ViT-B/32 bundled by X-Pose training: text features are cached instead


def tied_groups(model: torch.nn.Module) -> list[list[str]]:
    """State-dict keys that name one shared tensor (the heads registered under several official names)."""
    by_tensor: dict[int, list[str]] = {}
    for key, value in model.state_dict(keep_vars=True).items():
        by_tensor.setdefault(id(value), []).append(key)
    return [keys for keys in by_tensor.values() if len(keys) > 1]


def check_xpose_state_dict(model: XPose, state_dict: Mapping[str, torch.Tensor], source: str) -> list[str]:
    """Raise CheckpointError unless `state_dict` fits `model` exactly (skippable extras aside); returns the
    skipped keys."""
    from export.checkpoints import CheckpointError, listing, state_dict_problems

    expected = model.state_dict()
    skipped = [k for k in state_dict if k not in expected and k.startswith(SKIPPED_PREFIXES)]
    problems = state_dict_problems(model, {k: v for k, v in state_dict.items() if k not in skipped})
    if not problems:
        for group in tied_groups(model):
            first = state_dict[group[0]]
            differing = [k for k in group[1:] if not torch.equal(state_dict[k], first)]
            if differing:
                problems.append(f"tied key(s) {listing(differing)} differ from {group[0]} (one shared head upstream)")
        for key, ref in model.named_buffers():
            if not torch.equal(state_dict[key].to(ref.dtype), ref):
                problems.append(f"buffer {key} differs from the fixed Swin relative-position index")
    if problems:
        raise CheckpointError(f"{source} does not match XPose: " + "; ".join(problems))
    return skipped


def read_xpose_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """`torch.load(path)['model']` with one leading `module.` stripped from each key (weights only)."""
    from export.checkpoints import CheckpointError, strip_module_prefix

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"X-Pose checkpoint not found: {path}. Put the official xpose.pth (LivePortrait animals release) there, "
            "or write random test weights with `python -m export.fixtures --out DIR`."
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(data, Mapping) or "model" not in data:
        found = sorted(map(str, data)) if isinstance(data, Mapping) else type(data).__name__
        raise CheckpointError(f"{path} has no entry 'model' (found: {found}); expected the official X-Pose layout")
    if not isinstance(data["model"], Mapping):
        raise CheckpointError(f"{path}['model'] holds a {type(data['model']).__name__}, expected a state_dict")
    return strip_module_prefix(data["model"])


def load_xpose(path: Path) -> tuple[XPose, list[str]]:
    """Build XPose, load `path` strictly and return (model in eval mode, skipped extra keys)."""
    state_dict = read_xpose_checkpoint(path)
    model = XPose()
    skipped = check_xpose_state_dict(model, state_dict, f"{path}['model']")
    model.load_state_dict({k: v for k, v in state_dict.items() if k not in skipped}, strict=True)
    return model.eval(), skipped
