"""SCRFD face detection (insightface ``det_10g.onnx``) without torch or insightface.

Pre-processing, decoding and face ordering follow the detector as LivePortrait uses it: the image is shrunk to fit the
detector input keeping its aspect ratio and placed at the top-left of a black canvas, pixels are fed as RGB
``(x - 127.5) / 128``, and per-stride outputs hold anchor scores, box distances and 5-point keypoint distances in
units of the stride. Faces come back sorted largest first ("large-small", the upstream default).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from runtime.faces.nms import nms

INPUT_MEAN = 127.5
INPUT_STD = 128.0
DIRECTIONS = (
    "large-small",
    "small-large",
    "left-right",
    "right-left",
    "top-bottom",
    "bottom-top",
    "distance-from-retarget-face",
)


@dataclass(frozen=True)
class Face:
    """One detection in original-image pixels: ``bbox`` x1,y1,x2,y2, ``score``, ``kps`` 5×2 (eyes, nose, mouth)."""

    bbox: np.ndarray
    score: float
    kps: np.ndarray | None

    @property
    def area(self) -> float:
        """Box area, the key of the default "large-small" ordering."""
        return float((self.bbox[2] - self.bbox[0]) * (self.bbox[3] - self.bbox[1]))

    @property
    def center(self) -> np.ndarray:
        """Box centre (x, y)."""
        return np.array([(self.bbox[0] + self.bbox[2]) / 2, (self.bbox[1] + self.bbox[3]) / 2], dtype=np.float32)


def letterbox(image: np.ndarray, input_size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Resize keeping aspect ratio into a black ``input_size`` (w, h) canvas at top-left; returns (canvas, det_scale).

    Integer truncation of the new size and cv2's default bilinear resize match the reference detector, so boxes map
    back with a single division by ``det_scale``.
    """
    in_w, in_h = int(input_size[0]), int(input_size[1])
    img_h, img_w = image.shape[:2]
    if img_h == 0 or img_w == 0:
        raise ValueError(f"letterbox: empty image of shape {image.shape}")
    im_ratio = float(img_h) / img_w
    if im_ratio > float(in_h) / in_w:
        new_h = in_h
        new_w = max(1, int(new_h / im_ratio))
    else:
        new_w = in_w
        new_h = max(1, int(new_w * im_ratio))
    det_scale = float(new_h) / img_h
    canvas = np.zeros((in_h, in_w, 3), dtype=np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h))
    return canvas, det_scale


