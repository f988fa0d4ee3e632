"""Streamed H.264 writing with atomic publish and audio carry-over."""

from __future__ import annotations

import logging
import os
import tempfile
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from .audio import AudioCarry
from .errors import MediaError
from .paths import ensure_writable_folder, publish

log = logging.getLogger(__name__)

_MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


def pad_to_even(rgb: np.ndarray) -> np.ndarray:
    """yuv420p needs even sides: replicate the last row/column instead of cropping content away."""
    h, w = rgb.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return rgb
    return np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def as_rate(fps: float | Fraction) -> Fraction:
    """fps as an exact rational (29.97… → 30000/1001) so timestamps do not drift."""
    if isinstance(fps, Fraction):
        rate = fps
    else:
        if not np.isfinite(fps) or fps <= 0:
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        rate = Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    return rate


class VideoWriter:
    """Write RGB frames one by one to an H.264 yuv420p file that appears under `path` only when complete.

    Frames go to a hidden temporary file beside the target; `close()` renames it into place. An exception inside
    `with VideoWriter(...)` (or `abort()`) deletes the temporary file, so a failed run never leaves a partial video.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float | Fraction,
        crf: int = 15,
        audio_from: str | Path | None = None,
        preset: str = "medium",
    ) -> None:
        self.path = Path(path)
        self.rate = as_rate(fps)
        self.crf = int(crf)
        self.preset = preset
        self.audio_from = Path(audio_from) if audio_from is not None else None
        if self.audio_from is not None and not self.audio_from.is_file():
            raise MediaError(self.audio_from, "audio source not found")
        fmt = _MUXERS.get(self.path.suffix.lower())
        if fmt is None:
            raise MediaError(
                self.path, f"unsupported video extension {self.path.suffix!r} (use one of {sorted(_MUXERS)})"
            )
        folder = ensure_writable_folder(self.path)
        try:  # creating the temp file is the real writability test (read-only mounts, quotas)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=".part" + self.path.suffix, dir=folder)
        except OSError as exc:
            raise MediaError(self.path, f"cannot write in output folder {folder}: {exc.strerror or exc}") from exc
        os.close(fd)
        self.tmp_path = Path(tmp)
        self._format = fmt
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self._audio: AudioCarry | None = None
        self._size: tuple[int, int] | None = None  # (h, w) of the caller's frames
        self.frames_written = 0
        self._done = False

    def _open(self, h: int, w: int) -> None:
        """Set up the muxer on the first frame, when the size is known."""
        options = {"movflags": "+faststart"} if self._format in ("mp4", "mov") else {}
        self._container = av.open(str(self.tmp_path), mode="w", format=self._format, options=options)
        stream = self._container.add_stream("libx264", rate=self.rate)
        stream.width, stream.height = w + w % 2, h + h % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(self.crf), "preset": self.preset}
        stream.codec_context.time_base = 1 / self.rate
        self._stream = stream
        if self.audio_from is not None:
            try:
                self._audio = AudioCarry(self.audio_from, self._container)
            except (av.FFmpegError, ValueError, OSError) as exc:
                log.warning("%s: audio not carried over: %s", self.audio_from, exc)
                self._audio = None
        self._size = (h, w)

    def write(self, rgb: np.ndarray) -> None:
        """Encode one RGB uint8 H×W×3 frame; every frame must have the first frame's size."""
        if self._done:
            raise MediaError(self.path, "write() after close()")
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise MediaError(
                self.path,
                f"frames must be RGB uint8 H×W×3, got {getattr(rgb, 'dtype', type(rgb))} {getattr(rgb, 'shape', '')}",
            )
        h, w = rgb.shape[:2]
        if self._container is None:
            self._open(h, w)
        elif (h, w) != self._size:
            raise MediaError(
                self.path, f"frame {self.frames_written} is {w}×{h}, the video is {self._size[1]}×{self._size[0]}"
            )
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pad_to_even(rgb)), format="rgb24")
        frame.pts = self.frames_written
        if self._audio is not None:
            self._audio.pump(float((self.frames_written + 1) / self.rate))
        self._container.mux(self._stream.encode(frame))
        self.frames_written += 1

    @property
    def duration(self) -> float:
        """Seconds of video written so far."""
        return float(self.frames_written / self.rate)

    def close(self) -> Path:
        """Flush encoders, finish the audio, and publish the file under its final name."""
        if self._done:
            return self.path
        if self.frames_written == 0:
            self.abort()
            raise MediaError(self.path, "no frames were written; nothing saved")
        try:
            self._container.mux(self._stream.encode(None))
            if self._audio is not None:
                self._audio.finish(self.duration)
            self._container.close()
            publish(self.tmp_path, self.path)
        except BaseException:
            self.abort()
            raise
        self._done = True
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; the final path is left untouched."""
        self._done = True
        if self._audio is not None:
            self._audio.close()
        if self._container is not None:
            try:
                self._container.close()
            except (av.FFmpegError, OSError, ValueError):
                pass
        self.tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if et is None:
            self.close()
        else:
            self.abort()
