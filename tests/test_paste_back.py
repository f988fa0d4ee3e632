"""Paste-back: procedural mask vs the official template, mask warp, and the blend."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.crop import crop_face
from runtime.paste_back import make_mask_template, paste_back, prepare_paste_back

ASSETS = Path(__file__).parent / "assets"


def reference_mask() -> np.ndarray:
    ref = cv2.imread(str(ASSETS / "mask_template.png"), cv2.IMREAD_GRAYSCALE)
    assert ref is not None, "tests/assets/mask_template.png is missing"
    return ref


def test_procedural_mask_matches_official_template() -> None:
    ref = reference_mask()
    ours = make_mask_template(512)
    assert ours.shape == ref.shape == (512, 512) and ours.dtype == np.uint8
    a, b = ours > 127, ref > 127
    iou = (a & b).sum() / (a | b).sum()
    diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
    assert iou >= 0.99
    assert diff.mean() <= 0.01  # measured: identical (mean 0, max 0)
    assert diff.max() <= 1


@pytest.mark.parametrize("size", [256, 224, 1024])
def test_mask_at_other_sizes_scales_the_shape(size: int) -> None:
    ours = make_mask_template(size).astype(np.float64)
    ref = cv2.resize(reference_mask(), (size, size), interpolation=cv2.INTER_AREA).astype(np.float64)
    a, b = ours > 127, ref > 127
    assert (a & b).sum() / (a | b).sum() >= 0.97
    assert np.abs(ours - ref).mean() < 3.0
    ramp = size // 32
    assert ours[size // 2, size // 2] == 255 and ours[0, size // 2] == 0 and ours[0, 0] == 0
    assert ours[size // 2, ramp] == 255  # full weight from one ramp width in
    row = ours[size // 2, : size // 2]
    assert np.all(np.diff(row) >= 0)  # rises monotonically from the border


def test_mask_rejects_bad_ramp() -> None:
    with pytest.raises(ValueError, match="ramp"):
        make_mask_template(64, ramp=40)


def test_prepare_paste_back_identity_and_shape() -> None:
    mask = prepare_paste_back(None, np.eye(3, dtype=np.float32), dsize=(600, 520))
    assert mask.shape == (520, 600, 1) and mask.dtype == np.float32
    assert np.array_equal(mask[:512, :512, 0], make_mask_template(512).astype(np.float32) / 255.0)
    assert np.all(mask[512:, :] == 0) and np.all(mask[:, 512:] == 0)
    # a 3-channel template (how the official png is loaded) gives the same weights
    three = np.repeat(make_mask_template(512)[..., None], 3, axis=2)
    assert np.array_equal(prepare_paste_back(three, np.eye(3), dsize=(600, 520)), mask)


def _smooth_image(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 120 + 100 * np.sin(xx / 37.0) * np.cos(yy / 53.0)
    g = 128 + 90 * np.cos((xx + yy) / 61.0)
    b = 60 + 0.25 * xx
    return np.clip(np.stack([r, g, b], axis=2), 0, 255).astype(np.uint8)


def _face_landmarks(center: tuple[float, float], theta: float) -> np.ndarray:
    rng = np.random.default_rng(5)
    pts = np.column_stack([rng.uniform(-40, 40, 106), rng.uniform(-50, 50, 106)])
    pts[[33, 35, 40, 39]] = [-22, -20]
    pts[[87, 89, 94, 93]] = [22, -20]
    pts[[52, 61]] = [[-3, 35], [3, 35]]
    c, s = np.cos(theta), np.sin(theta)
    return (pts @ np.array([[c, -s], [s, c]]).T + np.asarray(center)).astype(np.float32)


def test_paste_back_round_trip_and_untouched_outside() -> None:
    image = _smooth_image(720, 960)
    lmk = _face_landmarks((480, 360), 0.3)
    res = crop_face(image, lmk)
    mask = prepare_paste_back(None, res.M_c2o, dsize=(image.shape[1], image.shape[0]))
    out = paste_back(res.img_crop, res.M_c2o, image, mask)
    assert out.shape == image.shape and out.dtype == np.uint8

    outside = mask[..., 0] == 0
    inside = mask[..., 0] == 1
    assert outside.any() and inside.any()
    assert np.array_equal(out[outside], image[outside])  # exact outside the mask
    err = np.abs(out[inside].astype(np.int16) - image[inside].astype(np.int16))
    assert err.mean() < 0.05 and err.max() <= 2  # two bilinear resamplings of a smooth image (measured 0.0016 / 1)


def test_paste_back_blend_formula() -> None:
    image = _smooth_image(400, 500)
    lmk = _face_landmarks((250, 200), -0.5)
    res = crop_face(image, lmk)
    mask = prepare_paste_back(None, res.M_c2o, dsize=(500, 400))
    animated = np.full_like(res.img_crop, 200)
    out = paste_back(animated, res.M_c2o, image, mask)
    m = mask[..., 0]
    assert np.all(out[m == 1] == 200)
    partial = (m > 0.2) & (m < 0.8)
    assert partial.any()
    # the official blend: mask·warped + (1 − mask)·original, truncated to uint8
    want = np.floor(m[partial, None] * 200.0 + (1 - m[partial, None]) * image[partial].astype(np.float32) + 1e-4)
    assert np.abs(out[partial].astype(np.float64) - want).max() <= 1


@pytest.mark.parametrize(
    ("center", "zoom"), [((900, 500), 1.0), ((40, 30), 3.0), ((1900, 1060), 2.0), ((960, 540), 6.0)]
)
def test_paste_back_equals_full_frame_blend(center: tuple[int, int], zoom: float) -> None:
    # the footprint-limited blend must give exactly the full-frame warp + blend, also for crops leaving the frame
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    lmk = (_face_landmarks(center, 0.4) - np.asarray(center)) * zoom + np.asarray(center)
    res = crop_face(image, lmk.astype(np.float32))
    mask = prepare_paste_back(None, res.M_c2o, dsize=(1920, 1080))
    animated = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    warped = cv2.warpAffine(animated, res.M_c2o[:2], (1920, 1080), flags=cv2.INTER_LINEAR)
    full = np.clip(mask * warped + (1 - mask) * image, 0, 255).astype(np.uint8)
    assert np.array_equal(paste_back(animated, res.M_c2o, image, mask), full)


def test_paste_back_rejects_mismatched_mask() -> None:
    image = np.zeros((100, 120, 3), np.uint8)
    mask = np.ones((120, 100, 1), np.float32)
    with pytest.raises(ValueError, match="dsize"):
        paste_back(np.zeros((512, 512, 3), np.uint8), np.eye(3), image, mask)
