"""Streamed video decoding: one RGB frame at a time, upright, tolerant of truncated files."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from .errors import MediaError, check_readable_file
from .probe import rotation_of

log = logging.getLogger(__name__)


def upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display rotation (degrees counter-clockwise, multiple of 90) that to_ndarray leaves out."""
    k = (rotation // 90) % 4
    return rgb if k == 0 else np.ascontiguousarray(np.rot90(rgb, k))


class VideoReader:
    """Iterate the frames of a video as RGB uint8 H×W×3 arrays without holding more than one in memory.

    After iteration, `frames_decoded` says how many frames came out and `error` holds the decoder/demuxer
    message that ended a damaged file early (None for a clean end).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = check_readable_file(path)
        try:
            self._container = av.open(str(self.path))
        except (av.FFmpegError, UnicodeDecodeError) as exc:
            raise MediaError(
                self.path, f"video could not be opened (truncated, corrupt or not a video): {exc}"
            ) from exc
        if not self._container.streams.video:
            self._container.close()
            raise MediaError(self.path, "no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self.frames_decoded = 0
        self.error: str | None = None
        self._closed = False
        self._exhausted = False
        self._frames = self._decode()
        first = next(self._frames, None)  # peek: validates the file and tells the rotation and display size
        if first is None:
            self.close()
            raise MediaError(
                self.path, f"no decodable video frame (truncated or corrupt){': ' + self.error if self.error else ''}"
            )
        self._peeked: av.VideoFrame | None = first
        self.rotation = rotation_of(first)
        w, h = first.width, first.height
        self.width, self.height = (h, w) if self.rotation in (90, 270) else (w, h)
        rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
        self.fps: float = float(rate) if rate else 25.0
        self.has_audio = bool(self._container.streams.audio)

    @property
    def frame_count(self) -> int | None:
        """Frame count the container declares (a damaged file may deliver fewer), or None if unknown."""
        n = self._stream.frames
        return int(n) if n and n > 0 else None

    @property
    def incomplete(self) -> bool:
        """True once iteration ended short of the declared count or on a decode error (damaged file)."""
        declared = self.frame_count
        return self.error is not None or (self._exhausted and declared is not None and self.frames_decoded < declared)

    def __len__(self) -> int:
        n = self.frame_count
        if n is None:
            raise TypeError(f"{self.path}: the container does not declare its frame count")
        return n

    def _note_error(self, exc: Exception) -> None:
        if self.error is None:
            self.error = str(exc)
            log.warning("%s: stopped/skipped on a damaged part: %s", self.path, exc)

    def _decode(self) -> Iterator[av.VideoFrame]:
        """Demux packet by packet; the empty packet at the end drains the decoder so the last frames come out."""
        flushed = False
        try:
            for packet in self._container.demux(self._stream):
                is_flush = packet.size == 0
                try:
                    frames = packet.decode()
                except av.FFmpegError as exc:  # a corrupt packet: skip it, keep going
                    self._note_error(exc)
                    frames = []
                flushed = flushed or is_flush
                yield from frames
        except av.FFmpegError as exc:  # demuxer gave up (truncated file)
            self._note_error(exc)
        if not flushed and not self._closed:
            try:
                yield from self._stream.codec_context.decode(None)
            except av.FFmpegError as exc:
                self._note_error(exc)

    def __iter__(self) -> VideoReader:
        return self

    def __next__(self) -> np.ndarray:
        if self._closed:
            raise StopIteration
        frame = self._peeked
        self._peeked = None
        if frame is None:
            frame = next(self._frames, None)
        if frame is None:
            self._exhausted = True
            if self.incomplete:
                log.warning(
                    "%s: %d of %s frames decoded (file damaged or truncated)",
                    self.path,
                    self.frames_decoded,
                    self.frame_count,
                )
            self.close()
            raise StopIteration
        self.frames_decoded += 1
        return upright(frame.to_ndarray(format="rgb24"), rotation_of(frame))

    def close(self) -> None:
        """Release the demuxer/decoder; safe to call twice."""
        if not self._closed:
            self._closed = True
            self._frames.close()
            self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
