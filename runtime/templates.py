"""Motion templates: a driving video's per-frame motion saved once and reused without the video.

Our format is a plain ``.npz`` (numpy arrays only, read with ``allow_pickle=False``) so loading a template can never
run code. The official ``.pkl`` templates are pickles: they are read only when the caller explicitly trusts the file.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.motion import NUM_KP, KpInfo, transform_keypoints

FORMAT_NAME = "liveportrait-onnx-motion-template"
FORMAT_VERSION = 1
DEFAULT_FPS = 25.0


class UntrustedPickleError(PermissionError):
    """Raised when a pickle template is opened without explicit trust."""


@dataclass
class Template:
    """Per-frame motion of T driving frames: scale T×1, R T×3×3, exp T×21×3, t T×3, kp/x_s T×21×3 (optional for
    old upstream templates), eye_ratio T×2, lip_ratio T×1, and the frame rate of the driving video."""

    scale: np.ndarray
    R: np.ndarray
    exp: np.ndarray
    t: np.ndarray
    eye_ratio: np.ndarray
    lip_ratio: np.ndarray
    fps: float = DEFAULT_FPS
    kp: np.ndarray | None = None
    x_s: np.ndarray | None = None

    def __post_init__(self) -> None:
        f32 = np.float32
        self.exp = np.asarray(self.exp, dtype=f32).reshape(-1, NUM_KP, 3)
        n = self.exp.shape[0]
        try:
            self.scale = np.asarray(self.scale, dtype=f32).reshape(n, 1)
            self.R = np.asarray(self.R, dtype=f32).reshape(n, 3, 3)
            self.t = np.asarray(self.t, dtype=f32).reshape(n, 3)
            self.eye_ratio = np.asarray(self.eye_ratio, dtype=f32).reshape(n, 2)
            self.lip_ratio = np.asarray(self.lip_ratio, dtype=f32).reshape(n, 1)
            if self.kp is not None:
                self.kp = np.asarray(self.kp, dtype=f32).reshape(n, NUM_KP, 3)
            if self.x_s is not None:
                self.x_s = np.asarray(self.x_s, dtype=f32).reshape(n, NUM_KP, 3)
        except ValueError as err:
            raise ValueError(f"template arrays disagree on the number of frames ({n} expressions): {err}") from err
        self.fps = float(self.fps)
        if not self.fps > 0:
            raise ValueError(f"template fps must be > 0, got {self.fps}")
        if n == 0:
            raise ValueError("template has no frames")

    @property
    def n_frames(self) -> int:
        return self.exp.shape[0]

    def to_kp_info(self) -> KpInfo:
        """The driving motion as KpInfo (rotation given as matrices; templates hold no angles)."""
        return KpInfo(scale=self.scale, t=self.t, exp=self.exp, kp=self.kp, rot=self.R)

    @classmethod
    def from_kp_info(cls, info: KpInfo, eye_ratio: np.ndarray, lip_ratio: np.ndarray, fps: float) -> Template:
        """Template of driving frames just extracted (x_s computed when canonical keypoints are present)."""
        x_s = transform_keypoints(info) if info.kp is not None else None
        return cls(
            scale=info.scale,
            R=info.rot,
            exp=info.exp,
            t=info.t,
            eye_ratio=eye_ratio,
            lip_ratio=lip_ratio,
            fps=fps,
            kp=info.kp,
            x_s=x_s,
        )


_ARRAYS = ("scale", "R", "exp", "t", "eye_ratio", "lip_ratio")
_OPTIONAL = ("kp", "x_s")


def save_template(path: str | Path, template: Template) -> Path:
    """Write the template as a pickle-free .npz (the suffix is added when missing)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {name: getattr(template, name) for name in _ARRAYS}
    arrays.update({name: getattr(template, name) for name in _OPTIONAL if getattr(template, name) is not None})
    np.savez_compressed(
        path,
        format=np.array(FORMAT_NAME),
        format_version=np.array(FORMAT_VERSION, dtype=np.int64),
        n_frames=np.array(template.n_frames, dtype=np.int64),
        fps=np.array(template.fps, dtype=np.float64),
        **arrays,
    )
    return path


