"""Output locations: upstream-compatible names and a writability check done before any work."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import MediaError


def ensure_writable_folder(path: str | Path) -> Path:
    """Create the output's folder if needed and prove it is writable before any expensive work."""
    p = Path(path)
    folder = p.parent
    if folder.exists() and not folder.is_dir():
        raise MediaError(p, f"output folder {folder} is not a directory")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MediaError(p, f"output folder {folder} cannot be created: {exc.strerror or exc}") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise MediaError(p, f"output folder {folder} is not writable")
    return folder


def animation_paths(
    output_dir: str | Path, source: str | Path, driving: str | Path, suffix: str = ".mp4"
) -> tuple[Path, Path]:
    """`<out>/<source>--<driving><suffix>` and its `_concat` sibling, the names the official CLI writes."""
    stem = f"{Path(source).stem}--{Path(driving).stem}"
    out = Path(output_dir)
    return out / f"{stem}{suffix}", out / f"{stem}_concat{suffix}"


def publish(tmp: Path, final: Path) -> None:
    """Give a finished temp file normal permissions (mkstemp makes it 0600) and rename it into place atomically."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, final)
