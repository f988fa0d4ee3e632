"""The CLIP text features X-Pose needs, as `xpose_text.npz` for the torch-free runtime.

Upstream reads `clip_embedding_9.pkl` / `clip_embedding_68.pkl` (pickled torch tensors) at run time. We convert
them once at export: from `--xpose-text DIR` when given, else from `<weights>/liveportrait_animals/` when the
files are there, else the shipped copy of the same arrays (`export/assets/xpose_clip_embeddings.npz`, data from
the official caches). The pickles are read with a restricted unpickler that admits only tensor/storage rebuilds
(storages themselves through `torch.load(weights_only=True)`), so a tampered file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

SHIPPED_TEXT = Path(__file__).parent / "assets" / "xpose_clip_embeddings.npz"
TEXT_KEYS = ("ins_text_embeddings_9", "kpt_text_embeddings_9", "ins_text_embeddings_68", "kpt_text_embeddings_68")
PICKLES = {9: "clip_embedding_9.pkl", 68: "clip_embedding_68.pkl"}
INSTANCE = ("face",)  # the prompt LivePortrait's cropper passes


class TextError(RuntimeError):
    """A CLIP text cache is missing pieces or is not the official format."""


def _load_storage(data: bytes):
    import torch

    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


class _TensorUnpickler(pickle.Unpickler):
    """Only what a pickled dict/tuple of CPU or CUDA tensors needs."""

    def find_class(self, module: str, name: str):
        import collections

        import torch

        allowed = {
            ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
            ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
            ("torch.storage", "_load_from_bytes"): _load_storage,
            ("collections", "OrderedDict"): collections.OrderedDict,
        }
        if (module, name) in allowed:
            return allowed[(module, name)]
        raise TextError(f"refusing to unpickle {module}.{name}: not part of a CLIP text cache")


def read_clip_pickle(path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(instance 1×512, keypoints n×512) float32 from one official cache file (the 'face' entry)."""
    with open(path, "rb") as fh:
        cache = _TensorUnpickler(fh).load()
    if not isinstance(cache, dict) or not cache:
        raise TextError(f"{path} is not a dict of cached embeddings")
    entries = [v for k, v in cache.items() if isinstance(k, tuple) and k and tuple(k[0]) == INSTANCE]
    if len(entries) != 1:
        raise TextError(f"{path}: expected one entry for instance {INSTANCE}, found {len(entries)}")
    ins, kpt = (np.asarray(t.float().cpu().numpy(), dtype=np.float32) for t in entries[0])
    if ins.shape != (1, 512) or kpt.shape != (n, 512):
        raise TextError(f"{path}: shapes {ins.shape} / {kpt.shape}, expected (1, 512) / ({n}, 512)")
    return ins, kpt


def find_text_folder(weights_root: Path, xpose_text: Path | None) -> Path | None:
    """Where the official pickles are: the explicit folder (must hold both), else the animal weights folder."""
    if xpose_text is not None:
        missing = [name for name in PICKLES.values() if not (Path(xpose_text) / name).is_file()]
        if missing:
            raise TextError(f"--xpose-text {xpose_text} lacks {', '.join(missing)}")
        return Path(xpose_text)
    folder = Path(weights_root) / "liveportrait_animals"
    return folder if all((folder / name).is_file() for name in PICKLES.values()) else None


def text_arrays(weights_root: Path, xpose_text: Path | None = None) -> tuple[dict[str, np.ndarray], str]:
    """The four arrays of xpose_text.npz (float32) and where they came from."""
    folder = find_text_folder(weights_root, xpose_text)
    if folder is None:
        with np.load(SHIPPED_TEXT) as data:
            return {k: data[k].astype(np.float32) for k in TEXT_KEYS}, f"shipped copy {SHIPPED_TEXT.name}"
    arrays: dict[str, np.ndarray] = {}
    for n, name in PICKLES.items():
        ins, kpt = read_clip_pickle(folder / name, n)
        arrays[f"ins_text_embeddings_{n}"], arrays[f"kpt_text_embeddings_{n}"] = ins, kpt
    return {k: arrays[k] for k in TEXT_KEYS}, f"converted from {folder}"


def xpose_feeds(arrays: dict[str, np.ndarray], n: int, max_rows: int = 68) -> dict[str, np.ndarray]:
    """instance_text, keypoint_text (zero rows after the n features) and keypoint_mask for n = 9 or 68."""
    kpt = np.zeros((max_rows, 512), np.float32)
    kpt[:n] = arrays[f"kpt_text_embeddings_{n}"]
    mask = np.zeros(max_rows, np.float32)
    mask[:n] = 1.0
    return {"instance_text": arrays[f"ins_text_embeddings_{n}"].astype(np.float32).reshape(1, 512),
            "keypoint_text": kpt, "keypoint_mask": mask}
