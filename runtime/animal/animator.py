"""The animal flow on the human frame loop: X-Pose crops the source, AnimalMotionComposer moves it, and
runtime.pipeline.Animator does the rest (driving crop and motion, warp + decode, stitching, paste-back).

What differs from the human flow, as upstream: a still source only, one face (X-Pose's best candidate), no
retargeting; the driving video is cropped only with --crop-driving-video (no "not square" rule: upstream's animal
pipeline stretches any uncropped clip to 256²).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from runtime.animal.crop import crop_animal_face
from runtime.animal.motion import AnimalMotionComposer
from runtime.animal.xpose import TEXT_FILE, AnimalFace, XPoseDetector, load_text_features
from runtime.crop import CropParams
from runtime.manifest import ANIMAL_EXPORT_HINT, ANIMAL_FAMILY, MANIFEST_NAME, ModelsError
from runtime.options import AnimationOptions
from runtime.pipeline import AnimationError, Animator, DrivingPlan, SourceFace, resize_256
from runtime.sessions import ModelSet


def animal_models_dir(models_dir: str | Path) -> Path:
    """The animal export: ``models_dir`` itself when its manifest is the animal family's, else its
    ``liveportrait_animals/`` subfolder (where `cli.py export --family liveportrait_animals` writes it)."""
    folder = Path(models_dir)
    manifest = folder / MANIFEST_NAME
    if manifest.is_file():
        try:
            family = json.loads(manifest.read_text()).get("exporter", {}).get("family")
        except (OSError, ValueError):
            family = None
        if family == ANIMAL_FAMILY:
            return folder
    return folder / ANIMAL_FAMILY


class AnimalAnimator(Animator):
    """Animator over a ModelSet of the animal family (see runtime.manifest.ANIMAL_GRAPHS)."""

    def __init__(self, models: ModelSet) -> None:
        if getattr(models, "family", None) != ANIMAL_FAMILY:
            raise ValueError(f"AnimalAnimator needs the {ANIMAL_FAMILY} models, got family {models.family!r}")
        super().__init__(models)
        self.text_path = models.dir / TEXT_FILE
        if not self.text_path.is_file():
            raise ModelsError(f"{self.text_path} is missing (X-Pose's text features). Export with: "
                              f"{ANIMAL_EXPORT_HINT}")
        self._detectors: dict[tuple[str, float], XPoseDetector] = {}

    def detector(self, options: AnimationOptions) -> XPoseDetector:
        """X-Pose with the text features of options.animal_face_type (one per type and threshold)."""
        key = (options.animal_face_type, float(options.animal_min_score))
        if key not in self._detectors:
            text = load_text_features(self.text_path, options.animal_face_type)
            self._detectors[key] = XPoseDetector(self.models.runner("xpose"), text, options.animal_min_score)
        return self._detectors[key]

    def detect_animal(self, image_rgb: np.ndarray, options: AnimationOptions,
                      source_name: str = "the source image") -> AnimalFace:
        """X-Pose's best animal face of the (already size-limited) source photo, or NoAnimalFace."""
        return self.detector(options).detect(image_rgb, source_name)

    def source_faces(self, image_rgb: np.ndarray, options: AnimationOptions, face_index: int | None = 0,
                     source_name: str = "the source image") -> list[SourceFace]:
        """The one animal face of the photo, cropped on X-Pose's points (or the whole photo with --no-do-crop)."""
        if face_index not in (0, None):
            raise AnimationError("the animal flow animates one face, X-Pose's best candidate: --face-index must be 0")
        if not options.flag_do_crop:
            return [self._encode_face(resize_256(image_rgb), None, None, image_rgb, options)]
        face = self.detect_animal(image_rgb, options, source_name)
        params = CropParams(dsize=512, scale=options.scale, vx_ratio=options.vx_ratio, vy_ratio=options.vy_ratio,
                            flag_do_rot=options.flag_do_rot)
        crop = crop_animal_face(image_rgb, face.points, params)
        return [self._encode_face(crop.img_crop_256, crop, None, image_rgb, options)]

    def composer(self, face: SourceFace, options: AnimationOptions, driving_is_video: bool) -> AnimalMotionComposer:
        """The animal motion rule (absolute rotation, tz = 0, hull multiplier, stitching, driving multiplier)."""
        stitching = self.stages.stitching if options.flag_stitching else None
        return AnimalMotionComposer(face.info, stitching, options.driving_multiplier)

    def plan_driving(self, frames: Iterable[np.ndarray], options: AnimationOptions, square: bool,
                     need_lmks: bool) -> DrivingPlan:
        """Upstream's animal rule: crop the driving clip only with --crop-driving-video, whatever its shape."""
        return super().plan_driving(frames, options, square=True, need_lmks=False)
