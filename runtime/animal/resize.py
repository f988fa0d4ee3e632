"""Pillow's bilinear resize of uint8 images, in numpy, so X-Pose sees the pixels upstream feeds it without a
Pillow dependency at run time.

Upstream resizes the source with torchvision on a PIL image (``Image.resize(..., BILINEAR)``). Pillow's filter is
not OpenCV's INTER_LINEAR: when shrinking it widens the triangle filter by the scale factor (antialiasing), and it
works in 22-bit fixed point with a rounded uint8 image between the horizontal and the vertical pass. Both are
reproduced here (coefficients, rounding and pass order of Pillow's ``Resample.c``), so the result is Pillow's to the
last level.
"""

from __future__ import annotations

import math

import numpy as np

PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point coefficient precision for 8-bit images


def _coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(first input index, fixed-point weights K) per output pixel, for the triangle filter of support 1."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    starts = np.zeros(out_size, dtype=np.int64)
    weights = np.zeros((out_size, ksize), dtype=np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        x = np.arange(xmax, dtype=np.float64)
        w = np.clip(1.0 - np.abs((x + xmin - center + 0.5) / filterscale), 0.0, None)
        total = w.sum()
        if total != 0.0:
            w = w / total
        starts[xx] = xmin
        weights[xx, :xmax] = w
    fixed = np.where(weights < 0, np.trunc(-0.5 + weights * (1 << PRECISION_BITS)),
                     np.trunc(0.5 + weights * (1 << PRECISION_BITS))).astype(np.int64)
    return starts, fixed


def _pass(image: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    """One separable pass along ``axis`` (1 = width, 0 = height) of an H×W×C uint8 image."""
    in_size = image.shape[axis]
    starts, fixed = _coefficients(in_size, out_size)
    src = np.moveaxis(image, axis, 0).astype(np.int64)  # in_size × other × C
    acc = np.full((out_size, *src.shape[1:]), 1 << (PRECISION_BITS - 1), dtype=np.int64)
    for k in range(fixed.shape[1]):
        idx = np.minimum(starts + k, in_size - 1)  # taps past the end carry weight 0
        acc += src[idx] * fixed[:, k].reshape(-1, *([1] * (src.ndim - 1)))
    out = np.clip(acc >> PRECISION_BITS, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(out, 0, axis))


def pil_bilinear_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an H×W×C (or H×W) uint8 image to ``size`` = (width, height) exactly as Pillow's BILINEAR does."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"pil_bilinear_resize needs a uint8 image, got {arr.dtype}")
    squeeze = arr.ndim == 2
    if squeeze:
        arr = arr[:, :, None]
    width, height = int(size[0]), int(size[1])
    if width < 1 or height < 1:
        raise ValueError(f"target size must be positive, got {size}")
    out = arr
    if width != arr.shape[1]:  # Pillow: horizontal pass first, then vertical
        out = _pass(out, width, axis=1)
    if height != arr.shape[0]:
        out = _pass(out, height, axis=0)
    return out[:, :, 0] if squeeze else out