def to_blob(image_rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 H×W×3 → float32 1×3×H×W normalised as the detector was trained ((x − 127.5) / 128)."""
    chw = image_rgb.astype(np.float32).transpose(2, 0, 1)
    return ((chw - INPUT_MEAN) / INPUT_STD)[None]


def _anchor_centers(height: int, width: int, stride: int, num_anchors: int) -> np.ndarray:
    """Anchor centres (x, y) in input pixels, row-major over the feature map, ``num_anchors`` copies per cell."""
    ys, xs = np.mgrid[:height, :width]
    centers = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(centers, num_anchors, axis=0)


def _group_outputs(outputs: Sequence[np.ndarray], input_hw: tuple[int, int]) -> list[tuple[int, int, Any, Any, Any]]:
    """Sort raw outputs into (stride, anchors, scores, boxes, kps) groups by their shapes, not by names or order.

    Scores have 1 column, boxes 4, keypoints 10; within a kind the largest map is stride 8. A leading batch axis of 1
    is dropped.
    """
    kinds: dict[int, list[np.ndarray]] = {1: [], 4: [], 10: []}
    for out in outputs:
        arr = np.asarray(out)
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 2 or arr.shape[1] not in kinds:
            raise ValueError(f"SCRFD output of shape {np.shape(out)} is not N×1 scores, N×4 boxes or N×10 keypoints")
        kinds[arr.shape[1]].append(arr)
    n_levels = len(kinds[1])
    if n_levels not in (3, 5) or len(kinds[4]) != n_levels or len(kinds[10]) not in (0, n_levels):
        shapes = [tuple(np.shape(o)) for o in outputs]
        raise ValueError(f"SCRFD outputs {shapes}: expected 3 or 5 stride levels of scores/boxes(/keypoints)")
    strides = [8, 16, 32] if n_levels == 3 else [8, 16, 32, 64, 128]
    for kind in kinds.values():
        kind.sort(key=lambda a: -a.shape[0])
    in_h, in_w = input_hw
    groups = []
    for level, stride in enumerate(strides):
        scores, boxes = kinds[1][level], kinds[4][level]
        kps = kinds[10][level] if kinds[10] else None
        cells = (in_h // stride) * (in_w // stride)
        rows = scores.shape[0]
        if cells == 0 or rows % cells or rows // cells not in (1, 2) or boxes.shape[0] != rows:
            raise ValueError(
                f"SCRFD stride {stride}: {rows} score rows / {boxes.shape[0]} box rows do not fit a "
                f"{in_h // stride}×{in_w // stride} map with 1 or 2 anchors (input {in_h}×{in_w})"
            )
        if kps is not None and kps.shape[0] != rows:
            raise ValueError(f"SCRFD stride {stride}: {kps.shape[0]} keypoint rows for {rows} anchors")
        groups.append((stride, rows // cells, scores, boxes, kps))
    return groups


def decode_scrfd(
    outputs: Sequence[np.ndarray],
    input_hw: tuple[int, int],
    det_scale: float,
    thresh: float,
    nms_thresh: float,
) -> list[Face]:
    """Raw SCRFD outputs → faces in original-image pixels after score threshold and NMS, best score first.

    Boxes are anchor centre ∓ distance·stride (left, top, right, bottom); keypoints are anchor centre + offset·stride.
    Dividing by ``det_scale`` undoes the letterbox resize (placement is top-left, so there is no offset).
    """
    in_h, in_w = int(input_hw[0]), int(input_hw[1])
    all_scores, all_boxes, all_kps = [], [], []
    has_kps = True
    for stride, anchors, scores, dists, kps in _group_outputs(outputs, (in_h, in_w)):
        centers = _anchor_centers(in_h // stride, in_w // stride, stride, anchors)
        keep = np.nonzero(scores[:, 0] >= thresh)[0]
        c = centers[keep]
        d = dists[keep].astype(np.float32) * stride
        all_scores.append(scores[keep, 0].astype(np.float32))
        all_boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], axis=1))
        if kps is None:
            has_kps = False
        else:
            offsets = kps[keep].astype(np.float32).reshape(-1, 5, 2) * stride
            all_kps.append(c[:, None, :] + offsets)
    scores = np.concatenate(all_scores)
    if scores.size == 0:
        return []
    boxes = np.concatenate(all_boxes) / det_scale
    kpss = np.concatenate(all_kps) / det_scale if has_kps else None
    faces = []
    for i in nms(boxes, scores, nms_thresh):
        faces.append(
            Face(
                bbox=boxes[i].astype(np.float32),
                score=float(scores[i]),
                kps=None if kpss is None else kpss[i].astype(np.float32),
            )
        )
    return faces


def sort_faces(faces: list[Face], direction: str = "large-small", face_center: np.ndarray | None = None) -> list[Face]:
    """Order faces like LivePortrait picks them (the first one is used): by area, position or distance to a point."""
    if direction == "large-small":
        return sorted(faces, key=lambda f: f.area, reverse=True)
    if direction == "small-large":
        return sorted(faces, key=lambda f: f.area)
    if direction == "left-right":
        return sorted(faces, key=lambda f: float(f.bbox[0]))
    if direction == "right-left":
        return sorted(faces, key=lambda f: float(f.bbox[0]), reverse=True)
    if direction == "top-bottom":
        return sorted(faces, key=lambda f: float(f.bbox[1]))
    if direction == "bottom-top":
        return sorted(faces, key=lambda f: float(f.bbox[1]), reverse=True)
    if direction == "distance-from-retarget-face":
        if face_center is None:
            raise ValueError("direction 'distance-from-retarget-face' needs face_center")
        ref = np.asarray(face_center, dtype=np.float32)
        return sorted(faces, key=lambda f: float(np.linalg.norm(f.center - ref)))
    raise ValueError(f"unknown face ordering {direction!r}; expected one of {DIRECTIONS}")


def _limit_faces(faces: list[Face], max_num: int, image_hw: tuple[int, int]) -> list[Face]:
    """Keep ``max_num`` faces preferring large, centred ones (area − 2·squared centre offset), as SCRFD does."""
    if max_num <= 0 or len(faces) <= max_num:
        return faces
    img_center = np.array([image_hw[1] // 2, image_hw[0] // 2], dtype=np.float32)
    values = [f.area - 2.0 * float(np.sum((f.center - img_center) ** 2)) for f in faces]
    order = np.argsort(values)[::-1][:max_num]
    return [faces[i] for i in order]


class FaceDetector:
    """Runs an SCRFD session (``det_10g.onnx`` or anything with the same outputs) on RGB images."""

    def __init__(
        self,
        session: Any,
        input_size: tuple[int, int] = (512, 512),
        det_thresh: float = 0.15,
        nms_thresh: float = 0.4,
    ) -> None:
        self.session = session
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        shape = list(inp.shape)
        if len(shape) == 4 and isinstance(shape[2], int) and isinstance(shape[3], int):
            input_size = (shape[3], shape[2])  # a static graph dictates its own size
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.output_names = [o.name for o in session.get_outputs()]
        self.det_thresh = float(det_thresh)
        self.nms_thresh = float(nms_thresh)

    def detect(
        self,
        image_rgb: np.ndarray,
        direction: str = "large-small",
        max_num: int = 0,
        face_center: np.ndarray | None = None,
    ) -> list[Face]:
        """Faces in ``image_rgb`` (H×W×3 uint8) in its pixel coordinates, ordered by ``direction``."""
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
            raise ValueError(f"FaceDetector.detect expects an H×W×3 RGB image, got shape {image_rgb.shape}")
        canvas, det_scale = letterbox(image_rgb, self.input_size)
        outputs = self.session.run(self.output_names, {self.input_name: to_blob(canvas)})
        faces = decode_scrfd(outputs, canvas.shape[:2], det_scale, self.det_thresh, self.nms_thresh)
        faces = _limit_faces(faces, max_num, image_rgb.shape[:2])
        return sort_faces(faces, direction, face_center)
