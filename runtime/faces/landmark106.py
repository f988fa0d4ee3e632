"""106-point landmarks (insightface ``2d106det.onnx``) from a detector box, torch-free.

The reference crops a square of 1.5 × the longer box side around the box centre, resizes it to the network input
(192²) with an axis-aligned similarity transform, feeds RGB pixels, reads (x, y) pairs in [-1, 1] crop units and maps
them back through the inverse transform. ``2d106det.onnx`` normalises pixels inside the graph, so the default input
mean/std are 0/1 (insightface decides this by looking for Sub/Mul nodes at the graph start).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

CROP_FACTOR = 1.5


def box_crop_matrix(bbox: np.ndarray, out_size: int) -> np.ndarray:
    """2×3 original→crop matrix: box centre to the crop centre, scale out_size / (1.5 · longer box side)."""
    x1, y1, x2, y2 = (float(v) for v in np.asarray(bbox, dtype=np.float64)[:4])
    side = max(x2 - x1, y2 - y1)
    if not side > 0:
        raise ValueError(f"landmark crop needs a box with positive size, got {bbox}")
    scale = out_size / (side * CROP_FACTOR)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = out_size / 2
    return np.array([[scale, 0.0, half - cx * scale], [0.0, scale, half - cy * scale]], dtype=np.float64)


def _apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2×3 affine matrix to K×2 points."""
    return points @ matrix[:, :2].T + matrix[:, 2]


class Landmark106:
    """Runs a 2d106det-style session: crop around a box, predict, return points in original-image pixels."""

    def __init__(self, session: Any, input_mean: float = 0.0, input_std: float = 1.0, num_points: int = 106) -> None:
        self.session = session
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        size = inp.shape[2] if len(inp.shape) == 4 else None
        self.input_size = int(size) if isinstance(size, int) else 192
        self.output_name = session.get_outputs()[0].name
        self.input_mean = float(input_mean)
        self.input_std = float(input_std)
        self.num_points = int(num_points)

    def predict(self, image_rgb: np.ndarray, bbox: np.ndarray) -> np.ndarray:
        """106×2 float32 landmarks of the face in ``bbox`` (x1, y1, x2, y2) of ``image_rgb`` (H×W×3 uint8 RGB)."""
        size = self.input_size
        m = box_crop_matrix(bbox, size)
        crop = cv2.warpAffine(image_rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)
        blob = ((crop.astype(np.float32) - self.input_mean) / self.input_std).transpose(2, 0, 1)[None]
        pred = np.asarray(self.session.run([self.output_name], {self.input_name: blob})[0][0], dtype=np.float32)
        pts = pred.reshape(-1, 2)
        if pts.shape[0] < self.num_points:
            raise ValueError(f"landmark output has {pts.shape[0]} points, expected {self.num_points}")
        pts = pts[-self.num_points :].astype(np.float64)
        pts = (pts + 1.0) * (size // 2)
        return _apply_affine(pts, cv2.invertAffineTransform(m)).astype(np.float32)
