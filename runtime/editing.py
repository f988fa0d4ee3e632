"""Portrait editing: re-pose a photo, open/close eyes and lips, smile, wink, gaze, from sliders (no driving video).

The semantics are those of the official app's retargeting panel: every expression slider adds a fixed multiple of
the slider value to a few entries of the source's expression offsets δ; pitch/yaw/roll are added to the source's
own angles; mov_x/mov_y shift keypoint 5 of δ and mov_z scales the posed keypoints; target eye/lip-open ratios go
through the eye/lip retargeting MLPs; stitching then keeps the shoulders in place for paste-back.

Everything that depends only on the photo (crop, keypoint info, the 32×16×64×64 appearance feature, landmarks,
paste-back mask) is computed once in PortraitEditor's constructor, so moving a slider costs one keypoint
composition, the small MLPs and one warping + decoder run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from runtime.motion import apply_stitching, retarget, rotation_matrix, transform_keypoints
from runtime.options import AnimationOptions
from runtime.paste_back import paste_back as paste_face
from runtime.paste_back import prepare_paste_back
from runtime.pipeline import Animator, SourceFace
from runtime.retargeting import combined_eye_ratio, combined_lip_ratio, eye_close_ratio, lip_close_ratio

# (min, max) of every slider, as the official app's retargeting panel offers them.
EDIT_RANGES: dict[str, tuple[float, float]] = {
    "eye_ratio": (0.0, 0.8),
    "lip_ratio": (0.0, 0.8),
    "pitch": (-15.0, 15.0),
    "yaw": (-25.0, 25.0),
    "roll": (-15.0, 15.0),
    "mov_x": (-0.19, 0.19),
    "mov_y": (-0.19, 0.19),
    "mov_z": (0.9, 1.2),
    "lip_variation_zero": (-0.09, 0.09),
    "lip_variation_one": (-20.0, 15.0),
    "lip_variation_two": (0.0, 15.0),
    "lip_variation_three": (-90.0, 120.0),
    "smile": (-0.3, 1.3),
    "wink": (0.0, 39.0),
    "eyebrow": (-30.0, 30.0),
    "eyeball_direction_x": (-30.0, 30.0),
    "eyeball_direction_y": (-63.0, 63.0),
}

# One line per slider, for CLI help and UIs.
EDIT_HELP: dict[str, str] = {
    "eye_ratio": "target eyes-open ratio (default: the photo's own)",
    "lip_ratio": "target lip-open ratio (default: the photo's own)",
    "pitch": "head pitch added to the photo's, degrees",
    "yaw": "head yaw added to the photo's, degrees",
    "roll": "head roll added to the photo's, degrees",
    "mov_x": "horizontal head movement",
    "mov_y": "vertical head movement",
    "mov_z": "head scale (toward / away from the camera)",
    "lip_variation_zero": "pouting",
    "lip_variation_one": "pursing",
    "lip_variation_two": "grin",
    "lip_variation_three": "lips closed <-> open",
    "smile": "smile",
    "wink": "wink",
    "eyebrow": "eyebrows down <-> up",
    "eyeball_direction_x": "horizontal gaze",
    "eyeball_direction_y": "vertical gaze",
}

# Crop scale of the official retargeting panel (its default differs from animation's 2.3).
EDIT_CROP_SCALE = 2.5

Entry = tuple[int, int, float]  # (keypoint row, axis, coefficient) of δ


def _entries(spec: str) -> tuple[Entry, ...]:
    """'row,axis,coef; ...' → entries (a compact, readable form for the tables below)."""
    out = []
    for item in spec.split(";"):
        row, axis, coef = item.split(",")
        out.append((int(row), int(axis), float(coef)))
    return tuple(out)


# δ[row, axis] += value · coefficient for each slider; (positive, negative) tables where the sign matters.
# The vertical gaze also half-closes the lids (the official "blink" term), folded into its coefficients here.
EXPRESSION_EDITS: dict[str, tuple[tuple[Entry, ...], tuple[Entry, ...]]] = {
    name: (_entries(pos), _entries(neg if neg else pos))
    for name, pos, neg in (
        ("eyeball_direction_x", "11,0,0.0007; 15,0,0.001", "11,0,0.001; 15,0,0.0007"),
        ("eyeball_direction_y", "11,1,-0.0005; 13,1,-0.00015; 15,1,-0.0005; 16,1,-0.00015", ""),
        ("smile", "20,1,-0.01; 14,1,-0.02; 17,1,0.0065; 17,2,0.003; 13,1,-0.00275; 16,1,-0.00275; "
                  "3,1,-0.0035; 7,1,-0.0035", ""),
        ("wink", "11,1,0.001; 13,1,-0.0003; 17,0,0.0003; 17,1,0.0003; 3,1,-0.0003", ""),
        ("eyebrow", "1,1,0.001; 2,1,-0.001", "1,0,-0.001; 2,0,0.001; 1,1,0.0003; 2,1,-0.0003"),
        ("lip_variation_zero", "19,0,1", ""),
        ("lip_variation_one", "14,1,0.001; 3,1,-0.0005; 7,1,-0.0005; 17,2,-0.0005", ""),
        ("lip_variation_two", "20,2,-0.001; 20,1,-0.001; 14,1,-0.001", ""),
        ("lip_variation_three", "19,1,0.001; 19,2,0.0001; 17,1,-0.0001", ""),
        ("mov_x", "5,0,-1", ""),  # the official panel moves keypoint 5 against the slider's sign
        ("mov_y", "5,1,1", ""),
    )
}


@dataclass
class EditParams:
    """Slider values; the defaults leave the photo as it is. Validated against EDIT_RANGES on construction."""

    eye_ratio: float | None = None
    lip_ratio: float | None = None
    pitch: float = 0.0
    yaw: float = 0.0
    roll: float = 0.0
    mov_x: float = 0.0
    mov_y: float = 0.0
    mov_z: float = 1.0
    lip_variation_zero: float = 0.0
    lip_variation_one: float = 0.0
    lip_variation_two: float = 0.0
    lip_variation_three: float = 0.0
    smile: float = 0.0
    wink: float = 0.0
    eyebrow: float = 0.0
    eyeball_direction_x: float = 0.0
    eyeball_direction_y: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first field that is not a number inside its slider range."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.name in ("eye_ratio", "lip_ratio"):
                continue
            low, high = EDIT_RANGES[f.name]
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                    or not math.isfinite(value):
                raise ValueError(f"{f.name} must be a number in [{low}, {high}], got {value!r}")
            if not low <= value <= high:
                raise ValueError(f"{f.name} must be in [{low}, {high}], got {value!r}")

    def replace(self, **changes: float | None) -> EditParams:
        """A validated copy with some sliders moved."""
        return dataclasses.replace(self, **changes)


def edited_expression(exp: np.ndarray, params: EditParams) -> np.ndarray:
    """The source's 1×21×3 expression offsets with every expression slider (and mov_x/mov_y) applied."""
    out = np.array(exp, dtype=np.float32, copy=True).reshape(1, -1, 3)
    for name, (positive, negative) in EXPRESSION_EDITS.items():
        value = float(getattr(params, name))
        if value == 0.0:
            continue
        for row, axis, coef in positive if value > 0 else negative:
            out[0, row, axis] += np.float32(value * coef)
    return out


