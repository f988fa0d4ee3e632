"""Crop geometry: rotation recovered, box centred/shifted/scaled as specified, matrices consistent."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from runtime.crop import (
    DRIVING_PARAMS,
    SOURCE_PARAMS,
    CropParams,
    average_bbox,
    crop_by_bbox,
    crop_driving_frames,
    crop_face,
    driving_bbox,
    face_anchor_points,
    face_rect_from_landmarks,
    resize_to_limit,
    transform_points,
)

# 106-point layout anchors (insightface 2d106det): eye points and the two lip points
LEFT_EYE = [33, 35, 40, 39]
RIGHT_EYE = [87, 89, 94, 93]
LIP = [52, 61]


def canonical_face_106(rng: np.random.Generator) -> np.ndarray:
    """An upright 106-point face centred at the origin: extent 100×120, eyes at y=-20, lips at y=+35."""
    pts = np.column_stack([rng.uniform(-40, 40, 106), rng.uniform(-50, 50, 106)])
    pts[LEFT_EYE] = [-22.0, -20.0]
    pts[RIGHT_EYE] = [22.0, -20.0]
    pts[LIP] = [[-3.0, 35.0], [3.0, 35.0]]
    # fix the extent so the expected box is known exactly: x in [-50, 50], y in [-60, 60]
    pts[0], pts[1], pts[2], pts[3] = [-50, 0], [50, 0], [0, -60], [0, 60]
    return pts


def rotation(theta: float) -> np.ndarray:
    """Rotation in image coordinates (y down): positive theta turns +x towards +y (clockwise on screen)."""
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def place(pts: np.ndarray, theta: float, zoom: float, offset: tuple[float, float]) -> np.ndarray:
    return (pts @ rotation(theta).T) * zoom + np.asarray(offset)


@pytest.mark.parametrize(
    ("theta_deg", "params"),
    [
        (0.0, SOURCE_PARAMS),
        (17.0, SOURCE_PARAMS),
        (-35.0, SOURCE_PARAMS),
        (120.0, SOURCE_PARAMS),
        (25.0, CropParams(dsize=256, scale=1.8, vx_ratio=0.1, vy_ratio=-0.2)),
    ],
)
def test_rotated_face_is_upright_centred_and_scaled(theta_deg: float, params: CropParams) -> None:
    rng = np.random.default_rng(0)
    canon = canonical_face_106(rng)
    theta = np.deg2rad(theta_deg)
    lmk = place(canon, theta, zoom=1.5, offset=(400.0, 300.0)).astype(np.float32)
    image = np.zeros((600, 800, 3), np.uint8)
    res = crop_face(image, lmk, params)

    rect = face_rect_from_landmarks(lmk, params.scale, params.vx_ratio, params.vy_ratio)
    assert np.isclose(np.rad2deg(rect.angle), theta_deg, atol=1e-3)

    # the eye→lip axis is vertical and points down in the crop
    eyes, lip = transform_points(face_anchor_points(lmk), res.M_o2c)
    assert abs(eyes[0] - lip[0]) < 1e-3 and lip[1] > eyes[1]

    # the crop is canonical coordinates up to a uniform scale and a shift: no rotation left
    side = 120 * 1.5 * params.scale  # longest extent (y) in image pixels × scale
    s = params.dsize / side
    canon_in_crop = res.lmk_crop
    expected = canon * 1.5 * s
    shift = canon_in_crop - expected
    assert np.allclose(shift, shift.mean(axis=0), atol=2e-3)

    # centre of the landmark box lands on the crop centre moved by −vy·dsize (vy<0 → face lower)
    box_mid = (canon_in_crop.min(axis=0) + canon_in_crop.max(axis=0)) / 2
    half = params.dsize / 2
    assert np.allclose(
        box_mid, [half - params.vx_ratio * params.dsize, half - params.vy_ratio * params.dsize], atol=2e-3
    )
    # the longest landmark extent fills dsize / scale
    extent = canon_in_crop.max(axis=0) - canon_in_crop.min(axis=0)
    assert np.isclose(extent.max(), params.dsize / params.scale, atol=2e-3)


def test_hand_computed_five_point_crop() -> None:
    # eyes (100,100),(140,100), nose (120,120), mouth corners (105,140),(135,140): extent 40, mean (120,120)
    lmk = np.array([[100, 100], [140, 100], [120, 120], [105, 140], [135, 140]], np.float32)
    res = crop_face(np.zeros((300, 300, 3), np.uint8), lmk, CropParams(dsize=512, scale=2.3, vy_ratio=-0.125))
    side = 40 * 2.3
    center = np.array([120.0, 120.0 - 0.125 * side])
    s = 512 / side
    expected = np.array([[s, 0, 256 - s * center[0]], [0, s, 256 - s * center[1]], [0, 0, 1]])
    assert np.allclose(res.M_o2c, expected, atol=1e-4)


def test_matrices_are_inverse_and_landmarks_follow() -> None:
    rng = np.random.default_rng(1)
    lmk = place(canonical_face_106(rng), 0.4, 2.0, (320, 240)).astype(np.float32)
    image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    res = crop_face(image, lmk)
    assert res.M_o2c.shape == (3, 3) and res.M_c2o.shape == (3, 3)
    assert res.M_o2c.dtype == np.float32 and res.M_c2o.dtype == np.float32
    assert np.allclose(res.M_c2o @ res.M_o2c, np.eye(3), atol=1e-4)
    assert np.allclose(transform_points(res.lmk_crop, res.M_c2o), lmk, atol=1e-2)
    assert res.img_crop.shape == (512, 512, 3) and res.img_crop.dtype == np.uint8
    assert res.img_crop_256.shape == (256, 256, 3)
    assert np.allclose(res.lmk_crop_256, res.lmk_crop * 0.5)
    # the 256 input is an area downscale of the crop
    assert np.array_equal(res.img_crop_256, cv2.resize(res.img_crop, (256, 256), interpolation=cv2.INTER_AREA))


def test_crop_pixels_follow_matrix_and_border_is_black() -> None:
    # a bright dot drawn at the lip centre shows up where M_o2c sends it; outside the image is black
    rng = np.random.default_rng(2)
    lmk = place(canonical_face_106(rng), -0.3, 1.0, (60, 70)).astype(np.float32)  # face near the top-left corner
    image = np.full((400, 400, 3), 90, np.uint8)
    lip = face_anchor_points(lmk)[1]
    cv2.circle(image, (int(round(lip[0])), int(round(lip[1]))), 3, (255, 255, 255), -1)
    res = crop_face(image, lmk)
    gray = res.img_crop[..., 0].astype(np.float64)
    ys, xs = np.nonzero(gray > 200)
    found = np.array([xs.mean(), ys.mean()])
    want = transform_points(np.round(lip)[None], res.M_o2c)[0]
    assert np.linalg.norm(found - want) < 1.5
    assert res.img_crop[0, 0].tolist() == [0, 0, 0]  # top-left of the crop maps outside the image


def test_no_rotation_flag_keeps_axes() -> None:
    rng = np.random.default_rng(3)
    lmk = place(canonical_face_106(rng), 0.5, 1.0, (300, 300)).astype(np.float32)
    res = crop_face(np.zeros((600, 600, 3), np.uint8), lmk, CropParams(flag_do_rot=False))
    assert abs(res.M_o2c[0, 1]) < 1e-7 and abs(res.M_o2c[1, 0]) < 1e-7
    assert np.isclose(res.M_o2c[0, 0], res.M_o2c[1, 1])


def test_203_and_68_point_anchors() -> None:
    pts203 = np.zeros((203, 2))
    pts203[[0, 6, 12, 18]] = [10, 0]
    pts203[[24, 30, 36, 42]] = [30, 0]
    pts203[[48, 66]] = [[18, 40], [22, 40]]
    assert np.allclose(face_anchor_points(pts203), [[20, 0], [20, 40]])
    pts68 = np.zeros((68, 2))
    pts68[[36, 39]] = [[0, 0], [10, 0]]
    pts68[[42, 45]] = [[30, 0], [40, 0]]
    pts68[[48, 54]] = [[10, 50], [30, 50]]
    assert np.allclose(face_anchor_points(pts68), [[20, 0], [20, 50]])


def test_bad_landmark_count_is_named() -> None:
    with pytest.raises(ValueError, match="unsupported landmark count 7"):
        crop_face(np.zeros((10, 10, 3), np.uint8), np.zeros((7, 2), np.float32))


def test_driving_frames_share_the_averaged_box() -> None:
    rng = np.random.default_rng(4)
    canon = canonical_face_106(rng)
    offsets = [(200, 200), (210, 190), (190, 215)]
    lmks = [place(canon, 0.1 * i, 1.0, off).astype(np.float32) for i, off in enumerate(offsets)]
    frames = [rng.integers(0, 255, (400, 400, 3), dtype=np.uint8) for _ in offsets]
    boxes = np.array([driving_bbox(lmk) for lmk in lmks])
    # per-frame box: square, side 2.2 × landmark extent along the face axes
    for box, lmk in zip(boxes, lmks, strict=True):
        rect = face_rect_from_landmarks(lmk, DRIVING_PARAMS.scale, 0.0, DRIVING_PARAMS.vy_ratio)
        assert np.isclose(box[2] - box[0], box[3] - box[1])
        assert np.isclose(box[2] - box[0], 120 * 2.2, atol=1e-3)
        assert np.allclose((box[:2] + box[2:]) / 2, rect.center)
    results = crop_driving_frames(frames, lmks)
    mean_box = average_bbox(boxes)
    assert np.allclose(mean_box, boxes.mean(axis=0))
    for frame, res in zip(frames, results, strict=True):
        assert np.array_equal(res.M_o2c, results[0].M_o2c)
        ref = crop_by_bbox(frame, mean_box, 512)
        assert np.array_equal(res.img_crop, ref.img_crop)
        assert np.array_equal(res.img_crop_256, cv2.resize(res.img_crop, (256, 256), interpolation=cv2.INTER_LINEAR))
    centre = transform_points(((mean_box[:2] + mean_box[2:]) / 2)[None], results[0].M_o2c)[0]
    assert np.allclose(centre, [256, 256], atol=1e-3)
    with pytest.raises(ValueError, match="at least one box"):
        average_bbox([])


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((1500, 2000), (960, 1280)),  # wide: width to 1280, height int(1500 · 0.64)
        ((3000, 1001), (1280, 426)),  # tall: height to 1280, width int(1001 · 1280/3000) = 427 → trimmed to 426
        ((721, 1001), (720, 1000)),  # small: no resize, odd sides trimmed
        ((1280, 1280), (1280, 1280)),
        ((1, 1), (1, 1)),  # smaller than the division: unchanged
    ],
)
def test_resize_to_limit_sizes(shape: tuple[int, int], expected: tuple[int, int]) -> None:
    img = np.zeros((*shape, 3), np.uint8)
    out = resize_to_limit(img, max_dim=1280, division=2)
    assert out.shape[:2] == expected
    if out.shape[0] > 1:
        assert out.shape[0] % 2 == 0 and out.shape[1] % 2 == 0 and max(out.shape[:2]) <= 1280


def test_resize_to_limit_trims_bottom_right() -> None:
    img = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    out = resize_to_limit(img, max_dim=1280, division=2)
    assert np.array_equal(out, img[:4, :6])
