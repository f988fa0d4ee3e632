"""The files an engine replica and the ingress exchange through a job's folder on shared storage.

Only paths and options travel in the Ray call; uploads and results stay on storage every node mounts at the same
path. The replica reports where it is in `progress.json` (written atomically, so a reader never sees half a file);
the ingress asks a running job to stop by creating the `cancel` marker. No Ray import: unit-testable anywhere.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.options import AnimationOptions

PROGRESS = "progress.json"
CANCEL = "cancel"
OUT = "out"


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write to a temp file in the same folder, then rename over: readers see the old or the new file, whole."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_progress(folder: Path) -> dict[str, Any] | None:
    """The replica's last report, or None before the first one (or after the folder went)."""
    try:
        return json.loads((folder / PROGRESS).read_text())
    except (OSError, ValueError):
        return None


def request_cancel(folder: Path) -> None:
    """Create the marker the replica watches; harmless if the folder already went."""
    try:
        (folder / CANCEL).touch()
    except OSError:
        pass


def cancel_requested(folder: Path) -> bool:
    return (folder / CANCEL).exists()


def reset_attempt(folder: Path) -> None:
    """Before a retry: drop what a dead replica left (its report and any unfinished output)."""
    (folder / PROGRESS).unlink(missing_ok=True)
    shutil.rmtree(folder / OUT, ignore_errors=True)


def partial_files(folder: Path) -> list[Path]:
    """Temporary files of unfinished writes (the engine's writers name them .<stem>.*.part.<ext>)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and (".part" in p.name or p.name.endswith(".tmp")))


@dataclass(frozen=True)
class JobSpec:
    """Everything a replica needs to run one job: paths on shared storage and plain options, no file bytes."""

    job_id: str
    folder: str
    source: str
    driving: str
    options: dict[str, Any]
    face_index: int | None
    write_concat: bool
    attempt: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        return cls(**data)

    @classmethod
    def of(cls, job_id: str, folder: Path, source: Path, driving: Path, options: AnimationOptions,
           face_index: int | None, write_concat: bool, attempt: int = 1) -> JobSpec:
        return cls(job_id, str(folder), str(source), str(driving), dataclasses.asdict(options), face_index,
                   write_concat, attempt)

    def animation_options(self) -> AnimationOptions:
        return AnimationOptions(**self.options)

    def checked_folder(self, work_dir: Path) -> Path:
        """The job folder, refused unless it and both inputs lie inside the replica's work folder."""
        root = work_dir.resolve()
        folder = Path(self.folder).resolve()
        for path in (folder, Path(self.source).resolve(), Path(self.driving).resolve()):
            if not path.is_relative_to(root):
                raise ValueError(f"{path} is outside the work folder {root}")
        return folder


def outcome_payload(status: str, runner: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """What a replica returns: status done | failed | cancelled, who ran it, and the result fields."""
    return {"status": status, "runner": runner, **fields}
