"""The animal motion rule of upstream's `live_portrait_pipeline_animal.py`, in numpy.

For driving frame i (rotation R_i, expression δ_i, translation t_i) and source canonical keypoints x_c, scale s:
    x_d,i = s · (x_c · R_i + δ_i) + (t_i,x, t_i,y, 0)          absolute rotation and expression, source scale
    x_d,i ← x_s + (x_d,i − x_d,0) · m,   m = √vol(hull x_s) / √vol(hull x_d,0)   (relative to the first frame)
    x_d,i ← stitching(x_s, x_d,i)                              (with flag_stitching)
    x_d,i ← x_s + (x_d,i − x_s) · driving_multiplier
No retargeting, lip normalisation or animation regions: upstream's animal flow has none.
"""

from __future__ import annotations

import numpy as np

from runtime.motion import KpInfo, Net, apply_stitching, motion_multiplier, transform_keypoints


def absolute_keypoints(source: KpInfo, driving: KpInfo) -> np.ndarray:
    """s_source · (x_c,source · R_driving + δ_driving) + t_driving with tz = 0: N×21×3 float32."""
    t = driving.t.copy()
    t[:, 2] = 0.0
    x = source.scale[:, :, None] * (source.kp @ driving.rot + driving.exp) + t[:, None, :]
    return x.astype(np.float32)


class AnimalMotionComposer:
    """Driving keypoints for a still animal source, one batch of driving frames at a time.

    The first frame ever composed is the reference of the hull multiplier and of the motion.
    Same call shape as runtime.motion.MotionComposer so the human frame loop drives it.
    """

    def __init__(self, source: KpInfo, stitching: Net | None = None, driving_multiplier: float = 1.0) -> None:
        if len(source) != 1 or source.kp is None:
            raise ValueError("AnimalMotionComposer needs exactly one source frame with canonical keypoints")
        self.source = source
        self.stitching = stitching
        self.driving_multiplier = float(driving_multiplier)
        self.x_s = transform_keypoints(source)
        self._x_d_0: np.ndarray | None = None
        self.multiplier: float | None = None

    def compose(self, driving: KpInfo, driving_eye_ratio: np.ndarray | None = None,
                driving_lip_ratio: np.ndarray | None = None) -> np.ndarray:
        """kp_driving N×21×3 for N driving frames (eye/lip ratios are accepted and unused: no retargeting)."""
        x_d = absolute_keypoints(self.source, driving)
        if self._x_d_0 is None:
            self._x_d_0 = x_d[:1].copy()
            self.multiplier = motion_multiplier(self.x_s, self._x_d_0)
        x_d = ((x_d - self._x_d_0) * np.float32(self.multiplier) + self.x_s).astype(np.float32)
        if self.stitching is not None:
            x_d = apply_stitching(self.stitching, self.x_s, x_d)
        return (self.x_s + (x_d - self.x_s) * np.float32(self.driving_multiplier)).astype(np.float32)
