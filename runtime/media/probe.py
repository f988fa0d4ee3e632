"""Decide what a media file is from its content (never its extension) and describe it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import numpy as np

from .errors import MediaError, check_readable_file
from .images import decode_image_rgb

MediaKind = Literal["image", "video"]

# Container/demuxer names FFmpeg uses for single still-image files.
_IMAGE_DEMUXERS = {"image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe", "tiff_pipe", "jpegls_pipe", "qoi_pipe"}
# Codecs that mean "a still picture" when they appear as a container's only, single-frame video stream.
_IMAGE_CODECS = {"png", "mjpeg", "bmp", "webp", "tiff", "jpegls", "qoi", "jpeg2000"}


@dataclass(frozen=True)
class MediaInfo:
    """What the pipeline needs to know about an input before reading it."""

    path: Path
    kind: MediaKind
    width: int  # display width (after rotation / EXIF orientation)
    height: int  # display height
    fps: float | None  # None for images
    frame_count: int | None  # None when the container does not say
    has_audio: bool
    rotation: int  # degrees counter-clockwise applied to decoded frames for display (0 for images)
    duration: float | None = None  # seconds, when known


def sniff_kind(head: bytes) -> MediaKind | None:
    """Guess image/video from magic bytes; only used to word error messages and pick the image decoder first."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8\xff") or head.startswith(b"BM"):
        return "image"
    if head[:4] in (b"II*\x00", b"MM\x00*") or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "image"
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free") or head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video"
    if head.startswith(b"GIF8"):
        return "video"  # decided by frame count once opened
    return None


def rotation_of(frame: av.VideoFrame) -> int:
    """Display rotation of a decoded frame, snapped to a multiple of 90 degrees in [0, 360)."""
    try:
        degrees = float(frame.rotation or 0)
    except (AttributeError, ValueError, TypeError):
        return 0
    return int(round(degrees / 90.0)) % 4 * 90


def _image_info(path: Path, image: np.ndarray) -> MediaInfo:
    h, w = image.shape[:2]
    return MediaInfo(path, "image", w, h, None, 1, False, 0, None)


def _is_still_container(container: av.container.InputContainer) -> bool:
    names = set(container.format.name.split(","))
    if names & _IMAGE_DEMUXERS:
        return True
    video = container.streams.video
    if len(video) != 1 or container.streams.audio:
        return False
    return video[0].codec_context.name in _IMAGE_CODECS and video[0].frames in (0, 1)


def _video_info(path: Path, container: av.container.InputContainer) -> MediaInfo:
    stream = container.streams.video[0]
    first = None
    try:
        for frame in container.decode(stream):
            first = frame
            break
    except av.FFmpegError as exc:
        raise MediaError(path, f"video stream could not be decoded (truncated or corrupt): {exc}") from exc
    if first is None:
        raise MediaError(path, "video stream holds no decodable frame (truncated or corrupt)")
    rotation = rotation_of(first)
    w, h = first.width, first.height
    if rotation in (90, 270):
        w, h = h, w
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else None
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    frames = int(stream.frames) if stream.frames and stream.frames > 0 else None
    return MediaInfo(path, "video", w, h, fps, frames, bool(container.streams.audio), rotation, duration)


def probe_media(path: str | Path) -> MediaInfo:
    """Describe an input by decoding its header and first frame; raise MediaError for anything unusable."""
    p = check_readable_file(path)
    with p.open("rb") as fh:
        head = fh.read(32)
    guess = sniff_kind(head)
    if guess == "image":
        return _image_info(p, decode_image_rgb(p))
    try:
        container = av.open(str(p))
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        if guess == "video":
            raise MediaError(p, f"video container could not be opened (truncated or corrupt): {exc}") from exc
        raise MediaError(p, "not an image or video (content not recognised)") from exc
    with container:
        if _is_still_container(container):
            try:
                return _image_info(p, decode_image_rgb(p))
            except MediaError as exc:
                if guess is None:  # FFmpeg's image2 demuxer trusts the extension; the bytes are not a picture
                    raise MediaError(p, "not an image or video (content not recognised)") from exc
                raise
        if not container.streams.video:
            what = "audio only" if container.streams.audio else "no streams"
            raise MediaError(p, f"no video stream ({what})")
        return _video_info(p, container)
