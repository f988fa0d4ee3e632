"""Faces as the pipeline needs them: detect, then 106 → 203 landmarks, and track 203 landmarks across frames."""

from __future__ import annotations

import numpy as np

from runtime.faces import FaceDetector, Landmark106, Landmark203


class FaceAnalyzer:
    """SCRFD detector + 2d106det + landmark.onnx, combined the way the official cropper combines them."""

    def __init__(self, det_session, lmk106_session, lmk203_session, det_thresh: float = 0.15) -> None:
        self.detector = FaceDetector(det_session, det_thresh=det_thresh)
        self.lmk106 = Landmark106(lmk106_session)
        self.lmk203 = Landmark203(lmk203_session)

    def faces(self, image_rgb: np.ndarray) -> list[np.ndarray]:
        """203-point landmarks of every face, largest first (the official 'large-small' order)."""
        result = []
        for face in self.detector.detect(image_rgb, direction="large-small"):
            seed = self.lmk106.predict(image_rgb, face.bbox)
            result.append(self.lmk203.predict(image_rgb, seed))
        return result

    def first_face(self, image_rgb: np.ndarray) -> np.ndarray | None:
        """Landmarks of the largest face, or None when there is none."""
        faces = self.detector.detect(image_rgb, direction="large-small", max_num=1)
        if not faces:
            return None
        seed = self.lmk106.predict(image_rgb, faces[0].bbox)
        return self.lmk203.predict(image_rgb, seed)

    def track(self, image_rgb: np.ndarray, previous: np.ndarray | None) -> np.ndarray | None:
        """Next frame's landmarks: re-run the 203-point model seeded by the last ones (detect when there are none)."""
        if previous is None:
            return self.first_face(image_rgb)
        return self.lmk203.predict(image_rgb, previous)


class LandmarkTracker:
    """Per-frame landmarks of one face through a video; counts frames where no face could be found."""

    def __init__(self, analyzer: FaceAnalyzer) -> None:
        self.analyzer = analyzer
        self.previous: np.ndarray | None = None
        self.missing = 0

    def __call__(self, image_rgb: np.ndarray) -> np.ndarray | None:
        lmk = self.analyzer.track(image_rgb, self.previous)
        if lmk is None:
            self.missing += 1
        else:
            self.previous = lmk
        return lmk
