"""The one exception type of the media layer."""

from __future__ import annotations

from pathlib import Path


class MediaError(RuntimeError):
    """Raised for any media input/output problem; the message names the file and what went wrong."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def check_readable_file(path: str | Path) -> Path:
    """Fail early with a clear message for missing, non-regular or empty files (before any decoder sees them)."""
    p = Path(path)
    if not p.exists():
        raise MediaError(p, "file not found")
    if not p.is_file():
        raise MediaError(p, "not a regular file")
    if p.stat().st_size == 0:
        raise MediaError(p, "file is empty (0 bytes)")
    return p
