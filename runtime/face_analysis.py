"""Faces as the pipeline needs them: detect, then 106 → 203 landmarks, and track 203 landmarks across frames.

The official cropper uses the two landmark sets for different jobs, and so do we: a still source is cropped on the
detector's 106 points, while the 203 LivePortrait points give the eye/lip ratios, seed the next frame when a video is
tracked, and place the crops of driving and source videos.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.faces import FaceDetector, Landmark106, Landmark203


@dataclass
class FaceLandmarks:
    """One detected face: the insightface 106 points and the 203 points computed from them."""

    lmk106: np.ndarray  # 106×2 float32, original-image pixels
    lmk203: np.ndarray  # 203×2 float32, original-image pixels


class FaceAnalyzer:
    """SCRFD detector + 2d106det + landmark.onnx, combined the way the official cropper combines them."""

    def __init__(self, det_session, lmk106_session, lmk203_session, det_thresh: float = 0.15) -> None:
        self.detector = FaceDetector(det_session, det_thresh=det_thresh)
        self.lmk106 = Landmark106(lmk106_session)
        self.lmk203 = Landmark203(lmk203_session)

    def faces(self, image_rgb: np.ndarray, max_num: int = 0) -> list[FaceLandmarks]:
        """Landmarks of every face (at most ``max_num`` when > 0), largest first (the official 'large-small')."""
        result = []
        for face in self.detector.detect(image_rgb, direction="large-small", max_num=max_num):
            seed = self.lmk106.predict(image_rgb, face.bbox)
            result.append(FaceLandmarks(lmk106=seed, lmk203=self.lmk203.predict(image_rgb, seed)))
        return result

    def first_face(self, image_rgb: np.ndarray) -> FaceLandmarks | None:
        """Landmarks of the largest face, or None when there is none."""
        faces = self.faces(image_rgb, max_num=1)
        return faces[0] if faces else None

    def track(self, image_rgb: np.ndarray, previous: np.ndarray | None) -> np.ndarray | None:
        """Next frame's 203 points: the 203-point model seeded by the last ones, with no re-detection (official);
        detect only while no face has been found yet."""
        if previous is None:
            face = self.first_face(image_rgb)
            return None if face is None else face.lmk203
        return self.lmk203.predict(image_rgb, previous)


class LandmarkTracker:
    """Per-frame 203 points of one face through a video; None for the frames before a face was first found."""

    def __init__(self, analyzer: FaceAnalyzer) -> None:
        self.analyzer = analyzer
        self.previous: np.ndarray | None = None

    def __call__(self, image_rgb: np.ndarray) -> np.ndarray | None:
        lmk = self.analyzer.track(image_rgb, self.previous)
        if lmk is not None:
            self.previous = lmk
        return lmk
