"""Eye and lip open ratios from the 203-point landmarks, and the features the retargeting MLPs take.

The ratios are distances between landmark pairs divided by a reference width (eye corners, mouth corners), so they
do not depend on the face's size in the crop.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-6
# (upper, lower, corner a, corner b) landmark indices of the 203-point layout
_LEFT_EYE = (6, 18, 0, 12)
_RIGHT_EYE = (30, 42, 24, 36)
_LIP = (90, 102, 48, 66)


def _as_batch(lmk: np.ndarray) -> np.ndarray:
    arr = np.asarray(lmk, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[-1] < 2 or arr.shape[1] < 103:
        raise ValueError(f"expected 203-point landmarks K×2 or N×K×2, got shape {np.shape(lmk)}")
    return arr


def _ratio(lmk: np.ndarray, idx: tuple[int, int, int, int]) -> np.ndarray:
    a, b, c, d = idx
    num = np.linalg.norm(lmk[:, a, :2] - lmk[:, b, :2], axis=-1)
    den = np.linalg.norm(lmk[:, c, :2] - lmk[:, d, :2], axis=-1)
    return (num / (den + _EPS))[:, None]


def eye_close_ratio(lmk203: np.ndarray) -> np.ndarray:
    """Left and right eye opening ratios: K×2 landmarks → 1×2, N×K×2 → N×2 (columns: left, right)."""
    lmk = _as_batch(lmk203)
    return np.concatenate([_ratio(lmk, _LEFT_EYE), _ratio(lmk, _RIGHT_EYE)], axis=1).astype(np.float32)


def lip_close_ratio(lmk203: np.ndarray) -> np.ndarray:
    """Lip opening ratio: K×2 landmarks → 1×1, N×K×2 → N×1."""
    lmk = _as_batch(lmk203)
    return _ratio(lmk, _LIP).astype(np.float32)


def combined_eye_ratio(source_eye: np.ndarray, driving_eye: np.ndarray) -> np.ndarray:
    """Eye-MLP condition [c_s,left, c_s,right, c_d]: N×3.

    source_eye is the source's 1×2 (or N×2) ratio; driving_eye is N×2 driving ratios (only the first column, the
    left eye, is used, as upstream does) or an N / N×1 array of target values.
    """
    src = np.asarray(source_eye, dtype=np.float32).reshape(-1, 2)
    drv = np.asarray(driving_eye, dtype=np.float32)
    drv = drv.reshape(-1, 1) if drv.ndim < 2 else drv[:, :1]
    n = max(src.shape[0], drv.shape[0])
    src = np.broadcast_to(src, (n, 2))
    drv = np.broadcast_to(drv, (n, 1))
    return np.concatenate([src, drv], axis=1)


def combined_lip_ratio(source_lip: np.ndarray, driving_lip: np.ndarray) -> np.ndarray:
    """Lip-MLP condition [c_s,lip, c_d,lip]: N×2 from the source's 1×1 (or N×1) ratio and N (or N×1) driving values."""
    src = np.asarray(source_lip, dtype=np.float32).reshape(-1, 1)
    drv = np.asarray(driving_lip, dtype=np.float32).reshape(-1, 1)
    n = max(src.shape[0], drv.shape[0])
    return np.concatenate([np.broadcast_to(src, (n, 1)), np.broadcast_to(drv, (n, 1))], axis=1)
