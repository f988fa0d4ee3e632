"""LivePortrait's 203-point landmarks (``landmark.onnx``) from seed landmarks, torch-free.

The reference crops a 224² square aligned with the face: the "up" axis runs from the eye centre to the lip centre of
the seed points (so roll is removed), the square is 1.5 × the larger extent of the seed points in that frame, shifted
by 0.1 of its size towards the forehead. The network takes RGB in [0, 1] and its third output (1×406) holds the
points in [0, 1] crop units. Seeds may be 106 insightface points, 203 points of a previous frame, 101, 68 or 5 points.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from runtime.crop import LANDMARK203_PARAMS, face_crop_matrix, transform_points

NUM_POINTS = 203


class Landmark203:
    """Runs a landmark.onnx-style session: seed points → aligned crop → 203 points in original-image pixels."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.dsize = LANDMARK203_PARAMS.dsize

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
        o2c = face_crop_matrix(seed_lmk, LANDMARK203_PARAMS)
        crop = cv2.warpAffine(image_rgb, o2c[:2], (self.dsize, self.dsize), flags=cv2.INTER_LINEAR)
        blob = (crop.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        outputs = self.session.run(None, {self.input_name: blob})
        pts = self._points_output(outputs).reshape(-1, 2)[:NUM_POINTS].astype(np.float32) * np.float32(self.dsize)
        return transform_points(pts, np.linalg.inv(o2c))  # float32 throughout, as the official runner
