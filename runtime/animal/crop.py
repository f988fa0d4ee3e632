"""The animal source crop: upstream's `crop_image` on X-Pose's 9 or 68 points.

Same rule as the human source crop (runtime/crop.py): the roll from the eye and mouth anchors (9 points: the two
eye centres and the mouth corners; 68: iBUG eye corners and mouth corners), the rotated square box of all points ×
scale, shifted by vy; the geometry in float64 like upstream's for X-Pose's float64 points; 256² by INTER_AREA.
"""

from __future__ import annotations

import numpy as np

from runtime.crop import CropParams, CropResult, crop_face

ANIMAL_POINT_COUNTS = (9, 68)


def crop_animal_face(image_rgb: np.ndarray, points: np.ndarray, params: CropParams) -> CropResult:
    """Cut the animal face described by X-Pose's points (n×2, n = 9 or 68) out of the source photo."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] not in ANIMAL_POINT_COUNTS:
        raise ValueError(f"animal points must be 9×2 or 68×2, got shape {pts.shape}")
    return crop_face(image_rgb, pts, params, dtype=np.float64)
