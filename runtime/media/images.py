"""Still images: RGB reading (EXIF orientation, grey and alpha handled) and atomic writing."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import av
import cv2
import numpy as np

from .errors import MediaError, check_readable_file
from .paths import ensure_writable_folder, publish


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """Bring a decoded BGR / grey / BGRA array to RGB uint8 H×W×3."""
    if image.dtype != np.uint8:
        image = (image / 257).astype(np.uint8) if image.dtype == np.uint16 else image.astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _decode_with_av(path: Path) -> np.ndarray | None:
    """Fallback for image formats the OpenCV build lacks: first frame through FFmpeg."""
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                return frame.to_ndarray(format="rgb24")
    except (av.FFmpegError, IndexError, UnicodeDecodeError):
        return None
    return None


def decode_image_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to RGB uint8; IMREAD_COLOR applies the EXIF orientation and drops alpha."""
    p = check_readable_file(path)
    data = np.fromfile(p, dtype=np.uint8)  # bytes first: works for non-ASCII paths too
    if data[:3].tobytes() == b"\xff\xd8\xff" and b"\xff\xd9" not in data[-1024:].tobytes():
        raise MediaError(p, "JPEG data is truncated (no end-of-image marker)")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is not None:
        return _to_rgb(image)
    rgb = _decode_with_av(p)
    if rgb is None:
        raise MediaError(p, "image could not be decoded (truncated, corrupt or unsupported format)")
    return np.ascontiguousarray(rgb)


def load_image_rgb(path: str | Path) -> np.ndarray:
    """Public entry point: an RGB uint8 H×W×3 array, upright, whatever the file's colour layout."""
    return decode_image_rgb(path)


def write_image_rgb(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB image atomically (temp file + rename) so a crash never leaves a half-written file."""
    p = Path(path)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise MediaError(p, f"expected RGB uint8 H×W×3 image, got {image.dtype} {image.shape}")
    bgr = (
        image
        if image.ndim == 2
        else cv2.cvtColor(image, cv2.COLOR_RGB2BGR if image.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    )
    try:
        ok, encoded = cv2.imencode(p.suffix or ".png", bgr)
    except cv2.error as exc:
        raise MediaError(p, f"cannot encode an image with extension {p.suffix!r}") from exc
    if not ok:
        raise MediaError(p, f"cannot encode an image with extension {p.suffix!r}")
    folder = ensure_writable_folder(p)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.stem}.", suffix=".part" + p.suffix, dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(encoded.tobytes())
        publish(Path(tmp), p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p
