"""LivePortrait's 203-point landmarks (``landmark.onnx``) from seed landmarks, torch-free.

The reference crops a 224² square aligned with the face: the "up" axis runs from the eye centre to the lip centre of
the seed points (so roll is removed), the square is 1.5 × the larger extent of the seed points in that frame, shifted
by 0.1 of its size towards the forehead. The network takes RGB in [0, 1] and its third output (1×406) holds the
points in [0, 1] crop units. Seeds may be 106 insightface points, 203 points of a previous frame, 101, 68 or 5 points.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

DSIZE = 224
SCALE = 1.5
VX_RATIO = 0.0
VY_RATIO = -0.1
NUM_POINTS = 203


def eye_lip_anchor(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(eye centre, lip centre) of a landmark set; the pair fixes the face's vertical axis."""
    n = pts.shape[0]
    if n == 203:
        eye_l, eye_r, lip = pts[[0, 6, 12, 18]].mean(0), pts[[24, 30, 36, 42]].mean(0), (pts[48] + pts[66]) / 2
    elif n == 106:
        eye_l, eye_r, lip = pts[[33, 35, 40, 39]].mean(0), pts[[87, 89, 94, 93]].mean(0), (pts[52] + pts[61]) / 2
    elif n == 68:
        eye_l, eye_r = pts[[36, 39]].mean(0), pts[[42, 45]].mean(0)
        lip = (pts[48] + pts[54]) / 2
    elif n == 5:
        eye_l, eye_r, lip = pts[0], pts[1], (pts[3] + pts[4]) / 2
    elif n >= 101:
        eye_l, eye_r, lip = pts[[39, 42, 45, 48]].mean(0), pts[[51, 54, 57, 60]].mean(0), (pts[75] + pts[81]) / 2
    else:
        raise ValueError(f"cannot align a crop on {n} landmarks; expected 203, 106, 101+, 68 or 5")
    return (eye_l + eye_r) / 2, lip


def face_rect(
    pts: np.ndarray, scale: float = SCALE, vx_ratio: float = VX_RATIO, vy_ratio: float = VY_RATIO
) -> tuple[np.ndarray, float, float]:
    """(centre, side, angle) of the square crop around landmarks, angle in radians (image x-axis rotation)."""
    pts = np.asarray(pts, dtype=np.float64)
    eye, lip = eye_lip_anchor(pts)
    uy = lip - eye
    length = float(np.linalg.norm(uy))
    uy = np.array([0.0, 1.0]) if length <= 1e-3 else uy / length
    ux = np.array([uy[1], -uy[0]])
    angle = math.acos(max(-1.0, min(1.0, ux[0])))
    if ux[1] < 0:
        angle = -angle
    rot = np.stack([ux, uy])
    center0 = pts.mean(axis=0)
    local = (pts - center0) @ rot.T
    lo, hi = local.min(axis=0), local.max(axis=0)
    mid = (lo + hi) / 2
    side = float(max(hi - lo)) * scale
    center = center0 + ux * mid[0] + uy * mid[1]
    center = center + ux * (vx_ratio * side) + uy * (vy_ratio * side)
    return center, side, angle


def crop_matrix(pts: np.ndarray, dsize: int = DSIZE, **rect_kwargs: float) -> np.ndarray:
    """3×3 original→crop matrix that rotates the face upright and maps its square onto ``dsize``²."""
    center, side, angle = face_rect(pts, **rect_kwargs)
    s = dsize / side
    cos, sin = math.cos(angle), math.sin(angle)
    cx, cy = center
    t = dsize / 2
    return np.array(
        [
            [s * cos, s * sin, t - s * (cos * cx + sin * cy)],
            [-s * sin, s * cos, t - s * (-sin * cx + cos * cy)],
            [0.0, 0.0, 1.0],
        ]
    )


class Landmark203:
    """Runs a landmark.onnx-style session: seed points → aligned crop → 203 points in original-image pixels."""

    def __init__(self, session: Any, dsize: int = DSIZE) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.dsize = int(dsize)

    def _points_output(self, outputs: list[np.ndarray]) -> np.ndarray:
        """The output holding 203 (x, y) pairs: found by size, else the third one as upstream reads it."""
        for out in outputs:
            if np.asarray(out).size == 2 * NUM_POINTS:
                return np.asarray(out)
        if len(outputs) >= 3:
            return np.asarray(outputs[2])
        raise ValueError(f"landmark outputs {[np.shape(o) for o in outputs]} hold no {NUM_POINTS}×2 points")

    def predict(self, image_rgb: np.ndarray, seed_lmk: np.ndarray) -> np.ndarray:
        """203×2 float32 landmarks; ``seed_lmk`` (K×2 in ``image_rgb`` pixels) only positions the crop."""
        o2c = crop_matrix(np.asarray(seed_lmk, dtype=np.float64).reshape(-1, 2), self.dsize)
        crop = cv2.warpAffine(image_rgb, o2c[:2], (self.dsize, self.dsize), flags=cv2.INTER_LINEAR)
        blob = (crop.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        outputs = self.session.run(None, {self.input_name: blob})
        pts = self._points_output(outputs).reshape(-1, 2)[:NUM_POINTS].astype(np.float64) * self.dsize
        c2o = np.linalg.inv(o2c)
        return (pts @ c2o[:2, :2].T + c2o[:2, 2]).astype(np.float32)
