"""The `models_onnx/manifest.json` schema: written by the exporter, trusted by nothing until verified.

It lives in the runtime (torch-free) so that the exporter and every consumer share one definition.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
EXPORT_HINT = "python cli.py export --weights pretrained_weights --out models_onnx"

# Contract graphs the animation pipeline needs (file stems in models_onnx/).
CORE_GRAPHS = (
    "appearance_feature_extractor",
    "motion_extractor",
    "warping_spade",
    "stitching",
    "eye_retargeting",
    "lip_retargeting",
)
FACE_GRAPHS = ("det_10g", "2d106det", "landmark")
# The animal family (models_onnx/liveportrait_animals/): its own appearance/motion/warping graphs, the human
# stitching module (as upstream), no eye/lip retargeting, the X-Pose detector and its CLIP text features.
ANIMAL_FAMILY = "liveportrait_animals"
XPOSE_GRAPH = "xpose"  # xpose.onnx: image, instance_text, keypoint_text, keypoint_mask → logits, boxes, keypoints
XPOSE_TEXT = "xpose_text"  # xpose_text.npz: ins/kpt_text_embeddings_{9,68} float32
# The networks the animal export traces from the animal (and human stitching) checkpoints.
ANIMAL_NETWORK_GRAPHS = ("appearance_feature_extractor", "motion_extractor", "warping_spade", "stitching")
# What an animal models folder must hold for the runtime.
ANIMAL_GRAPHS = (*ANIMAL_NETWORK_GRAPHS, XPOSE_GRAPH)
ANIMAL_REQUIRED = (*ANIMAL_GRAPHS, XPOSE_TEXT)
ANIMAL_EXPORT_HINT = (f"python cli.py export --family {ANIMAL_FAMILY} --weights pretrained_weights "
                      f"--out models_onnx/{ANIMAL_FAMILY}")


class ModelsError(RuntimeError):
    """models_onnx/ is missing, incomplete or does not match its manifest; the message says how to fix it."""


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (ints or symbolic strings) and dtype of a graph input or output."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(d["name"], tuple(d["shape"]), d["dtype"])


@dataclass
class ModelEntry:
    """One file of models_onnx/ as the manifest describes it."""

    key: str
    file: str
    graph: str
    sha256: str
    bytes: int
    opset: int | None
    precision: str
    grid_sample: str | None
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    checkpoints: dict[str, str] = field(default_factory=dict)
    parity: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "graph": self.graph,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "opset": self.opset,
            "precision": self.precision,
            "grid_sample": self.grid_sample,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "checkpoints": self.checkpoints,
            "parity": self.parity,
        }

    @classmethod
    def from_json(cls, key: str, d: dict[str, Any]) -> ModelEntry:
        return cls(
            key=key,
            file=d["file"],
            graph=d["graph"],
            sha256=d["sha256"],
            bytes=int(d["bytes"]),
            opset=d.get("opset"),
            precision=d.get("precision", "fp32"),
            grid_sample=d.get("grid_sample"),
            inputs=[TensorSpec.from_json(t) for t in d.get("inputs", [])],
            outputs=[TensorSpec.from_json(t) for t in d.get("outputs", [])],
            checkpoints=dict(d.get("checkpoints", {})),
            parity=dict(d.get("parity", {})),
        )


@dataclass
class Manifest:
    """Every model file of a models_onnx/ folder plus how it was made."""

    models: dict[str, ModelEntry]
    exporter: dict[str, str] = field(default_factory=dict)
    created: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "created": self.created,
            "exporter": self.exporter,
            "models": {k: e.to_json() for k, e in sorted(self.models.items())},
        }

    def write(self, folder: Path) -> Path:
        """Write atomically so a crashed export never leaves a half manifest."""
        path = Path(folder) / MANIFEST_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        tmp.replace(path)
        return path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hash a file in chunks (graphs are hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(folder: Path, hint: str = EXPORT_HINT) -> Manifest:
    """Load manifest.json, or raise ModelsError telling the user how to produce it (``hint``: the command)."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise ModelsError(f"models folder {folder} does not exist. Produce the ONNX graphs with: {hint}")
    if not path.is_file():
        raise ModelsError(f"{path} is missing: {folder} was not written by the exporter. Run: {hint}")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelsError(f"{path} is not valid JSON ({exc}). Re-run: {hint}") from exc
    if data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("models"), dict):
        raise ModelsError(f"{path} has an unknown format {data.get('format')!r}. Re-run: {hint}")
    models = {k: ModelEntry.from_json(k, v) for k, v in data["models"].items()}
    return Manifest(models=models, exporter=dict(data.get("exporter", {})), created=data.get("created", ""))


def verify_entry(folder: Path, entry: ModelEntry, check_hash: bool = True) -> list[str]:
    """Problems with one file against its manifest entry (empty list when it matches)."""
    path = Path(folder) / entry.file
    if not path.is_file():
        return [f"{entry.file}: missing"]
    size = path.stat().st_size
    if size != entry.bytes:
        return [f"{entry.file}: {size} bytes on disk, manifest says {entry.bytes}"]
    if check_hash and sha256_file(path) != entry.sha256:
        return [f"{entry.file}: sha256 differs from the manifest (file changed or corrupt)"]
    return []


def verify_models(folder: Path, keys: tuple[str, ...] | list[str], check_hash: bool = True,
                  hint: str = EXPORT_HINT) -> Manifest:
    """Read the manifest and check that `keys` are listed and their files match; raise ModelsError otherwise.

    ``hint`` is the export command that produces the folder (the animal family has its own)."""
    manifest = read_manifest(folder, hint)
    missing = [k for k in keys if k not in manifest.models]
    if missing:
        files = ", ".join(f"{k}.onnx" for k in missing)
        raise ModelsError(
            f"{Path(folder) / MANIFEST_NAME} lists no {', '.join(missing)} ({files} not exported). "
            f"Export them with: {hint}"
        )
    problems: list[str] = []
    for key in keys:
        problems += verify_entry(folder, manifest.models[key], check_hash=check_hash)
    if problems:
        raise ModelsError(
            f"models in {folder} do not match manifest.json:\n  - "
            + "\n  - ".join(problems)
            + f"\nRe-run: {hint}"
        )
    return manifest