class PortraitEditor:
    """One photo prepared for editing; render() is cheap enough to follow a slider."""

    def __init__(self, animator: Animator, image_rgb: np.ndarray, options: AnimationOptions | None = None,
                 face_index: int = 0) -> None:
        self.options = options or AnimationOptions(scale=EDIT_CROP_SCALE)
        self.stages = animator.stages
        self.image = animator.source_image(np.asarray(image_rgb), self.options)
        self.face: SourceFace = animator.source_faces(self.image, self.options, face_index)[0]
        lmk = self.face.lmk
        if lmk is None:  # --no-do-crop: the photo is the crop; find its landmarks once for the ratios
            lmk = animator.analyzer(self.options.det_thresh).first_face(self.image)
        self.lmk = lmk
        self._mask = self.face.mask
        crop = self.face.crop
        if crop is not None and self._mask is None:
            h, w = self.image.shape[:2]
            self._mask = prepare_paste_back(None, crop.M_c2o, (w, h), crop_size=crop.img_crop.shape[0])
        self.x_s = transform_keypoints(self.face.info)
        self._eye = None if lmk is None else eye_close_ratio(lmk)  # 1×2, left/right
        self._lip = None if lmk is None else lip_close_ratio(lmk)  # 1×1
        # The sliders' starting values, rounded to the slider step as the official panel shows them.
        self.source_eye_ratio: float = math.nan if self._eye is None else round(float(self._eye.mean()), 2)
        self.source_lip_ratio: float = math.nan if self._lip is None else round(float(self._lip[0, 0]), 2)

    @property
    def crop_rgb(self) -> np.ndarray:
        """The unedited 512² (or network-size) crop the edits are rendered into."""
        return self.face.crop.img_crop if self.face.crop is not None else self.face.image_256

    def driving_keypoints(self, params: EditParams) -> np.ndarray:
        """The 1×21×3 keypoints the warp is driven with for these slider values (source keypoints: self.x_s)."""
        params.validate()
        info = self.face.info
        rot = rotation_matrix(info.pitch + params.pitch, info.yaw + params.yaw, info.roll + params.roll)
        exp = edited_expression(info.exp, params)
        # As the official panel: s·mov_z·(x_c·R + δ) + t, with the whole t (tz included) added.
        x_d = np.float32(params.mov_z) * info.scale[:, :, None] * (info.kp @ rot + exp) + info.t[:, None, :]
        x_d = x_d.astype(np.float32)
        if params.eye_ratio is not None and params.eye_ratio != self.source_eye_ratio:
            cond = combined_eye_ratio(self._ratios("eye_ratio", self._eye), np.float32([params.eye_ratio]))
            x_d = x_d + retarget(self.stages.eye, self.x_s, cond, "eye")
        if params.lip_ratio is not None and params.lip_ratio != self.source_lip_ratio:
            cond = combined_lip_ratio(self._ratios("lip_ratio", self._lip), np.float32([params.lip_ratio]))
            x_d = x_d + retarget(self.stages.lip, self.x_s, cond, "lip")
        if self.options.flag_stitching:
            x_d = apply_stitching(self.stages.stitching, self.x_s, x_d)
        return x_d.astype(np.float32)

    def _ratios(self, name: str, ratios: np.ndarray | None) -> np.ndarray:
        if ratios is None:
            raise ValueError(f"{name} needs the photo's face landmarks, but no face was found in it")
        return ratios

    def render(self, params: EditParams, paste_back: bool = True) -> np.ndarray:
        """The edited portrait, RGB uint8: pasted into the whole photo, or the 512² crop (paste_back=False)."""
        x_d = self.driving_keypoints(params)
        crop = self.stages.warp_decode(self.face.feature, self.x_s, x_d)[0]
        if not paste_back or self.face.crop is None:
            return crop
        return paste_face(crop, self.face.crop.M_c2o, self.image, self._mask)
