"""Crop geometry for LivePortrait: landmark → similarity transform → square face crop, and back.

Matrices are float32 3×3 homogeneous affines: ``M_o2c`` maps original-image pixels to crop pixels and
``M_c2o = inv(M_o2c)`` maps back (paste-back uses it). Pixel coordinates follow OpenCV: x right, y down.

The geometry reproduces the official behaviour:
- two anchor points (eye centre, lip centre) fix the face's roll: the crop's y axis points from the eyes to the lips;
- the box is the square bounding box of *all* landmarks in that rotated frame, times ``scale``,
  shifted by ``vx_ratio``/``vy_ratio`` × box size along the rotated axes;
- the crop is ``cv2.warpAffine`` with bilinear interpolation and a constant black border.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

NETWORK_SIZE = 256  # the motion/appearance networks see a 256×256 resize of the crop

# landmark indices of the eye-corner/eyelid points averaged into eye centres, and the two lip points
# whose mean is the lip centre, per landmark layout (count → (left eye, right eye, lip pair))
_ANCHORS: dict[int, tuple[tuple[int, ...], tuple[int, ...], tuple[int, int]]] = {
    101: ((39, 42, 45, 48), (51, 54, 57, 60), (75, 81)),
    106: ((33, 35, 40, 39), (87, 89, 94, 93), (52, 61)),
    203: ((0, 6, 12, 18), (24, 30, 36, 42), (48, 66)),
}


@dataclass(frozen=True)
class CropParams:
    """How to cut a face crop; the defaults are the official source-image settings."""

    dsize: int = 512  # side of the crop in pixels (the generator's output size)
    scale: float = 2.3  # box side = scale × landmark extent; larger → smaller face
    vx_ratio: float = 0.0  # shift along the face's x axis, as a fraction of the box side
    vy_ratio: float = -0.125  # shift along the face's y axis (negative → crop moves up, more forehead)
    flag_do_rot: bool = True  # undo the face roll in the crop


SOURCE_PARAMS = CropParams()
# the official driving-video crop: scale 2.2, vy −0.1, no rotation, one box averaged over the clip
DRIVING_PARAMS = CropParams(dsize=512, scale=2.2, vx_ratio=0.0, vy_ratio=-0.1, flag_do_rot=False)
# the crop the 203-point landmark network expects (224², scale 1.5, vy −0.1, rotated)
LANDMARK203_PARAMS = CropParams(dsize=224, scale=1.5, vx_ratio=0.0, vy_ratio=-0.1, flag_do_rot=True)


@dataclass
class FaceRect:
    """A rotated square around a face, in original-image pixels."""

    center: np.ndarray  # (2,) float32
    size: float  # side length in pixels
    angle: float  # radians; rotation of the face's x axis from the image x axis (clockwise on screen)

    @property
    def bbox(self) -> np.ndarray:
        """Axis-aligned [left, top, right, bottom] box of the same centre and side (rotation ignored)."""
        half = np.float32(self.size) / 2
        cx, cy = np.asarray(self.center, dtype=np.float32)
        return np.array([cx - half, cy - half, cx + half, cy + half], dtype=np.float32)


@dataclass
class CropResult:
    """Everything later stages need from one crop."""

    img_crop: np.ndarray  # dsize×dsize×3 uint8 RGB
    img_crop_256: np.ndarray  # 256×256×3 uint8 RGB, the network input
    lmk_crop: np.ndarray | None  # K×2 float32, the input landmarks in crop pixels
    M_o2c: np.ndarray  # 3×3 float32, original → crop
    M_c2o: np.ndarray  # 3×3 float32, crop → original

    @property
    def lmk_crop_256(self) -> np.ndarray | None:
        """Landmarks in the 256² network-input frame."""
        if self.lmk_crop is None:
            return None
        return (self.lmk_crop * (NETWORK_SIZE / self.img_crop.shape[0])).astype(np.float32)


def transform_points(pts: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Apply a 2×3 or 3×3 affine to K×2 points, in float32 like the official cropper (float32 out)."""
    pts = np.asarray(pts, dtype=np.float32)
    M = np.asarray(M, dtype=np.float32)
    return pts @ M[:2, :2].T + M[:2, 2]


