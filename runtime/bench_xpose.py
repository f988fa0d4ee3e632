"""The `xpose` stage of `cli.py bench`: xpose.onnx on the engine's device vs our PyTorch X-Pose, in one run.

The graph comes from the animal models folder (default models_onnx/liveportrait_animals/), the PyTorch module from
`<weights>/liveportrait_animals/xpose.pth` (torch imported only here, lazily). Both get the same feeds: a synthetic
photo at the size the runtime feeds a 512×600 source (800×937 after the 800/1333 resize rule) and the real CLIP
text features from the folder's xpose_text.npz. The two engines alternate run by run.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_SIZE = (800, 937)  # (H, W): a 512×600 (W×H) photo after the resize rule
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def parse_size(text: str) -> tuple[int, int]:
    """'HxW' → (H, W)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        h = w = 0
    if h < 192 or w < 192:
        raise ValueError(f"--xpose-size must be HxW with both ≥ 192 (X-Pose needs ≥ 900 encoder tokens), got {text!r}")
    return h, w


def xpose_feeds(models_dir: Path, size: tuple[int, int], n: int = 9, seed: int = 0) -> dict[str, np.ndarray]:
    """Feeds of xpose.onnx: a smooth synthetic photo (ImageNet-normalised) and the folder's text features."""
    h, w = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    blob = np.exp(-(((yy - 0.45 * h) / (0.25 * h)) ** 2 + ((xx - 0.5 * w) / (0.25 * w)) ** 2))[..., None]
    img = np.clip(0.3 + 0.5 * blob * np.array([0.9, 0.7, 0.5], np.float32)
                  + rng.normal(0, 0.03, (h, w, 3)).astype(np.float32), 0, 1)
    with np.load(Path(models_dir) / "xpose_text.npz") as text:
        kpt = np.zeros((68, 512), np.float32)
        kpt[:n] = text[f"kpt_text_embeddings_{n}"]
        instance = text[f"ins_text_embeddings_{n}"].astype(np.float32).reshape(1, 512)
    mask = (np.arange(68) < n).astype(np.float32)
    image = ((img - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)
    return {"image": image, "instance_text": instance, "keypoint_text": kpt, "keypoint_mask": mask}


def xpose_runner(models_dir: Path, device: str, threads: int = 0) -> Any:
    """xpose.onnx loaded on `device` (OpenVINO runner for 'openvino', else an onnxruntime session)."""
    from runtime.manifest import XPOSE_GRAPH, verify_models

    manifest = verify_models(models_dir, [XPOSE_GRAPH], check_hash=False)
    entry = manifest.models[XPOSE_GRAPH]
    path = Path(models_dir) / entry.file
    if device == "openvino":
        from runtime.openvino_backend import OpenVinoRunner

        return OpenVinoRunner(XPOSE_GRAPH, path, output_names=[t.name for t in entry.outputs])
    from runtime.providers import resolve_device
    from runtime.sessions import GraphRunner

    return GraphRunner(XPOSE_GRAPH, path, resolve_device(device), threads=threads)


def torch_xpose_call(weights: Path, feeds: dict[str, np.ndarray], threads: int = 0):
    """A no-grad call of our PyTorch X-Pose on `feeds` (None when torch or the checkpoint is missing)."""
    ckpt = Path(weights) / "liveportrait_animals" / "xpose.pth"
    if importlib.util.find_spec("torch") is None or not ckpt.is_file():
        return None
    from export.torch_reference import xpose_call  # torch lives in export/ only

    return xpose_call(ckpt, feeds, threads)
