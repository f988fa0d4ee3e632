"""Uploaded files: copied to the job folder in chunks under a size limit, their type decided from the bytes.

The client's file name is never used: a file is stored as `<role>.<extension of its sniffed type>` inside a folder
named by a random id, so names like `../../x.png` cannot choose where anything is written.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import BinaryIO

import av

from runtime.media import MediaError, probe_media
from runtime.media.probe import sniff_kind

from .errors import ServiceError

CHUNK = 1024 * 1024
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"
# What each input accepts, in the words of the 415 message: (in short, in full).
EXPECTED = {
    "source": ("an image or a video", "an image (PNG, JPEG, WebP, BMP, TIFF) or a video (MP4, MOV, MKV, AVI, WebM)"),
    "driving": ("a video, an image or a motion template", "a video, an image or a .npz motion template"),
    "edit": ("an image", "an image (PNG, JPEG, WebP, BMP, TIFF)"),
}
_FORMAT_EXT = {"mov,mp4,m4a,3gp,3g2,mj2": ".mp4", "matroska,webm": ".mkv", "avi": ".avi", "gif": ".gif",
               "mpegts": ".ts", "flv": ".flv", "ogg": ".ogv", "mpeg": ".mpg"}


def too_large(limit: int) -> ServiceError:
    return ServiceError(413, "upload too large", f"the request is larger than the limit of {limit / 2**20:g} MiB")


def copy_limited(src: BinaryIO, dest: Path, limit: int) -> int:
    """Copy a stream to `dest` one chunk at a time; stop and delete at `limit` bytes. Returns the size."""
    size = 0
    with dest.open("wb") as out:
        while chunk := src.read(CHUNK):
            size += len(chunk)
            if size > limit:
                break
            out.write(chunk)
    if size > limit:
        dest.unlink(missing_ok=True)
        raise too_large(limit)
    return size


def image_extension(head: bytes) -> str | None:
    """Extension of a still image from its magic bytes."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if head.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if head.startswith(b"BM"):
        return ".bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return ".tif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ".webp"
    return None


def video_extension(head: bytes) -> str | None:
    """Extension of a video container from its magic bytes."""
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free"):
        return ".mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return ".mkv"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return ".avi"
    if head.startswith(b"GIF8"):
        return ".gif"
    return None


def _probe_extension(path: Path) -> str | None:
    """Formats without a magic number we know: let FFmpeg (PyAV) decide from the content."""
    try:
        info = probe_media(path)
    except MediaError:
        return None
    if info.kind == "image":
        return ".image"
    with av.open(str(path)) as container:
        return _FORMAT_EXT.get(container.format.name, ".video")


def sniff_extension(path: Path, role: str) -> str:
    """The stored extension for an upload playing `role`, or 415 saying what was expected."""
    with path.open("rb") as fh:
        head = fh.read(64)
    kind = sniff_kind(head)
    ext = image_extension(head) if kind == "image" else video_extension(head) if kind == "video" else None
    if role == "driving" and head.startswith(_ZIP_MAGIC):
        return ".npz"
    if role == "driving" and head.startswith(_PICKLE_MAGIC):
        raise ServiceError(415, "unsupported media type", "pickle (.pkl) templates are not accepted by the server "
                           "(unpickling can run code); convert it to .npz with the CLI")
    if ext is None and head:
        ext = _probe_extension(path)
    if ext is None or (role == "edit" and ext not in (".png", ".jpg", ".bmp", ".tif", ".webp", ".image")):
        short, full = EXPECTED[role]
        what = "the file is empty" if not head else f"the file is not {short} (content not recognised)"
        field = "source" if role == "edit" else role  # the form field the client filled
        raise ServiceError(415, "unsupported media type", f"{field}: {what}; expected {full}")
    return ext


def store_upload(src: BinaryIO, folder: Path, role: str, limit: int) -> Path:
    """Save an upload as `<folder>/<role><ext>` with the extension of its real type."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / f"{role}.upload"
    copy_limited(src, raw, limit)
    try:
        ext = sniff_extension(raw, role)
    except BaseException:
        raw.unlink(missing_ok=True)
        raise
    final = folder / f"{role}{ext}"
    shutil.move(raw, final)
    return final