def face_anchor_points(lmk: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Eye-centre and lip-centre (2×2) that fix the face's roll, for 5/9/68/101/106/203-point layouts.

    Means are taken in ``dtype`` (float32: the official human geometry, so that tracked landmarks do not drift
    away from the official ones over a long clip; float64 for the animal points X-Pose returns) and in the
    official point order. The 9 animal points: right eye right/left, left eye right/left, nose, lip right/left,
    upper/lower lip; the eye anchor is the mean of the two eye centres, the lip anchor the mean of the corners.
    """
    lmk = np.asarray(lmk, dtype=dtype)
    if lmk.ndim != 2 or lmk.shape[1] != 2:
        raise ValueError(f"landmarks must be K×2, got shape {lmk.shape}")
    n = lmk.shape[0]
    if n == 5:  # left eye, right eye, nose, left mouth corner, right mouth corner
        eyes = (lmk[0] + lmk[1]) / 2
        lip = (lmk[3] + lmk[4]) / 2
    elif n == 9:
        eyes = ((lmk[2] + lmk[3]) / 2 + (lmk[0] + lmk[1]) / 2) / 2
        lip = (lmk[5] + lmk[6]) / 2
    elif n == 68:  # 1-based iBUG: eyes 37/40 and 43/46, mouth corners 49/55
        eyes = (lmk[[36, 39]].mean(axis=0) + lmk[[42, 45]].mean(axis=0)) / 2
        lip = (lmk[48] + lmk[54]) / 2
    elif n in _ANCHORS or n > 101:
        left_idx, right_idx, lip_idx = _ANCHORS[n] if n in _ANCHORS else _ANCHORS[101]
        eyes = (lmk[list(left_idx)].mean(axis=0) + lmk[list(right_idx)].mean(axis=0)) / 2
        lip = (lmk[lip_idx[0]] + lmk[lip_idx[1]]) / 2
    else:
        raise ValueError(f"unsupported landmark count {n}: expected 5, 9, 68, 101, 106, 203 or more than 101")
    return np.stack([eyes, lip])


def face_rect_from_landmarks(lmk: np.ndarray, scale: float, vx_ratio: float, vy_ratio: float,
                             dtype: type = np.float32) -> FaceRect:
    """Rotated square box around the landmarks, as the official cropper measures it.

    ``dtype`` is the arithmetic of the official cropper for these points: float32 for the human detectors' points;
    float64 for X-Pose's animal points, where upstream still rounds the x axis to float32.
    """
    f = dtype
    pts = np.asarray(lmk, dtype=f)
    eyes, lip = face_anchor_points(pts, f)
    uy = lip - eyes
    norm = np.linalg.norm(uy)
    uy = np.array([0.0, 1.0], dtype=f) if norm <= 1e-3 else uy / norm
    ux = np.array([uy[1], -uy[0]], dtype=np.float32).astype(f)
    angle = math.acos(max(-1.0, min(1.0, float(ux[0]))))
    if ux[1] < 0:
        angle = -angle

    mean = pts.mean(axis=0)
    local = (pts - mean) @ np.stack([ux, uy]).T  # coordinates along (ux, uy)
    lo, hi = local.min(axis=0), local.max(axis=0)
    mid = (lo + hi) / 2
    side = np.full(2, max(hi - lo), dtype=f) * f(scale)
    center = mean + ux * mid[0] + uy * mid[1]
    center = center + ux * (f(vx_ratio) * side) + uy * (f(vy_ratio) * side)
    return FaceRect(center=center, size=float(side[0]), angle=angle)


def crop_matrix(center: np.ndarray, size: float, angle: float, dsize: int, dtype: type = np.float32) -> np.ndarray:
    """3×3 float32 original→crop similarity: rotate by −angle about ``center``, scale to ``dsize``, centre it.

    The entries are computed in ``dtype`` (that of the box, see face_rect_from_landmarks) and stored as float32.
    """
    s = dtype(dsize) / dtype(size)
    c, si = math.cos(angle), math.sin(angle)
    cx, cy = dtype(center[0]), dtype(center[1])
    half = dtype(dsize / 2.0)
    if angle == 0.0:  # the official unrotated form (no cos/sin products, bit-identical to its matrix)
        rows = [[s, 0.0, half - s * cx], [0.0, s, half - s * cy]]
    else:
        rows = [[s * c, s * si, half - s * (c * cx + si * cy)], [-s * si, s * c, half - s * (-si * cx + c * cy)]]
    return np.array([*rows, [0.0, 0.0, 1.0]], dtype=np.float32)


def bbox_crop_matrix(bbox: np.ndarray, dsize: int) -> np.ndarray:
    """3×3 float32 original→crop matrix of an axis-aligned box: its width maps onto ``dsize``."""
    left, top, right, bottom = (float(v) for v in bbox)
    if right - left <= 0:
        raise ValueError(f"empty box {bbox!r}")
    center = np.array([(left + right) / 2, (top + bottom) / 2], dtype=np.float32)
    s = dsize / (right - left)
    half = np.float32(dsize / 2.0)
    return np.array([[s, 0.0, half - s * center[0]], [0.0, s, half - s * center[1]], [0.0, 0.0, 1.0]],
                    dtype=np.float32)


def face_crop_matrix(lmk: np.ndarray, params: CropParams, dtype: type = np.float32) -> np.ndarray:
    """3×3 float32 original→crop matrix of the rotated (or, without flag_do_rot, upright) face box."""
    rect = face_rect_from_landmarks(lmk, params.scale, params.vx_ratio, params.vy_ratio, dtype)
    return crop_matrix(rect.center, rect.size, rect.angle if params.flag_do_rot else 0.0, params.dsize, dtype)


def _finish_crop(
    image_rgb: np.ndarray, M_o2c: np.ndarray, dsize: int, lmk: np.ndarray | None, interp_256: int
) -> CropResult:
    """Warp, resize for the network and package the matrices (shared by the rotated and bbox crops)."""
    M_o2c = np.asarray(M_o2c, dtype=np.float32)
    img_crop = cv2.warpAffine(
        image_rgb, M_o2c[:2], (dsize, dsize), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    img_256 = cv2.resize(img_crop, (NETWORK_SIZE, NETWORK_SIZE), interpolation=interp_256)
    M_c2o = np.linalg.inv(M_o2c)  # float32 inverse, as the official paste-back matrix
    lmk_crop = transform_points(lmk, M_o2c) if lmk is not None else None
    return CropResult(img_crop=img_crop, img_crop_256=img_256, lmk_crop=lmk_crop, M_o2c=M_o2c, M_c2o=M_c2o)


def crop_face(image_rgb: np.ndarray, lmk: np.ndarray, params: CropParams = SOURCE_PARAMS,
              dtype: type = np.float32) -> CropResult:
    """Cut the face described by ``lmk`` out of ``image_rgb`` (source-image / per-frame crop).

    The 256² network input is an INTER_AREA downscale, as the official source path does. ``dtype``: the geometry's
    arithmetic (float64 for X-Pose's animal points, as upstream).
    """
    _check_image(image_rgb)
    M = face_crop_matrix(lmk, params, dtype)
    return _finish_crop(image_rgb, M, params.dsize, np.asarray(lmk, np.float32), cv2.INTER_AREA)


def driving_bbox(lmk: np.ndarray, params: CropParams = DRIVING_PARAMS) -> np.ndarray:
    """Axis-aligned [l, t, r, b] box for one driving frame (official: rotated centre, unrotated box).

    The official driving path drops its x shift (a misnamed keyword), so it always crops with vx = 0;
    we honour ``vx_ratio``, and the default 0 gives the official box.
    """
    return face_rect_from_landmarks(lmk, params.scale, params.vx_ratio, params.vy_ratio).bbox


def average_bbox(bboxes: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """One box for a whole driving clip: the mean of the per-frame boxes (the official smoothing, in float32)."""
    arr = np.asarray(bboxes, dtype=np.float32)
    if arr.size == 0:
        raise ValueError("average_bbox needs at least one box (no face was found in any frame)")
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must be N×4 [l, t, r, b], got shape {arr.shape}")
    return arr.mean(axis=0).astype(np.float64)


def crop_by_bbox(
    image_rgb: np.ndarray, bbox: np.ndarray, dsize: int = 512, lmk: np.ndarray | None = None
) -> CropResult:
    """Crop an axis-aligned box (no rotation) to dsize² — the official driving-frame crop.

    The box side is its width; the 256² network input is a bilinear resize, as the official driving path does.
    """
    _check_image(image_rgb)
    M = bbox_crop_matrix(bbox, dsize)
    lmk32 = np.asarray(lmk, np.float32) if lmk is not None else None
    return _finish_crop(image_rgb, M, dsize, lmk32, cv2.INTER_LINEAR)


def crop_driving_frames(
    frames_rgb: Sequence[np.ndarray], lmks: Sequence[np.ndarray], params: CropParams = DRIVING_PARAMS
) -> list[CropResult]:
    """Crop every driving frame with one clip-wide box averaged from all frames' landmarks."""
    if len(frames_rgb) != len(lmks):
        raise ValueError(f"{len(frames_rgb)} frames but {len(lmks)} landmark sets")
    box = average_bbox([driving_bbox(lmk, params) for lmk in lmks])
    return [crop_by_bbox(frame, box, params.dsize, lmk) for frame, lmk in zip(frames_rgb, lmks, strict=True)]


def resize_to_limit(image: np.ndarray, max_dim: int = 1280, division: int = 2) -> np.ndarray:
    """Bound the longer side by ``max_dim`` (bilinear) and trim bottom/right so both sides divide by ``division``.

    Mirrors the official source loading: the short side is truncated with int(), trimming keeps the
    top-left corner, and an image smaller than ``division`` is returned unchanged.
    """
    h, w = image.shape[:2]
    if max_dim > 0 and max(h, w) > max_dim:
        if h > w:
            new_h, new_w = max_dim, int(w * (max_dim / h))
        else:
            new_h, new_w = int(h * (max_dim / w)), max_dim
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    n = max(int(division), 1)
    h, w = image.shape[:2]
    th, tw = h - h % n, w - w % n
    if th == 0 or tw == 0:
        return image
    if (th, tw) != (h, w):
        image = np.ascontiguousarray(image[:th, :tw])
    return image


def _check_image(image: np.ndarray) -> None:
    """Fail early with a clear message instead of an OpenCV assertion."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        raise ValueError(f"expected an H×W×3 uint8 image, got {getattr(image, 'shape', type(image))}")
