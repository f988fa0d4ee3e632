"""Motion transfer maths of LivePortrait in numpy: head pose → rotation, implicit keypoint transform, and the
per-frame composition of source and driving motion (relative/absolute, animation regions, stitching, retargeting).

Keypoints follow the official convention x = s · (x_c · R + δ) + t with row vectors, R being the transposed
Rz·Ry·Rx product, and only tx, ty applied (tz is dropped).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from runtime.options import AnimationOptions
from runtime.retargeting import combined_eye_ratio, combined_lip_ratio, eye_close_ratio, lip_close_ratio
from runtime.smoothing import kalman_smooth

NUM_KP = 21
Net = Callable[[np.ndarray], np.ndarray]

# Rows of the expression δ animated when the region is "lip" / "eyes".
LIP_ROWS = (6, 12, 14, 17, 19, 20)
EYE_ROWS = (11, 13, 15, 16, 18)


def _expression_mask() -> np.ndarray:
    """Entries of δ taken from the driving frame for absolute motion and for v2v (the others keep the source's)."""
    mask = np.zeros((NUM_KP, 3), dtype=bool)
    mask[[1, 2, 6, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20], :] = True
    mask[3:5, 1] = True
    mask[5, 2] = True
    mask[8, 2] = True
    mask[9, 1:] = True
    return mask


EXP_MASK = _expression_mask()
LIP_MASK = np.zeros((NUM_KP, 3), dtype=bool)
LIP_MASK[list(LIP_ROWS), :] = True
EYE_MASK = np.zeros((NUM_KP, 3), dtype=bool)
EYE_MASK[list(EYE_ROWS), :] = True

# Neutral (closed-mouth) expression subtracted when the driving input is a single image (upstream lip_array.pkl).
LIP_ARRAY = np.array(
    [
        [-9.4524e-05, 0.00024222, -4.009739999999999e-05],
        [0.000208596, 0.000468054, 1.2746399999999999e-05],
        [-0.000124602, 0.00032497200000000003, 4.425e-06],
        [0.000119652, -0.000456624, 5.40852e-05],
        [-0.000265254, -7.459799999999999e-05, -1.5527999999999998e-05],
        [-3.3488399999999996e-05, -0.000183036, -3.4940399999999998e-06],
        [-4.7542799999999996e-07, -4.5246599999999997e-07, 1.59498e-06],
        [-0.000541296, 0.0026328000000000002, 7.2485999999999995e-06],
        [-1.1694e-05, 5.00502e-06, 9.9888e-06],
        [8.028599999999999e-07, 5.1913199999999995e-06, -0.00040934399999999996],
        [0.000166878, -1.9815000000000003e-05, -8.854799999999999e-05],
        [-1.51536e-05, 8.2506e-05, 5.94012e-06],
        [-2.61054e-07, 2.7591e-06, 2.21028e-06],
        [-6.6282e-05, -6.828599999999999e-05, -3.4531799999999997e-06],
        [-0.00083262, -0.00179592, -2.59176e-06],
        [6.9714e-06, 3.65514e-05, -1.8977999999999999e-06],
        [-4.808759999999999e-06, 7.1148e-06, -1.03236e-05],
        [-0.0006368400000000001, -0.0011661, 5.62314e-05],
        [0.00028329, -1.4565599999999998e-05, 1.09746e-05],
        [-4.16022e-06, -0.0150906, -0.0025494],
        [0.000222474, 0.00562788, 0.0027264599999999996],
    ],
    dtype=np.float32,
)[None]


# --------------------------------------------------------------------------------------------------------------
# pose and keypoints
# --------------------------------------------------------------------------------------------------------------


def headpose_bins_to_degrees(logits: np.ndarray) -> np.ndarray:
    """Expected angle of the 66-bin head-pose classifier (softmax · bin index · 3 − 97.5): N×66 → N×1 degrees."""
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 66:
        raise ValueError(f"head-pose logits must be N×66, got shape {x.shape}")
    x = x - x.max(axis=1, keepdims=True)
    p = np.exp(x)
    p /= p.sum(axis=1, keepdims=True)
    return (p @ np.arange(66, dtype=np.float64) * 3.0 - 97.5)[:, None].astype(np.float32)


def rotation_matrix(pitch: np.ndarray, yaw: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """Row-vector rotation for angles in degrees (N, N×1 or scalars) → N×3×3, i.e. (Rz·Ry·Rx)ᵀ as upstream."""
    angles = [np.radians(np.asarray(a, dtype=np.float64).reshape(-1)) for a in (pitch, yaw, roll)]
    n = max(a.shape[0] for a in angles)
    x, y, z = (np.broadcast_to(a, (n,)) for a in angles)
    cx, sx, cy, sy, cz, sz = np.cos(x), np.sin(x), np.cos(y), np.sin(y), np.cos(z), np.sin(z)
    # Entries of (Rz Ry Rx) written out, then transposed by index swap.
    m = np.empty((n, 3, 3), dtype=np.float64)
    m[:, 0, 0] = cz * cy
    m[:, 1, 0] = cz * sy * sx - sz * cx
    m[:, 2, 0] = cz * sy * cx + sz * sx
    m[:, 0, 1] = sz * cy
    m[:, 1, 1] = sz * sy * sx + cz * cx
    m[:, 2, 1] = sz * sy * cx - cz * sx
    m[:, 0, 2] = -sy
    m[:, 1, 2] = cy * sx
    m[:, 2, 2] = cy * cx
    return m.astype(np.float32)


@dataclass
class KpInfo:
    """Motion-extractor output for N frames.

    pitch/yaw/roll are N×1 degrees; ``rot`` may be given instead (templates store only R). ``kp`` (canonical
    keypoints) is needed for the source and optional for driving frames.
    """

    scale: np.ndarray
    t: np.ndarray
    exp: np.ndarray
    kp: np.ndarray | None = None
    pitch: np.ndarray | None = None
    yaw: np.ndarray | None = None
    roll: np.ndarray | None = None
    rot: np.ndarray | None = None

    def __post_init__(self) -> None:
        f32 = np.float32
        self.exp = np.asarray(self.exp, dtype=f32).reshape(-1, NUM_KP, 3)
        n = self.exp.shape[0]
        self.scale = np.asarray(self.scale, dtype=f32).reshape(n, 1)
        self.t = np.asarray(self.t, dtype=f32).reshape(n, 3)
        if self.kp is not None:
            self.kp = np.asarray(self.kp, dtype=f32).reshape(n, NUM_KP, 3)
        angles = (self.pitch, self.yaw, self.roll)
        if all(a is not None for a in angles):
            self.pitch, self.yaw, self.roll = (np.asarray(a, dtype=f32).reshape(n, 1) for a in angles)
        elif any(a is not None for a in angles):
            raise ValueError("KpInfo needs all of pitch, yaw, roll or none of them")
        if self.rot is None:
            if self.pitch is None:
                raise ValueError("KpInfo needs pitch/yaw/roll or a rotation matrix rot")
            self.rot = rotation_matrix(self.pitch, self.yaw, self.roll)
        else:
            self.rot = np.asarray(self.rot, dtype=f32).reshape(n, 3, 3)

    def __len__(self) -> int:
        return self.exp.shape[0]

    @classmethod
    def from_outputs(cls, outputs: dict[str, np.ndarray]) -> KpInfo:
        """Build from the motion_extractor graph outputs (pitch, yaw, roll, t, exp, scale, kp by name)."""
        missing = [k for k in ("pitch", "yaw", "roll", "t", "exp", "scale", "kp") if k not in outputs]
        if missing:
            raise KeyError(f"motion outputs missing: {', '.join(missing)}")
        return cls(
            scale=outputs["scale"],
            t=outputs["t"],
            exp=outputs["exp"],
            kp=outputs["kp"],
            pitch=outputs["pitch"],
            yaw=outputs["yaw"],
            roll=outputs["roll"],
        )

    def take(self, index: int | slice | np.ndarray) -> KpInfo:
        """Frames selected by an int, slice or index array (always keeps the batch axis)."""
        idx = np.atleast_1d(np.arange(len(self))[index])

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return KpInfo(
            scale=self.scale[idx],
            t=self.t[idx],
            exp=self.exp[idx],
            kp=pick(self.kp),
            pitch=pick(self.pitch),
            yaw=pick(self.yaw),
            roll=pick(self.roll),
            rot=self.rot[idx],
        )

    @staticmethod
    def concat(infos: list[KpInfo]) -> KpInfo:
        """Join frame batches (e.g. chunks from the motion extractor)."""
        if not infos:
            raise ValueError("KpInfo.concat needs at least one batch")

        def cat(name: str) -> np.ndarray | None:
            parts = [getattr(i, name) for i in infos]
            return None if any(p is None for p in parts) else np.concatenate(parts)

        return KpInfo(
            scale=cat("scale"),
            t=cat("t"),
            exp=cat("exp"),
            kp=cat("kp"),
            pitch=cat("pitch"),
            yaw=cat("yaw"),
            roll=cat("roll"),
            rot=cat("rot"),
        )


def transform_keypoints(info: KpInfo) -> np.ndarray:
    """Posed keypoints s·(x_c·R + δ) + (tx, ty, 0): N×21×3 (Eqn. 2 of the paper)."""
    if info.kp is None:
        raise ValueError("transform_keypoints needs canonical keypoints (KpInfo.kp)")
    x = (info.kp @ info.rot + info.exp) * info.scale[:, :, None]
    x[:, :, :2] += info.t[:, None, :2]
    return x.astype(np.float32)


# --------------------------------------------------------------------------------------------------------------
# expression-friendly multiplier
# --------------------------------------------------------------------------------------------------------------


def convex_hull_volume(points: np.ndarray) -> float:
    """Volume of the 3-D convex hull of K points (SciPy's Qhull, as upstream); 0 for flat or degenerate sets."""
    from scipy.spatial import ConvexHull, QhullError  # imported on first use: only the multiplier needs SciPy

    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if p.shape[0] < 4:
        return 0.0
    try:
        return float(ConvexHull(p).volume)
    except QhullError:  # all points on a plane or a line: no volume
        return 0.0


def motion_multiplier(x_s: np.ndarray, x_d_0: np.ndarray) -> float:
    """sqrt(hull volume of source keypoints) / sqrt(hull volume of the first composed driving keypoints)."""
    vs = convex_hull_volume(np.asarray(x_s).reshape(-1, 3))
    vd = convex_hull_volume(np.asarray(x_d_0).reshape(-1, 3))
    if vd <= 0.0:
        raise ValueError("first driving keypoints are degenerate (zero hull volume); cannot scale motion")
    return float(np.sqrt(vs) / np.sqrt(vd))


# --------------------------------------------------------------------------------------------------------------
# stitching / retargeting hooks
# --------------------------------------------------------------------------------------------------------------


def _flat(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.reshape(x.shape[0], -1), dtype=np.float32)


def apply_stitching(stitching: Net, x_s: np.ndarray, x_d: np.ndarray) -> np.ndarray:
    """x_d plus the stitching MLP's correction: 63 keypoint offsets and a shared (tx, ty) shift."""
    n = x_d.shape[0]
    src = np.broadcast_to(x_s, (n, NUM_KP, 3))
    delta = np.asarray(stitching(np.concatenate([_flat(src), _flat(x_d)], axis=1)), dtype=np.float32)
    if delta.shape != (n, 3 * NUM_KP + 2):
        raise ValueError(f"stitching returned {delta.shape}, expected {(n, 3 * NUM_KP + 2)}")
    out = x_d + delta[:, : 3 * NUM_KP].reshape(n, NUM_KP, 3)
    out[:, :, :2] += delta[:, None, 3 * NUM_KP :]
    return out


def retarget(net: Net, x_s: np.ndarray, condition: np.ndarray, name: str) -> np.ndarray:
    """Keypoint offsets N×21×3 from an eye/lip MLP fed [x_s flat ‖ condition]."""
    n = condition.shape[0]
    src = np.broadcast_to(x_s, (n, NUM_KP, 3))
    feat = np.concatenate([_flat(src), np.asarray(condition, dtype=np.float32)], axis=1)
    delta = np.asarray(net(feat), dtype=np.float32)
    if delta.shape != (n, 3 * NUM_KP):
        raise ValueError(f"{name} retargeting returned {delta.shape}, expected {(n, 3 * NUM_KP)}")
    return delta.reshape(n, NUM_KP, 3)


# --------------------------------------------------------------------------------------------------------------
# composition
# --------------------------------------------------------------------------------------------------------------


def _posed(x_c: np.ndarray, rot: np.ndarray, exp: np.ndarray, scale: np.ndarray, t: np.ndarray) -> np.ndarray:
    """s·(x_c·R + δ) + t with tz forced to 0, batched over N."""
    t = t.copy()
    t[:, 2] = 0.0
    return (scale[:, :, None] * (x_c @ rot + exp) + t[:, None, :]).astype(np.float32)


class _Finisher:
    """Stitching, retargeting, lip normalisation and the driving multiplier: the common tail of every mode."""

    def __init__(self, options: AnimationOptions, stitching: Net | None, eye: Net | None, lip: Net | None) -> None:
        self.options = options
        self.stitching, self.eye, self.lip = stitching, eye, lip
        if options.flag_stitching and stitching is None:
            raise ValueError("flag_stitching is on but no stitching network was given")
        if options.flag_eye_retargeting and eye is None:
            raise ValueError("flag_eye_retargeting is on but no eye retargeting network was given")
        if options.flag_lip_retargeting and lip is None:
            raise ValueError("flag_lip_retargeting is on but no lip retargeting network was given")

    def normalize_lip_delta(self, x_s: np.ndarray, source_lip: np.ndarray | None) -> np.ndarray | None:
        """Offsets that close the source mouth before animating (None when off or already closed)."""
        o = self.options
        if not (o.flag_normalize_lip and o.flag_relative_motion) or source_lip is None:
            return None
        if self.lip is None:
            raise ValueError("flag_normalize_lip is on but no lip retargeting network was given")
        src = np.asarray(source_lip, dtype=np.float32).reshape(-1, 1)
        cond = combined_lip_ratio(src, np.zeros((src.shape[0], 1), np.float32))
        delta = retarget(self.lip, x_s, cond, "lip")
        return np.where((src >= o.lip_normalize_threshold)[:, :, None], delta, 0.0).astype(np.float32)

    def finish(
        self,
        x_s: np.ndarray,
        x_d: np.ndarray,
        *,
        source_eye: np.ndarray | None,
        source_lip: np.ndarray | None,
        driving_eye: np.ndarray | None,
        driving_lip: np.ndarray | None,
        lip_before: np.ndarray | None,
        eye_before: np.ndarray | None = None,
    ) -> np.ndarray:
        o = self.options
        n = x_d.shape[0]
        if not o.any_retargeting:
            if o.flag_stitching:
                x_d = apply_stitching(self.stitching, x_s, x_d)
            if lip_before is not None:
                x_d = x_d + lip_before
            if eye_before is not None:
                x_d = x_d + eye_before
        else:
            extra = np.zeros_like(x_d)
            if o.flag_eye_retargeting and source_eye is not None:
                if driving_eye is None:
                    raise ValueError("eye retargeting needs the driving eye ratios")
                cond = combined_eye_ratio(source_eye, driving_eye)
                extra += retarget(self.eye, x_s, np.broadcast_to(cond, (n, 3)), "eye")
            if o.flag_lip_retargeting and source_lip is not None:
                if driving_lip is None:
                    raise ValueError("lip retargeting needs the driving lip ratios")
                cond = combined_lip_ratio(source_lip, driving_lip)
                extra += retarget(self.lip, x_s, np.broadcast_to(cond, (n, 2)), "lip")
            base = np.broadcast_to(x_s, x_d.shape) if o.flag_relative_motion else x_d
            x_d = base + extra
            if o.flag_stitching:
                x_d = apply_stitching(self.stitching, x_s, x_d)
        return (x_s + (x_d - x_s) * np.float32(o.driving_multiplier)).astype(np.float32)


class MotionComposer:
    """Driving keypoints for a still source image, one batch of driving frames at a time (image→video and
    image→image).

    The first driving frame (relative motion reference, expression-friendly multiplier) is the first frame of the
    first batch unless given explicitly.
    """

    def __init__(
        self,
        source: KpInfo,
        options: AnimationOptions,
        stitching: Net | None = None,
        eye: Net | None = None,
        lip: Net | None = None,
        source_lmk: np.ndarray | None = None,
        driving_is_video: bool = True,
    ) -> None:
        if len(source) != 1 or source.kp is None:
            raise ValueError("MotionComposer needs exactly one source frame with canonical keypoints")
        self.source = source
        self.options = options
        self.driving_is_video = driving_is_video
        self.x_s = transform_keypoints(source)
        self._tail = _Finisher(options, stitching, eye, lip)
        self.source_eye = None if source_lmk is None else eye_close_ratio(source_lmk)
        self.source_lip = None if source_lmk is None else lip_close_ratio(source_lmk)
        self.lip_before = self._tail.normalize_lip_delta(self.x_s, self.source_lip)
        self.first: KpInfo | None = None
        self._x_d_0: np.ndarray | None = None
        self._multiplier: float | None = None

    def reset(self, first: KpInfo | None = None) -> None:
        """Start a new driving sequence (forget the cached first frame)."""
        self.first = None if first is None else first.take(0)
        self._x_d_0 = None
        self._multiplier = None

    @property
    def multiplier(self) -> float | None:
        """The expression-friendly motion multiplier (None until known or when not used)."""
        return self._multiplier

    def _raw(self, drv: KpInfo) -> np.ndarray:
        """s·(x_c,s·R_new + δ_new) + t_new for each driving frame, before stitching."""
        o, src, first = self.options, self.source, self.first
        n = len(drv)
        region = o.animation_region
        exp = np.repeat(src.exp, n, axis=0)
        if o.flag_relative_motion:
            if region in ("all", "pose"):
                rot = drv.rot @ np.swapaxes(first.rot, 1, 2) @ src.rot
            else:
                rot = np.repeat(src.rot, n, axis=0)
            reference = first.exp if self.driving_is_video else LIP_ARRAY
            if region in ("all", "exp"):
                exp = src.exp + (drv.exp - reference)
            elif region == "lip":
                exp = np.where(LIP_MASK, src.exp + (drv.exp - reference), exp)
            elif region == "eyes":
                eye_ref = first.exp if self.driving_is_video else 0.0
                exp = np.where(EYE_MASK, src.exp + (drv.exp - eye_ref), exp)
            scale = src.scale * (drv.scale / first.scale) if region == "all" else np.repeat(src.scale, n, axis=0)
            t = src.t + (drv.t - first.t) if region in ("all", "pose") else np.repeat(src.t, n, axis=0)
        else:
            rot = drv.rot if region in ("all", "pose") else np.repeat(src.rot, n, axis=0)
            if region in ("all", "exp"):
                exp = np.where(EXP_MASK, drv.exp, exp)
            elif region == "lip":
                exp = np.where(LIP_MASK, drv.exp, exp)
            elif region == "eyes":
                exp = np.where(EYE_MASK, drv.exp, exp)
            scale = np.repeat(src.scale, n, axis=0)
            t = drv.t if region in ("all", "pose") else np.repeat(src.t, n, axis=0)
        return _posed(src.kp, rot, exp, scale, t)

    def compose(
        self,
        driving: KpInfo,
        driving_eye_ratio: np.ndarray | None = None,
        driving_lip_ratio: np.ndarray | None = None,
        first: KpInfo | None = None,
    ) -> np.ndarray:
        """Driving keypoints N×21×3 for N driving frames (the warp's kp_driving; kp_source is ``self.x_s``).

        driving_eye_ratio: N×2 eye ratios of the driving frames; driving_lip_ratio: N×1 (needed only with eye/lip
        retargeting).
        """
        if first is not None:
            self.reset(first)
        if self.first is None:
            self.first = driving.take(0)
        o = self.options
        x_d = self._raw(driving)
        if o.flag_relative_motion and o.driving_option == "expression-friendly" and self.driving_is_video:
            if self._multiplier is None:
                self._x_d_0 = self._raw(self.first)
                self._multiplier = motion_multiplier(self.x_s, self._x_d_0)
            x_d = ((x_d - self._x_d_0) * np.float32(self._multiplier) + self.x_s).astype(np.float32)
        return self._tail.finish(
            self.x_s,
            x_d,
            source_eye=self.source_eye,
            source_lip=self.source_lip,
            driving_eye=driving_eye_ratio,
            driving_lip=driving_lip_ratio,
            lip_before=self.lip_before,
        )


class VideoMotionComposer:
    """Driving keypoints for a source video (video→video): the source pose changes per frame and the composed
    expression (and rotation, when the pose is animated) is Kalman-smoothed over the whole sequence up front.

    ``driving`` holds T driving frames (driving video) or one frame (driving image, applied to every source frame).
    """

    def __init__(
        self,
        source: KpInfo,
        driving: KpInfo,
        options: AnimationOptions,
        stitching: Net | None = None,
        eye: Net | None = None,
        lip: Net | None = None,
        source_lmks: np.ndarray | None = None,
        driving_is_video: bool = True,
    ) -> None:
        if source.kp is None:
            raise ValueError("VideoMotionComposer needs the source frames' canonical keypoints")
        self.options = options
        self.driving_is_video = driving_is_video
        n = min(len(source), len(driving)) if driving_is_video else len(source)
        self.n_frames = n
        self.source = source.take(slice(0, n))
        self.driving = driving.take(slice(0, n)) if driving_is_video else driving.take(0)
        self.x_s = transform_keypoints(self.source)
        self._tail = _Finisher(options, stitching, eye, lip)
        if source_lmks is not None:
            lmks = np.asarray(source_lmks)[:n]
            self.source_eye, self.source_lip = eye_close_ratio(lmks), lip_close_ratio(lmks)
        else:
            self.source_eye = self.source_lip = None
        self.exp_target, self.rot_target = self._targets()
        self._eye_open = None
        if options.flag_source_video_eye_retargeting and self.source_eye is not None:
            value = float(self.source_eye[0, :2].mean())
            self._eye_open = 0.39 if value < options.source_video_eye_retargeting_threshold else value

    def _targets(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-frame composed expression T×21×3 and rotation T×3×3 (None when the pose is not animated)."""
        o, src, drv, n = self.options, self.source, self.driving, self.n_frames
        smooth = self.driving_is_video
        var = o.driving_smooth_observation_variance
        pose = o.animation_region in ("all", "pose")
        if o.flag_relative_motion:
            if self.driving_is_video:
                exp = src.exp + drv.exp - drv.exp[:1]
                rot = drv.rot @ np.swapaxes(drv.rot[:1], 1, 2) @ src.rot if pose else None
            else:
                exp = src.exp + (drv.exp - LIP_ARRAY)
                rot = src.rot.copy() if pose else None
        else:
            exp = np.repeat(drv.exp, n, axis=0) if not self.driving_is_video else drv.exp.copy()
            rot = (np.repeat(drv.rot, n, axis=0) if not self.driving_is_video else drv.rot.copy()) if pose else None
        if smooth:
            exp = kalman_smooth(exp, var)
            rot = None if rot is None else kalman_smooth(rot, var)
        return exp.astype(np.float32), None if rot is None else rot.astype(np.float32)

    def compose(
        self,
        index: slice | np.ndarray,
        driving_eye_ratio: np.ndarray | None = None,
        driving_lip_ratio: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(kp_source, kp_driving), both B×21×3, for the selected frames of the sequence."""
        o = self.options
        idx = np.atleast_1d(np.arange(self.n_frames)[index])
        src = self.source.take(idx)
        drv = self.driving.take(idx) if self.driving_is_video else self.driving.take(np.zeros(len(idx), int))
        region = o.animation_region
        rot = self.rot_target[idx] if region in ("all", "pose") else src.rot
        target = self.exp_target[idx]
        if region in ("all", "exp"):
            exp = np.where(EXP_MASK, target, src.exp)
        elif region == "lip":
            exp = np.where(LIP_MASK, target, src.exp)
        elif region == "eyes":
            exp = np.where(EYE_MASK, target, src.exp)
        else:
            exp = src.exp
        t = drv.t if (not o.flag_relative_motion and region in ("all", "pose")) else src.t
        x_s = self.x_s[idx]
        x_d = _posed(src.kp, rot, exp, src.scale, t)

        source_eye = None if self.source_eye is None else self.source_eye[idx]
        source_lip = None if self.source_lip is None else self.source_lip[idx]
        lip_before = self._tail.normalize_lip_delta(x_s, source_lip)
        eye_before = None
        if self._eye_open is not None:
            cond = combined_eye_ratio(source_eye, np.full((len(idx), 1), self._eye_open, np.float32))
            eye_before = retarget(self._eye_net(), x_s, cond, "eye")
        x_d = self._tail.finish(
            x_s,
            x_d,
            source_eye=source_eye,
            source_lip=source_lip,
            driving_eye=driving_eye_ratio,
            driving_lip=driving_lip_ratio,
            lip_before=lip_before,
            eye_before=eye_before,
        )
        return x_s, x_d

    def _eye_net(self) -> Net:
        if self._tail.eye is None:
            raise ValueError("flag_source_video_eye_retargeting is on but no eye retargeting network was given")
        return self._tail.eye
