"""Media I/O: probing by content, images, streamed video read/write, audio carry-over, rotation, memory."""

from __future__ import annotations

import os
import struct
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from runtime.media import (
    MediaError,
    VideoReader,
    VideoWriter,
    animation_paths,
    load_image_rgb,
    pad_to_even,
    probe_media,
    write_image_rgb,
)

ASSETS = Path(__file__).parent / "assets"
CARPHONE = ASSETS / "driving_carphone.mp4"
ASTRONAUT = ASSETS / "source_astronaut.png"


def synthetic_frame(i: int, h: int, w: int) -> np.ndarray:
    """Smooth gradients plus a moving square: compressible, but every frame differs."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / w * 255, y / h * 255, np.full_like(x, (i * 7) % 256)], axis=-1)
    # The square sits on even pixels: yuv420p stores colour per 2×2 block, so odd colour edges would bleed
    # by design of the format, not through any fault of the code under test.
    s = max(4, min(h, w) // 5) // 2 * 2
    top, left = (i * 2) % max(2, h - s) // 2 * 2, (i * 4) % max(2, w - s) // 2 * 2
    img[top : top + s, left : left + s] = (220, 60, 50)
    return img.astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def make_clip(
    path: Path,
    frames: int,
    h: int,
    w: int,
    fps: int = 25,
    audio: str | None = None,
    audio_seconds: float = 0.0,
    rotation: int = 0,
    freq: float = 440.0,
    faststart: bool = False,
) -> list[np.ndarray]:
    """Write a test clip straight with PyAV (independent of VideoWriter); returns the frames written."""
    options = {"movflags": "+faststart"} if faststart else {}
    out = av.open(str(path), "w", options=options)
    vs = out.add_stream("libx264", rate=fps)
    vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
    vs.options = {"crf": "10", "preset": "ultrafast"}
    if rotation:
        vs.set_display_rotation(rotation)
    astream = None
    if audio:
        rate = 48000 if audio == "libopus" else 44100
        astream = out.add_stream(audio, rate=rate, layout="mono")
    written = []
    for i in range(frames):
        rgb = synthetic_frame(i, h, w)
        written.append(rgb)
        f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        f.pts = i
        out.mux(vs.encode(f))
    out.mux(vs.encode(None))
    if astream is not None:
        rate = astream.codec_context.sample_rate
        n = int(audio_seconds * rate)
        fmt = astream.codec_context.format.name
        chunk = astream.codec_context.frame_size or 1024
        t = np.arange(n) / rate
        wave = 0.5 * np.sin(2 * np.pi * freq * t)
        for start in range(0, n, chunk):
            part = wave[start : start + chunk]
            if fmt in ("s16", "s16p"):
                arr = (part * 32767).astype(np.int16)[None]
            else:
                arr = part.astype(np.float32)[None]
            af = av.AudioFrame.from_ndarray(arr, format=fmt, layout="mono")
            af.sample_rate = rate
            af.pts = start
            out.mux(astream.encode(af))
        out.mux(astream.encode(None))
    out.close()
    return written


def read_audio(path: Path) -> tuple[str, float, np.ndarray, int]:
    """Codec name, decoded duration in seconds, mono samples and rate of the first audio stream."""
    with av.open(str(path)) as c:
        assert c.streams.audio, f"{path} has no audio stream"
        s = c.streams.audio[0]
        name = s.codec_context.name
        chunks = [
            f.to_ndarray().reshape(f.to_ndarray().shape[0], -1)[0] if f.format.is_planar else f.to_ndarray()[0]
            for f in c.decode(s)
        ]
        rate = s.codec_context.sample_rate
    samples = np.concatenate(chunks).astype(np.float64)
    return name, len(samples) / rate, samples, rate


# ---------------------------------------------------------------- writer → reader


def test_round_trip_count_fps_size_psnr(tmp_path: Path) -> None:
    frames = [synthetic_frame(i, 64, 96) for i in range(24)]
    out = tmp_path / "sub" / "rt.mp4"
    with VideoWriter(out, fps=24) as w:
        for f in frames:
            w.write(f)
    assert out.is_file() and list(out.parent.iterdir()) == [out]
    assert oct(out.stat().st_mode & 0o777) != oct(0o600), "published file kept mkstemp's 0600 mode"
    with VideoReader(out) as r:
        assert (r.width, r.height, r.fps, len(r)) == (96, 64, 24.0, 24)
        decoded = list(r)
        assert r.frames_decoded == 24 and r.error is None and not r.incomplete
    assert len(decoded) == 24  # B-frames delay output: the flush packet must have been decoded
    for a, b in zip(frames, decoded, strict=True):
        assert b.shape == (64, 96, 3) and b.dtype == np.uint8
        assert psnr(a, b) > 30


def test_fractional_fps_kept_exactly(tmp_path: Path) -> None:
    out = tmp_path / "ntsc.mp4"
    with VideoWriter(out, fps=30000 / 1001) as w:
        for i in range(5):
            w.write(synthetic_frame(i, 32, 32))
    with av.open(str(out)) as c:
        assert c.streams.video[0].average_rate == Fraction(30000, 1001)
    assert VideoReader(out).fps == pytest.approx(29.97, abs=1e-3)


def test_odd_size_is_padded_by_edge_replication(tmp_path: Path) -> None:
    frames = [synthetic_frame(i, 21, 33) for i in range(6)]
    out = tmp_path / "odd.mp4"
    with VideoWriter(out, fps=10) as w:
        for f in frames:
            w.write(f)
    info = probe_media(out)
    assert (info.width, info.height, info.frame_count) == (34, 22, 6)
    got = next(iter(VideoReader(out)))
    assert psnr(got[:21, :33], frames[0]) > 30
    padded = pad_to_even(frames[0])
    assert padded.shape == (22, 34, 3)
    np.testing.assert_array_equal(padded[21, :33], frames[0][20])
    np.testing.assert_array_equal(padded[:21, 33], frames[0][:, 32])


def test_exception_inside_writer_leaves_no_file_and_keeps_old_one(tmp_path: Path) -> None:
    out = tmp_path / "fail.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(out, fps=25) as w:
            for i in range(5):
                w.write(synthetic_frame(i, 32, 32))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    out.write_bytes(b"previous result")
    with pytest.raises(RuntimeError):
        with VideoWriter(out, fps=25) as w:
            w.write(synthetic_frame(0, 32, 32))
            raise RuntimeError("again")
    assert out.read_bytes() == b"previous result" and list(tmp_path.iterdir()) == [out]


def test_writer_errors_name_the_problem(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    with pytest.raises(MediaError, match="not_a_dir.*not a directory"):
        VideoWriter(blocker / "out.mp4", fps=25)
    with pytest.raises(MediaError, match="no frames"):
        with VideoWriter(tmp_path / "empty.mp4", fps=25):
            pass
    assert not (tmp_path / "empty.mp4").exists()
    with pytest.raises(MediaError, match=r"32×32.*48×32"):
        with VideoWriter(tmp_path / "mix.mp4", fps=25) as w:
            w.write(synthetic_frame(0, 32, 48))
            w.write(synthetic_frame(1, 32, 32))
    with pytest.raises(MediaError, match="uint8"):
        with VideoWriter(tmp_path / "f.mp4", fps=25) as w:
            w.write(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(MediaError, match="extension"):
        VideoWriter(tmp_path / "x.avi2", fps=25)
    with pytest.raises(MediaError, match="audio source not found"):
        VideoWriter(tmp_path / "a.mp4", fps=25, audio_from=tmp_path / "missing.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_dir"]


def test_animation_paths_follow_official_naming() -> None:
    main, concat = animation_paths("animations", "in/s6.jpg", "d/d0.mp4")
    assert main == Path("animations/s6--d0.mp4") and concat == Path("animations/s6--d0_concat.mp4")


# ---------------------------------------------------------------- audio


def first_audio_packets(path: Path, n: int) -> list[bytes]:
    with av.open(str(path)) as c:
        packets = [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]
    return packets[:n]


def dominant_freq(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize(("codec", "suffix", "copied"), [("aac", ".mp4", True), ("pcm_s16le", ".mov", False)])
def test_audio_carried_over_and_trimmed(tmp_path: Path, codec: str, suffix: str, copied: bool) -> None:
    src = tmp_path / f"driving{suffix}"
    make_clip(src, 25, 32, 32, fps=25, audio=codec, audio_seconds=2.0, freq=440.0)
    out = tmp_path / "with_audio.mp4"
    with VideoWriter(out, fps=25, audio_from=src) as w:
        for i in range(25):  # 1.0 s of video; the audio is 2.0 s and must be cut
            w.write(synthetic_frame(i, 32, 32))
    name, seconds, samples, rate = read_audio(out)
    assert name == "aac"
    assert seconds == pytest.approx(1.0, abs=0.1)
    assert dominant_freq(samples[rate // 10 : rate // 2], rate) == pytest.approx(440.0, abs=10)
    assert probe_media(out).has_audio
    first_out, first_src = first_audio_packets(out, 5), first_audio_packets(src, 5)
    assert (first_out == first_src) is copied  # aac is stream-copied byte for byte; pcm is re-encoded to AAC


def test_audio_source_without_audio_gives_silent_video(tmp_path: Path) -> None:
    out = tmp_path / "silent.mp4"
    with VideoWriter(out, fps=25, audio_from=CARPHONE) as w:
        w.write(synthetic_frame(0, 32, 32))
    with av.open(str(out)) as c:
        assert not c.streams.audio and c.streams.video[0].frames == 1


# ---------------------------------------------------------------- rotation


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_is_applied(tmp_path: Path, rotation: int) -> None:
    clip = tmp_path / f"rot{rotation}.mp4"
    frames = make_clip(clip, 3, 32, 64, rotation=rotation)
    expected = np.rot90(frames[0], rotation // 90)
    info = probe_media(clip)
    assert info.rotation == rotation % 360
    assert (info.height, info.width) == expected.shape[:2]
    with VideoReader(clip) as r:
        got = next(r)
        assert (r.height, r.width) == expected.shape[:2]
    assert got.shape == expected.shape and psnr(got, expected) > 30
    # OpenCV's FFmpeg backend auto-rotates independently of our code: both must agree on the upright picture.
    cap = cv2.VideoCapture(str(clip))
    ok, bgr = cap.read()
    cap.release()
    if ok and bgr.shape == expected.shape:
        assert psnr(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), got) > 30


# ---------------------------------------------------------------- probing


def test_probe_by_content_not_extension(tmp_path: Path) -> None:
    video = probe_media(CARPHONE)
    assert (video.kind, video.width, video.height, video.frame_count, video.has_audio) == (
        "video",
        176,
        144,
        120,
        False,
    )
    assert video.fps == pytest.approx(30000 / 1001)
    image = probe_media(ASTRONAUT)
    assert (image.kind, image.width, image.height, image.fps) == ("image", 512, 512, None)
    disguised_image = tmp_path / "really_png.mp4"
    disguised_image.write_bytes(ASTRONAUT.read_bytes())
    assert probe_media(disguised_image).kind == "image"
    disguised_video = tmp_path / "really_video.png"
    disguised_video.write_bytes(CARPHONE.read_bytes())
    assert probe_media(disguised_video).kind == "video"
    jpg = tmp_path / "x.jpg"
    write_image_rgb(jpg, synthetic_frame(0, 30, 50))
    assert (probe_media(jpg).kind, probe_media(jpg).width, probe_media(jpg).height) == ("image", 50, 30)


def test_probe_rejects_bad_files_with_clear_messages(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="nope.mp4: file not found"):
        probe_media(tmp_path / "nope.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty.mp4: file is empty"):
        probe_media(empty)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(MediaError, match="garbage.mp4: not an image or video"):
        probe_media(garbage)
    text = tmp_path / "notes.png"
    text.write_text("hello, this is text\n" * 20)
    with pytest.raises(MediaError, match="notes.png: not an image or video"):
        probe_media(text)
    cut = tmp_path / "cut.mp4"  # moov index is at the end of this file: cutting it loses the index
    cut.write_bytes(CARPHONE.read_bytes()[: CARPHONE.stat().st_size // 2])
    with pytest.raises(MediaError, match="cut.mp4: .*truncated or corrupt"):
        probe_media(cut)
    with pytest.raises(MediaError, match="cut.mp4: .*truncated"):
        VideoReader(cut)
    png = ASTRONAUT.read_bytes()
    cut_png = tmp_path / "cut.png"
    cut_png.write_bytes(png[: len(png) // 3])
    with pytest.raises(MediaError, match="cut.png: .*truncated"):
        probe_media(cut_png)
    cut_jpg = tmp_path / "cut.jpg"
    write_image_rgb(tmp_path / "full.jpg", synthetic_frame(0, 64, 64))
    cut_jpg.write_bytes((tmp_path / "full.jpg").read_bytes()[:300])
    with pytest.raises(MediaError, match="cut.jpg: JPEG data is truncated"):
        load_image_rgb(cut_jpg)


def test_truncated_streamable_video_yields_what_decodes(tmp_path: Path) -> None:
    full = tmp_path / "full.mp4"
    make_clip(full, 60, 64, 64, faststart=True)
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with VideoReader(cut) as r:
        declared = len(r)
        frames = list(r)
        decoded = r.frames_decoded
        incomplete = r.incomplete
    assert declared == 60
    assert 0 < decoded == len(frames) < 60 and incomplete
    assert all(f.shape == (64, 64, 3) for f in frames)


# ---------------------------------------------------------------- images


def test_load_image_grey_alpha_and_exif(tmp_path: Path) -> None:
    rgb = load_image_rgb(ASTRONAUT)
    assert rgb.shape == (512, 512, 3) and rgb.dtype == np.uint8
    expected = cv2.cvtColor(cv2.imread(str(ASTRONAUT), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(rgb, expected)

    grey = (np.arange(20 * 30) % 256).astype(np.uint8).reshape(20, 30)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    g = load_image_rgb(tmp_path / "g.png")
    assert g.shape == (20, 30, 3) and all(np.array_equal(g[..., c], grey) for c in range(3))

    rgba = np.dstack([synthetic_frame(0, 20, 30), np.full((20, 30), 128, np.uint8)])
    write_image_rgb(tmp_path / "a.png", rgba)
    np.testing.assert_array_equal(load_image_rgb(tmp_path / "a.png"), rgba[..., :3])

    # JPEG with EXIF orientation 6 (display = rotate 90° clockwise): a 40×20 picture must load as 20×40.
    img = np.zeros((20, 40, 3), np.uint8)
    img[:6, :6] = 255  # marker in the stored top-left corner
    ok, jpg = cv2.imencode(".jpg", img)
    assert ok
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0)
    tiff += struct.pack(">I", 0)
    app1 = b"Exif\x00\x00" + tiff
    data = jpg.tobytes()
    (tmp_path / "exif.jpg").write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:])
    upright = load_image_rgb(tmp_path / "exif.jpg")
    assert upright.shape == (40, 20, 3)
    assert upright[:6, -6:].mean() > 200 and upright[:6, :6].mean() < 50  # marker moved to the top-right


def test_write_image_atomic_round_trip(tmp_path: Path) -> None:
    img = synthetic_frame(3, 31, 17)
    out = tmp_path / "deep" / "x.png"
    assert write_image_rgb(out, img) == out
    np.testing.assert_array_equal(load_image_rgb(out), img)
    assert list(out.parent.iterdir()) == [out] and (out.stat().st_mode & 0o077) != 0
    with pytest.raises(MediaError, match="extension"):
        write_image_rgb(tmp_path / "x.notanimage", img)
    with pytest.raises(MediaError, match="uint8"):
        write_image_rgb(tmp_path / "f.png", img.astype(np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep"]


# ---------------------------------------------------------------- memory


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_streaming_keeps_memory_flat(tmp_path: Path) -> None:
    out = tmp_path / "long.mp4"
    base = synthetic_frame(0, 256, 256)
    marks = {}
    with VideoWriter(out, fps=25, preset="veryfast") as w:
        for i in range(600):
            frame = np.roll(base, i, axis=1)
            w.write(frame)
            if i + 1 in (100, 600):
                marks[f"write{i + 1}"] = rss_mb()
    with VideoReader(out) as r:
        for i, _frame in enumerate(r):
            if i + 1 in (100, 600):
                marks[f"read{i + 1}"] = rss_mb()
        assert r.frames_decoded == 600
    assert marks["write600"] - marks["write100"] < 30, marks
    assert marks["read600"] - marks["read100"] < 30, marks
    print("RSS MB", marks)
    assert os.path.getsize(out) > 0
