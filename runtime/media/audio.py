"""Carry the driving video's audio into the output, interleaved with the video as it is written."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av

log = logging.getLogger(__name__)

# Codecs an .mp4 can hold as they are (no re-encode, no quality loss).
MP4_AUDIO_CODECS = {"aac", "mp3"}


class AudioCarry:
    """Copies (aac/mp3) or re-encodes (anything else → AAC) one audio stream, trimmed to the video's length.

    Construct before the output's header is written (it adds the stream), then call `pump(t)` as video time
    advances and `finish(video_seconds)` once. Failures are logged and end the audio, never the video.
    """

    def __init__(self, source: Path, output: av.container.OutputContainer) -> None:
        self.source = source
        self._output = output
        self._input = av.open(str(source))
        self.active = bool(self._input.streams.audio)
        if not self.active:
            self._input.close()
            log.info("%s has no audio stream; output will be silent", source)
            return
        self._in = self._input.streams.audio[0]
        self.copy = self._in.codec_context.name in MP4_AUDIO_CODECS
        if self.copy:
            self._out = output.add_stream_from_template(self._in)
        else:
            rate = self._in.codec_context.sample_rate or 48000
            layout = self._in.codec_context.layout.name if self._in.codec_context.layout else "stereo"
            layout = layout if layout in ("mono", "stereo") else "stereo"
            self._out = output.add_stream("aac", rate=rate, layout=layout)
            self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate, frame_size=1024)
            self._samples = 0
        tb = self._in.time_base
        self._start = float(self._in.start_time * tb) if self._in.start_time is not None and tb else 0.0
        self._packets: Iterator[av.Packet] = self._input.demux(self._in)
        self._pending: av.Packet | None = None
        self.seconds_written = 0.0

    def _packet_time(self, packet: av.Packet) -> float | None:
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is None or packet.time_base is None:
            return None
        return float(ts * packet.time_base) - self._start

    def _next_packet(self) -> av.Packet | None:
        if self._pending is not None:
            packet, self._pending = self._pending, None
            return packet
        for packet in self._packets:
            if packet.size > 0:
                return packet
        return None

    def _write(self, packet: av.Packet, limit: float) -> None:
        if self.copy:
            packet.stream = self._out
            self._output.mux(packet)
            t = self._packet_time(packet) or 0.0
            dur = float(packet.duration * packet.time_base) if packet.duration and packet.time_base else 0.0
            self.seconds_written = max(self.seconds_written, t + dur)
            return
        for frame in packet.decode():
            t = frame.time - self._start if frame.time is not None else self.seconds_written
            if t >= limit:
                continue
            keep = frame.samples if limit == float("inf") else int(round((limit - t) * frame.sample_rate))
            frame.pts = None
            if keep < frame.samples:  # cut the last frame at the video's end
                arr = (
                    frame.to_ndarray()[..., :keep]
                    if frame.format.is_planar
                    else frame.to_ndarray()[..., : keep * len(frame.layout.channels)]
                )
                cut = av.AudioFrame.from_ndarray(arr, format=frame.format.name, layout=frame.layout.name)
                cut.sample_rate = frame.sample_rate
                frame = cut
            self._encode(self._resampler.resample(frame))

    def _encode(self, frames: list[av.AudioFrame] | None) -> None:
        for frame in frames or []:
            frame.pts = self._samples
            frame.time_base = Fraction(1, frame.sample_rate)
            self._samples += frame.samples
            self._output.mux(self._out.encode(frame))
        self.seconds_written = self._samples / float(self._out.codec_context.sample_rate)

    def pump(self, until: float, limit: float = float("inf")) -> None:
        """Write every audio packet that starts before `until` seconds (and before the trim `limit`)."""
        if not self.active:
            return
        try:
            while True:
                packet = self._next_packet()
                if packet is None:
                    return
                t = self._packet_time(packet)
                if t is not None and t >= min(until, limit):
                    self._pending = packet
                    return
                self._write(packet, limit)
        except Exception as exc:  # noqa: BLE001 - best effort: a broken audio track must not cost the video
            log.warning("%s: audio carry-over stopped: %s", self.source, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            self._stop()

    def finish(self, video_seconds: float) -> None:
        """Write the rest of the audio up to the video's end, drain the encoder and close the input."""
        if not self.active:
            return
        self.pump(video_seconds, limit=video_seconds)
        if self.active and not self.copy:
            try:
                self._encode(self._resampler.resample(None))
                self._output.mux(self._out.encode(None))
            except Exception as exc:  # noqa: BLE001 - best effort, as in pump()
                log.warning("%s: audio encoder flush failed: %s", self.source, exc)
        self._stop()

    def _stop(self) -> None:
        if self.active:
            self.active = False
            self._input.close()

    def close(self) -> None:
        """Release the input on an aborted write."""
        self._stop()
