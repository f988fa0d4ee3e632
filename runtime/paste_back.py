"""Paste an animated face crop back into the full frame through a soft square mask.

The official engine blends with a 512² template (white square, rounded corners, 16-px linear ramp to black
at the border). We draw that template procedurally at any size instead of shipping the picture: the value at
pixel (x, y) falls linearly from 255 to 0 over ``ramp`` pixels of distance outside the inner square
``[ramp, size − ramp]²`` (distance to its edge or, near corners, to its corner point, hence the round corners).
Pixels are sampled at their integer coordinates, which is what the official picture shows (its ramp starts at
column 0 on the left and ends one pixel short of the right edge); at 512² we reproduce it exactly.
"""

from __future__ import annotations

import cv2
import numpy as np

TEMPLATE_SIZE = 512  # the generator output / crop size the official template is made for
_RAMP_FRACTION = 1.0 / 32.0  # 16 px at 512


def make_mask_template(size: int = TEMPLATE_SIZE, ramp: float | None = None) -> np.ndarray:
    """Soft crop mask, size×size uint8 in [0, 255] (255 inside the face area, 0 at the border)."""
    if size < 2:
        raise ValueError(f"mask size must be at least 2, got {size}")
    ramp = size * _RAMP_FRACTION if ramp is None else float(ramp)
    if ramp <= 0 or 2 * ramp >= size:
        raise ValueError(f"ramp {ramp} must be positive and less than half the size {size}")
    coords = np.arange(size, dtype=np.float64)
    # per-axis distance outside [ramp, size - ramp] (0 inside)
    out = np.maximum(ramp - coords, 0.0) + np.maximum(coords - (size - ramp), 0.0)
    dist = np.hypot(out[:, None], out[None, :])
    weight = np.clip(1.0 - dist / ramp, 0.0, 1.0)
    # +1e-9 keeps exact steps (e.g. 255·8/16) from flooring one level low through float error
    return np.floor(weight * 255.0 + 1e-9).astype(np.uint8)


def prepare_paste_back(
    mask_crop: np.ndarray | None, M_c2o: np.ndarray, dsize: tuple[int, int], crop_size: int = TEMPLATE_SIZE
) -> np.ndarray:
    """Warp the crop-space mask into the original frame once per source; returns H×W×1 float32 in [0, 1].

    ``dsize`` is the original frame's (width, height), OpenCV order. ``mask_crop`` None means the default
    template drawn at ``crop_size`` (the side of the crop ``M_c2o`` belongs to). The warp is bilinear with a
    black border and happens on uint8, as the official code does, so the weights are multiples of 1/255.
    """
    if mask_crop is None:
        mask_crop = make_mask_template(crop_size)
    mask = np.asarray(mask_crop)
    if mask.ndim == 3:
        mask = mask[..., 0]  # the official template is grey stored as 3 equal channels
    if mask.ndim != 2:
        raise ValueError(f"mask_crop must be H×W or H×W×C, got shape {np.asarray(mask_crop).shape}")
    if mask.dtype != np.uint8:
        raise ValueError(f"mask_crop must be uint8 in [0, 255], got {mask.dtype}")
    width, height = int(dsize[0]), int(dsize[1])
    warped = cv2.warpAffine(
        mask, _affine_2x3(M_c2o), (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    return (warped.astype(np.float32) / 255.0)[..., None]


def paste_back(
    img_crop_rgb: np.ndarray, M_c2o: np.ndarray, img_original_rgb: np.ndarray, mask_original: np.ndarray
) -> np.ndarray:
    """Blend the (animated) crop into the original frame: mask·warp(crop) + (1 − mask)·original, uint8.

    Where the mask is 0 the original pixels come back unchanged; values are clipped and truncated to uint8
    like the official blend. Only the crop's footprint is blended (same result, far less work on large
    frames); this assumes ``mask_original`` came from a mask of the crop's size, as prepare_paste_back makes it.
    """
    height, width = img_original_rgb.shape[:2]
    if mask_original.shape[:2] != (height, width):
        raise ValueError(
            f"mask is {mask_original.shape[:2]} but the original frame is {(height, width)}: "
            "call prepare_paste_back with dsize=(width, height) of this frame"
        )
    M = _affine_2x3(M_c2o)
    roi = _crop_footprint(M, img_crop_rgb.shape[1], img_crop_rgb.shape[0], width, height)
    out = img_original_rgb.copy()
    if roi is None:  # the crop lies entirely outside the frame
        return out
    x0, y0, x1, y1 = roi
    # the warp covers the whole frame so its fixed-point sampling is bit-identical to the official call; only
    # the blend (the expensive part) is limited to the crop's footprint, outside which the mask is exactly 0
    warped = cv2.warpAffine(
        img_crop_rgb, M, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )[y0:y1, x0:x1]
    mask = mask_original[y0:y1, x0:x1]
    original = img_original_rgb[y0:y1, x0:x1]
    if mask.ndim != original.ndim:
        mask = mask[..., None]
    blended = mask * warped.astype(np.float32) + (1.0 - mask) * original.astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(blended, 0, 255).astype(np.uint8)
    return out


def _crop_footprint(M: np.ndarray, crop_w: int, crop_h: int, width: int, height: int) -> tuple[int, ...] | None:
    """Pixel box [x0, y0, x1) × [y0, y1) of the frame that the warped crop can touch (2-px margin), or None."""
    corners = np.array([[0, 0], [crop_w, 0], [0, crop_h], [crop_w, crop_h]], dtype=np.float64)
    pts = corners @ M[:, :2].T + M[:, 2]
    x0 = max(int(np.floor(pts[:, 0].min())) - 2, 0)
    y0 = max(int(np.floor(pts[:, 1].min())) - 2, 0)
    x1 = min(int(np.ceil(pts[:, 0].max())) + 2, width)
    y1 = min(int(np.ceil(pts[:, 1].max())) + 2, height)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def _affine_2x3(M: np.ndarray) -> np.ndarray:
    """Top two rows of a 2×3 / 3×3 affine, as OpenCV wants."""
    M = np.asarray(M)
    if M.shape not in ((2, 3), (3, 3)):
        raise ValueError(f"affine must be 2×3 or 3×3, got shape {M.shape}")
    return np.ascontiguousarray(M[:2], dtype=np.float64)
