"""X-Pose (UniPose) as the animal flow uses it: the input image and text features it is fed, and how its 50
candidate groups become the n face points of one animal — plus our rule for a photo with no animal.

Graph contract (`xpose.onnx`): inputs `image` 1×3×H×W float32 (H, W dynamic), `instance_text` 1×512,
`keypoint_text` 68×512 (n rows, then zeros), `keypoint_mask` 68 (n ones, then zeros); outputs `logits` 1×50 (the
'face' column), `boxes` 1×50×4 and `keypoints` 1×50×68×2 (x, y in [0, 1] of the input).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.animal.resize import pil_bilinear_resize
from runtime.pipeline import AnimationError

# Upstream's keypoint sets: 'animal_face_9' (default; eyes, nose, mouth) or 'animal_face_68' (iBUG-style).
FACE_TYPES = {"animal_face_9": 9, "animal_face_68": 68}
MAX_KEYPOINTS = 68  # keypoint-text rows the graph takes (upstream pads to 100 and keeps 68)
TEXT_FILE = "xpose_text.npz"  # cached CLIP text features, written by the animal export
SHORT_SIDE, MAX_SIDE = 800, 1333  # X-Pose's RandomResize([800], max_size=1333)
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# Below this score (sigmoid of the best group's 'face' logit) the photo is taken to show no animal face. X-Pose's
# own demo drops candidates under 0.1 (inference_on_a_image.py, box_threshold); upstream LivePortrait keeps any
# score > 0 and so always "finds" a face, crops a random patch and animates it.
DEFAULT_MIN_SCORE = 0.1


class NoAnimalFace(AnimationError):
    """X-Pose's best candidate scores under the threshold: the photo most likely shows no animal face."""


def input_size(width: int, height: int, short: int = SHORT_SIDE, max_size: int = MAX_SIDE) -> tuple[int, int]:
    """(width, height) X-Pose sees: short side ``short`` unless the long side would pass ``max_size`` (then the
    short side shrinks to round(max_size·short/long)); long side floored; a photo already at size is kept."""
    lo, hi = float(min(width, height)), float(max(width, height))
    if hi / lo * short > max_size:
        short = int(round(max_size * lo / hi))
    if (width <= height and width == short) or (height <= width and height == short):
        return width, height
    if width < height:
        return short, int(short * height / width)
    return int(short * width / height), short


def preprocess(image_rgb: np.ndarray) -> np.ndarray:
    """H×W×3 uint8 RGB → 1×3×h×w float32: Pillow-bilinear resize to ``input_size``, /255, ImageNet mean/std."""
    h, w = image_rgb.shape[:2]
    size = input_size(w, h)
    resized = image_rgb if size == (w, h) else pil_bilinear_resize(image_rgb, size)
    x = (resized.astype(np.float32) / np.float32(255.0) - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


@dataclass(frozen=True)
class TextFeatures:
    """The three text inputs of the graph for one keypoint set."""

    instance: np.ndarray  # 1×512 ('face')
    keypoints: np.ndarray  # 68×512: the n keypoint names, then zero rows
    mask: np.ndarray  # 68: n ones, then zeros

    @property
    def count(self) -> int:
        return int(self.mask.sum())

    def feeds(self) -> dict[str, np.ndarray]:
        return {"instance_text": self.instance, "keypoint_text": self.keypoints, "keypoint_mask": self.mask}


def load_text_features(path: str | Path, face_type: str) -> TextFeatures:
    """Read `xpose_text.npz` (fp16 or fp32 arrays; no pickle) for 'animal_face_9' or 'animal_face_68'."""
    if face_type not in FACE_TYPES:
        raise ValueError(f"animal face type must be one of {', '.join(FACE_TYPES)}, got {face_type!r}")
    n = FACE_TYPES[face_type]
    with np.load(Path(path), allow_pickle=False) as data:
        try:
            instance = np.asarray(data[f"ins_text_embeddings_{n}"], dtype=np.float32).reshape(1, -1)
            names = np.asarray(data[f"kpt_text_embeddings_{n}"], dtype=np.float32)
        except KeyError as exc:
            raise ValueError(f"{path} lacks {exc.args[0]}: re-export the animal models") from exc
    if instance.shape != (1, 512) or names.shape != (n, 512):
        raise ValueError(f"{path}: text features of {face_type} have shapes {instance.shape}, {names.shape}; "
                         f"expected (1, 512) and ({n}, 512)")
    keypoints = np.zeros((MAX_KEYPOINTS, 512), dtype=np.float32)
    keypoints[:n] = names
    mask = np.zeros(MAX_KEYPOINTS, dtype=np.float32)
    mask[:n] = 1.0
    return TextFeatures(instance=instance, keypoints=keypoints, mask=mask)


@dataclass(frozen=True)
class AnimalFace:
    """The chosen group: its n points in source pixels (float64, as upstream), score and group index."""

    points: np.ndarray
    score: float
    index: int


def select_face(outputs: dict[str, np.ndarray], count: int, width: int, height: int) -> AnimalFace:
    """Upstream's post-processing: the highest-scoring group (lowest index on ties; NMS never changes the first
    pick), its first ``count`` points scaled by the ORIGINAL source size, no half-pixel shift, no clipping."""
    logits = np.asarray(outputs["logits"], dtype=np.float64).reshape(-1)
    keypoints = np.asarray(outputs["keypoints"], dtype=np.float64)
    keypoints = keypoints.reshape(logits.shape[0], -1, 2)
    scores = 1.0 / (1.0 + np.exp(-logits))
    best = int(np.argmax(scores))  # first maximum
    points = keypoints[best, :count] * np.array([width, height], dtype=np.float64)
    return AnimalFace(points=points, score=float(scores[best]), index=best)


class XPoseDetector:
    """X-Pose on a loaded graph runner plus the text features of one keypoint set."""

    def __init__(self, runner: Any, text: TextFeatures, min_score: float = DEFAULT_MIN_SCORE) -> None:
        self.runner, self.text, self.min_score = runner, text, float(min_score)

    def detect(self, image_rgb: np.ndarray, name: str = "the source image") -> AnimalFace:
        """The animal face of ``image_rgb``; NoAnimalFace when the best score is under ``min_score``."""
        h, w = image_rgb.shape[:2]
        outputs = self.runner.run({"image": preprocess(image_rgb), **self.text.feeds()})
        face = select_face(outputs, self.text.count, w, h)
        if face.score < self.min_score:
            raise NoAnimalFace(
                f"no animal face found in {name} (best score {face.score:.2f} < threshold {self.min_score:.2f}); "
                "use a photo where a cat's or dog's face is clearly visible, or lower --animal-min-score "
                "(0 keeps upstream's behaviour of always taking the best candidate)")
        return face