def load_template(path: str | Path, trust_pickle: bool = False) -> Template:
    """Read our .npz template, or an official .pkl one when trust_pickle is True."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"motion template not found: {path}")
    with path.open("rb") as fh:
        magic = fh.read(2)
    if magic == b"PK":  # zip container = .npz
        return _load_npz(path)
    if path.suffix.lower() == ".pkl" or magic[:1] == b"\x80":
        if not trust_pickle:
            raise UntrustedPickleError(
                f"{path} is a pickle (official LivePortrait template). Unpickling can execute arbitrary code "
                "hidden in the file; load it only if you made it or trust its source, by passing --trust-pickle "
                "(trust_pickle=True). Re-save it as .npz to avoid this."
            )
        with path.open("rb") as fh:
            obj = pickle.load(fh)  # noqa: S301 - explicit opt-in above
        return template_from_upstream(obj)
    raise ValueError(f"{path}: not a motion template (expected .npz, or .pkl with --trust-pickle)")


def _load_npz(path: Path) -> Template:
    try:
        with np.load(path, allow_pickle=False) as data:
            content = {k: data[k] for k in data.files}
    except ValueError as err:
        raise ValueError(f"{path}: template contains objects that need pickle; refusing to load") from err
    if str(content.get("format", "")) != FORMAT_NAME:
        raise ValueError(f"{path}: not a {FORMAT_NAME} file")
    version = int(content.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: template format version {version} is not supported (expected {FORMAT_VERSION})")
    missing = [k for k in _ARRAYS if k not in content]
    if missing:
        raise ValueError(f"{path}: template misses {', '.join(missing)}")
    template = Template(
        fps=float(content["fps"]),
        **{k: content[k] for k in _ARRAYS},
        **{k: content[k] for k in _OPTIONAL if k in content},
    )
    if int(content["n_frames"]) != template.n_frames:
        raise ValueError(f"{path}: n_frames says {int(content['n_frames'])} but arrays hold {template.n_frames}")
    return template


def template_from_upstream(obj: Any) -> Template:
    """Convert the official template dict (make_motion_template: n_frames, output_fps, motion list of per-frame
    dicts scale/R (or R_d)/exp/t/kp/x_s, c_eyes_lst (or c_d_eyes_lst), c_lip_lst (or c_d_lip_lst))."""
    if not isinstance(obj, dict) or "motion" not in obj:
        raise ValueError("unsupported LivePortrait template layout (expected a dict with a 'motion' list)")
    motion = list(obj["motion"])
    if not motion:
        raise ValueError("LivePortrait template has no frames")

    def stack(key: str, alt: str | None = None) -> np.ndarray | None:
        name = key if key in motion[0] else alt
        if name is None or name not in motion[0]:
            return None
        return np.concatenate([np.asarray(m[name], dtype=np.float32).reshape(1, -1) for m in motion])

    def ratios(key: str, alt: str) -> np.ndarray:
        seq = obj.get(key, obj.get(alt))
        if seq is None:
            raise ValueError(f"LivePortrait template has neither {key} nor {alt}")
        return np.concatenate([np.asarray(v, dtype=np.float32).reshape(1, -1) for v in seq])

    rot = stack("R", "R_d")
    if rot is None:
        raise ValueError("LivePortrait template frames have no rotation (R / R_d)")
    template = Template(
        scale=stack("scale"),
        R=rot,
        exp=stack("exp"),
        t=stack("t"),
        eye_ratio=ratios("c_eyes_lst", "c_d_eyes_lst"),
        lip_ratio=ratios("c_lip_lst", "c_d_lip_lst"),
        fps=float(obj.get("output_fps") or DEFAULT_FPS),
        kp=stack("kp"),
        x_s=stack("x_s"),
    )
    declared = obj.get("n_frames")
    if declared is not None and int(declared) != template.n_frames:
        raise ValueError(f"LivePortrait template says n_frames={declared} but holds {template.n_frames} frames")
    return template
