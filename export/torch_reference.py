"""The PyTorch side of `cli.py bench`: the same network stages through our export/ modules, eager or compiled.

It lives in export/ because it needs torch; runtime/bench.py imports it lazily, only when a comparison runs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.checkpoints import load_all
from export.graphs import build_graph_module
from export.keypoints import transform_keypoints
from runtime.bench import NetInputs


def torch_device_for(device: str) -> str:
    """The torch device that matches an engine device (CUDA when the engine runs on an NVIDIA GPU)."""
    return "cuda" if device in ("cuda", "tensorrt") and torch.cuda.is_available() else "cpu"


class TorchReference:
    """The same network stages through export/ modules in eager PyTorch (optionally torch.compile'd)."""

    def __init__(self, weights: Path, device: str, threads: int = 0) -> None:
        self.torch = torch
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        nets = load_all(Path(weights))
        self.modules = {g: build_graph_module(g, nets).to(self.device) for g in (
            "motion_extractor", "appearance_feature_extractor", "warping_spade", "stitching", "eye_retargeting",
            "lip_retargeting")}
        self.compiled: dict[str, Any] = {}

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def _tensor(self, array: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def compile(self) -> str:
        """torch.compile each module (fp16 on CUDA); returns a note, empty when it worked."""
        try:
            for name, module in self.modules.items():
                mod = copy.deepcopy(module).half() if self.device.type == "cuda" else module
                self.compiled[name] = torch.compile(mod)
        except Exception as exc:  # noqa: BLE001 - optional extra, report and continue
            self.compiled = {}
            return f"torch.compile unavailable: {str(exc).splitlines()[0][:120]}"
        return ""

    def calls(self, x: NetInputs, compiled: bool = False) -> dict[str, Callable[[], object]]:
        """Stage callables, numpy in → numpy out like ours (uint8 images decoded to [0, 1], images back to uint8)."""
        mods = self.compiled if compiled else self.modules
        dtype = torch.float16 if compiled and self.device.type == "cuda" else torch.float32
        n = len(x.images)
        images_u8 = self._tensor(x.images)
        feature = self._tensor(x.feature).to(dtype)
        kp_s = self._tensor(x.kp_source).to(dtype).expand(n, -1, -1).contiguous()
        kp_d = self._tensor(x.kp_driving).to(dtype)
        feats = {g: self._tensor(a).to(dtype) for g, a in (
            ("stitching", x.stitch_feat), ("eye_retargeting", x.eye_feat), ("lip_retargeting", x.lip_feat))}

        def net_input(u8: Any) -> Any:
            return (u8.permute(0, 3, 1, 2).to(dtype) / 255.0).contiguous()

        def to_numpy_image(img: Any) -> np.ndarray:
            return (img.clamp(0, 1) * 255.0).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

        def motion() -> list[np.ndarray]:
            return [o.float().cpu().numpy() for o in mods["motion_extractor"](net_input(images_u8))]

        def warp() -> np.ndarray:
            return to_numpy_image(mods["warping_spade"](feature.expand(n, -1, -1, -1, -1), kp_d, kp_s))

        def mlps() -> None:
            for g, feat in feats.items():
                mods[g](feat).float().cpu().numpy()

        def per_frame() -> np.ndarray:
            pitch, yaw, roll, t, exp, scale, kp = mods["motion_extractor"](net_input(images_u8))
            posed = transform_keypoints(kp, pitch, yaw, roll, t, exp, scale)
            delta = mods["stitching"](torch.cat([kp_s.reshape(n, -1), posed.reshape(n, -1)], 1))
            stitched = posed + delta[:, :63].reshape(n, 21, 3)
            stitched[..., :2] += delta[:, None, 63:]
            return to_numpy_image(mods["warping_spade"](feature.expand(n, -1, -1, -1, -1), stitched, kp_s))

        def wrapped(fn: Callable[[], object]) -> Callable[[], object]:
            def run() -> object:
                with torch.inference_mode():
                    return fn()
            return run

        return {name: wrapped(fn) for name, fn in (
            ("motion", motion),
            ("appearance", lambda: mods["appearance_feature_extractor"](net_input(images_u8))),
            ("stitching", mlps), ("warp_decode", warp), ("motion+warp+decode", per_frame))}


def xpose_call(checkpoint: Path, feeds: dict[str, np.ndarray], threads: int = 0) -> Callable[[], Any]:
    """A no-grad call of our PyTorch X-Pose (loaded from `checkpoint`) on the bench's X-Pose feeds."""
    from export.networks.xpose.loading import load_xpose

    if threads:
        torch.set_num_threads(threads)
    model, _ = load_xpose(checkpoint)
    args = [torch.from_numpy(feeds[name]) for name in ("image", "instance_text", "keypoint_text", "keypoint_mask")]

    def call() -> Any:
        with torch.no_grad():
            return model(*args)

    return call
