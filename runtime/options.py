"""Animation options: every knob of the official LivePortrait CLI that changes the result, with its defaults.

Defaults are those the official command line applies (its argument config overrides the inference config, e.g.
``flag_normalize_lip`` is False on the command line although the inference config says True).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

ANIMATION_REGIONS = ("exp", "pose", "lip", "eyes", "all")
DRIVING_OPTIONS = ("expression-friendly", "pose-friendly")
AUDIO_PRIORITIES = ("source", "driving")
ANIMAL_FACE_TYPES = ("animal_face_9", "animal_face_68")  # X-Pose's keypoint sets (upstream's animal_face_type)

# Process noise of the v2v Kalman smoother; upstream hard-codes it (not a CLI option).
SMOOTH_PROCESS_VARIANCE = 1e-5


@dataclass
class AnimationOptions:
    """What to animate and how; validated on construction so a typo fails before any model runs."""

    # motion transfer
    flag_relative_motion: bool = True
    flag_stitching: bool = True
    flag_eye_retargeting: bool = False
    flag_lip_retargeting: bool = False
    flag_normalize_lip: bool = False
    lip_normalize_threshold: float = 0.03
    flag_source_video_eye_retargeting: bool = False
    source_video_eye_retargeting_threshold: float = 0.18
    # Kept for configuration compatibility: the current official pipeline decides v2v head rotation by
    # animation_region ("all"/"pose" inherit the driving rotation); this flag no longer changes anything there.
    flag_video_editing_head_rotation: bool = False
    animation_region: str = "all"
    driving_option: str = "expression-friendly"
    driving_multiplier: float = 1.0
    driving_smooth_observation_variance: float = 3e-7

    # output
    flag_pasteback: bool = True
    output_fps: float = 25.0
    # The official writer always encodes at CRF 18 (imageio-ffmpeg is never handed the configured value).
    crf: int = 18
    # The concat video's middle panel is the 256² source input upscaled (official); True shows the 512² crop.
    flag_concat_source_512: bool = False
    audio_priority: str = "driving"

    # source crop
    flag_do_crop: bool = True
    flag_do_rot: bool = True
    det_thresh: float = 0.15
    scale: float = 2.3
    vx_ratio: float = 0.0
    vy_ratio: float = -0.125
    source_max_dim: int = 1280
    source_division: int = 2

    # driving crop
    flag_crop_driving_video: bool = False
    scale_crop_driving_video: float = 2.2
    vx_ratio_crop_driving_video: float = 0.0
    vy_ratio_crop_driving_video: float = -0.1

    # animals (pets): the liveportrait_animals models and the X-Pose face detector instead of the human flow
    animal: bool = False
    animal_face_type: str = "animal_face_9"
    # X-Pose score (sigmoid of the best candidate) under which the photo counts as showing no animal face
    animal_min_score: float = 0.1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first option whose value cannot work."""
        _choice("animation_region", self.animation_region, ANIMATION_REGIONS)
        _choice("driving_option", self.driving_option, DRIVING_OPTIONS)
        _choice("audio_priority", self.audio_priority, AUDIO_PRIORITIES)
        _choice("animal_face_type", self.animal_face_type, ANIMAL_FACE_TYPES)
        if not 0.0 <= float(self.animal_min_score) <= 1.0:
            raise ValueError(f"animal_min_score must be in [0, 1], got {self.animal_min_score!r}")
        if self.animal:
            unsupported = [name for name in ("flag_eye_retargeting", "flag_lip_retargeting", "flag_normalize_lip",
                                             "flag_source_video_eye_retargeting") if getattr(self, name)]
            if unsupported:
                raise ValueError(f"{', '.join(unsupported)}: not available with animal (the animal flow has no "
                                 "eye/lip retargeting or lip normalisation, as upstream)")
        for name in (
            "driving_smooth_observation_variance",
            "output_fps",
            "scale",
            "scale_crop_driving_video",
        ):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0.0 <= float(self.det_thresh) <= 1.0:
            raise ValueError(f"det_thresh must be in [0, 1], got {self.det_thresh!r}")
        if not 0 <= int(self.crf) <= 51 or int(self.crf) != self.crf:
            raise ValueError(f"crf must be an integer in [0, 51], got {self.crf!r}")
        if int(self.source_division) < 1:
            raise ValueError(f"source_division must be >= 1, got {self.source_division!r}")
        if int(self.source_max_dim) < 0:
            raise ValueError(f"source_max_dim must be >= 0 (0 = no limit), got {self.source_max_dim!r}")
        if float(self.lip_normalize_threshold) < 0:
            raise ValueError(f"lip_normalize_threshold must be >= 0, got {self.lip_normalize_threshold!r}")

    def replace(self, **changes: Any) -> AnimationOptions:
        """A validated copy with some fields changed; unknown names raise ValueError naming them."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown animation option(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    @property
    def any_retargeting(self) -> bool:
        """True when eye or lip retargeting replaces the plain stitching path (Algorithm 1, third branch)."""
        return self.flag_eye_retargeting or self.flag_lip_retargeting


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
