"""Paste-back through paste_back.onnx, so on CUDA the animated crop is blended on the GPU.

Per source face, the host computes once where every frame pixel falls in the crop (the sampling grid) and uploads
it with the warped mask and the original frame; per batch only the crop (already on the GPU) goes in and the
finished frames come out. Only the crop's footprint in the frame is sent through the graph: outside it the mask
is exactly 0, so those pixels are the original and are copied on the host. Torch-free, numpy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from runtime.paste_back import _affine_2x3, _crop_footprint
from runtime.sessions import GraphRunner, ModelSet

PASTE_BACK_KEY = "paste_back"
CROP_SIZE = 512


def grid_for(M_c2o: np.ndarray, frame_hw: tuple[int, int], crop_size: int = CROP_SIZE,
             origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """1×H×W×2 float32 GridSample grid: each frame pixel's (x, y) in the crop, normalised with align_corners=False.

    ``M_c2o`` maps crop pixels to frame pixels (as cv2.warpAffine takes it); its inverse sends the frame pixel
    (origin_x + x, origin_y + y) to the crop pixel u, normalised as (2u + 1) / crop_size − 1 so that GridSample
    samples the same point as OpenCV, whose pixel centres sit on integer coordinates.
    """
    m = _affine_2x3(M_c2o)
    o2c = np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2]
    height, width = int(frame_hw[0]), int(frame_hw[1])
    xs = np.arange(width, dtype=np.float64) + origin[0]
    ys = np.arange(height, dtype=np.float64) + origin[1]
    grid = np.empty((1, height, width, 2), dtype=np.float32)
    for k in range(2):
        crop_coord = o2c[k, 0] * xs[None, :] + o2c[k, 1] * ys[:, None] + o2c[k, 2]
        grid[0, :, :, k] = (2.0 * crop_coord + 1.0) / crop_size - 1.0
    return grid


def load_paste_runner(models: ModelSet) -> GraphRunner | None:
    """The paste_back.onnx runner when the models run on CUDA and the folder has the graph; else None (numpy path)."""
    if models.device != "cuda" or PASTE_BACK_KEY not in models.manifest.models:
        return None
    from runtime.manifest import verify_models

    verify_models(models.dir, [PASTE_BACK_KEY])
    entry = models.manifest.models[PASTE_BACK_KEY]
    runner = GraphRunner(PASTE_BACK_KEY, models.dir / entry.file, models.choice, models.cache_dir, models.threads)
    return runner if runner.on_cuda else None


class GraphPaster:
    """One source face's paste-back through the graph: grid, mask and frame uploaded once, crops blended per batch."""

    def __init__(self, runner: GraphRunner, M_c2o: np.ndarray, mask: np.ndarray, frame: np.ndarray) -> None:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame must be H×W×3 uint8, got shape {frame.shape} dtype {frame.dtype}")
        height, width = frame.shape[:2]
        weight = np.asarray(mask, dtype=np.float32)
        weight = weight[..., 0] if weight.ndim == 3 else weight
        if weight.shape != (height, width):
            raise ValueError(f"mask is {weight.shape} but the frame is {(height, width)}: make it with "
                             "prepare_paste_back(..., dsize=(width, height)) of this frame")
        self.runner, self.frame = runner, frame
        # the graph samples the 512² warping output, as the numpy path warps that image with M_c2o
        self.roi = _crop_footprint(_affine_2x3(M_c2o), CROP_SIZE, CROP_SIZE, width, height)
        if self.roi is None:  # the crop lies entirely outside the frame: nothing to blend
            return
        x0, y0, x1, y1 = self.roi
        feeds = {
            "grid": grid_for(M_c2o, (y1 - y0, x1 - x0), CROP_SIZE, origin=(x0, y0)),
            "mask": np.ascontiguousarray(weight[None, None, y0:y1, x0:x1]),
            "frame": np.ascontiguousarray(frame[None, y0:y1, x0:x1]),
        }
        self._fixed = {k: self._upload(v) for k, v in feeds.items()}

    def _upload(self, value: np.ndarray) -> Any:
        if not self.runner.on_cuda:
            return value
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0)

    def paste(self, crop_images: Any, base: np.ndarray | None = None) -> np.ndarray:
        """N×3×512×512 float crops in [0, 1] (numpy, or an OrtValue on the GPU) → N×H×W×3 uint8 frames."""
        return self.paste_with_crops(crop_images, base)[0]

    def paste_with_crops(self, crop_images: Any, base: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Frames and the crops as N×512×512×3 uint8 (what to_uint8_images gives), from one graph run.

        ``base`` (H×W×3 or N×H×W×3 uint8) replaces the uploaded frame for this call: another face already
        pasted into it.
        """
        n = int(crop_images.shape()[0] if callable(getattr(crop_images, "shape", None)) else crop_images.shape[0])
        background = self.frame[None] if base is None else np.asarray(base)
        background = background[None] if background.ndim == 3 else background
        if background.shape[1:] != self.frame.shape or background.shape[0] not in (1, n):
            raise ValueError(f"base must be {self.frame.shape} or {n}×{self.frame.shape}, got {background.shape}")
        frames = np.repeat(background, n, axis=0) if background.shape[0] == 1 else background.copy()
        if self.roi is None:
            from runtime.stages import to_uint8_images

            crops = crop_images if isinstance(crop_images, np.ndarray) else crop_images.numpy()
            return frames, to_uint8_images(crops)
        x0, y0, x1, y1 = self.roi
        feeds = dict(self._fixed)
        feeds["crop"] = crop_images
        if base is not None:
            feeds["frame"] = np.ascontiguousarray(background[:, y0:y1, x0:x1])
        out = self.runner.run(feeds)
        frames[:, y0:y1, x0:x1] = out["frame_out"]
        return frames, out["crop_out"]
