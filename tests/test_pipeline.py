"""End-to-end flows on the fixture models: image→video, video→video, image→image, templates.

The real warping+decoder graph costs seconds per frame on a CPU, so only a handful of frames go through it:
one 3-frame image→video run (with audio and a saved template) is shared by several tests. Tests that check
wiring rather than pixels swap the warp for a cheap stand-in (`WarpSpy(real=False)`), which also records the
driving keypoints every flow hands to the warp, so motion can be compared exactly between runs.

The helpers at the top are imported by the other end-to-end test modules.
"""

from __future__ import annotations

import pickle
import shutil
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import cv2
import numpy as np
import pytest

from runtime.api import AnimationError, LivePortrait
from runtime.crop import CropParams, crop_face
from runtime.manifest import MANIFEST_NAME, read_manifest, sha256_file
from runtime.media import VideoReader, VideoWriter, load_image_rgb
from runtime.options import AnimationOptions
from runtime.paste_back import prepare_paste_back
from runtime.stages import Stages
from runtime.templates import UntrustedPickleError, load_template

ASSETS = Path(__file__).parent / "assets"
SOURCE = ASSETS / "source_astronaut.png"
CARPHONE = ASSETS / "driving_carphone.mp4"
FPS = 25


# ------------------------------------------------------------------------------------------------ helpers
def read_video(path: Path, limit: int | None = None) -> list[np.ndarray]:
    """Decoded RGB frames of a video (at most `limit`)."""
    with VideoReader(path) as reader:
        return [f for _, f in zip(range(limit or 1 << 30), reader, strict=False)]


def driving_frames() -> list[np.ndarray]:
    """Three driving frames with clearly different motion for the random fixture networks: a real frame, a
    black frame (moves the random motion extractor the most) and the real frame mirrored."""
    first = read_video(CARPHONE, 1)[0]
    return [first, np.zeros_like(first), np.ascontiguousarray(first[:, ::-1])]


def write_clip(path: Path, frames: list[np.ndarray], fps: int = FPS, audio_hz: float | None = None) -> Path:
    """H.264 clip of `frames`; with `audio_hz`, plus an AAC sine track as long as the video (PyAV directly)."""
    if audio_hz is None:
        with VideoWriter(path, fps, crf=10) as writer:
            for frame in frames:
                writer.write(frame)
        return path
    rate = 44100
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=rate, layout="mono")
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode(None))
        n = int(rate * len(frames) / fps) + 1024
        wave = (0.3 * np.sin(2 * np.pi * audio_hz * np.arange(n) / rate)).astype(np.float32)
        for start in range(0, n, 1024):
            chunk = av.AudioFrame.from_ndarray(wave[None, start:start + 1024], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = rate, start, Fraction(1, rate)
            container.mux(audio.encode(chunk))
        container.mux(audio.encode(None))
    return path


def stream_info(path: Path) -> SimpleNamespace:
    """Frame count (decoded), fps, size and whether an audio stream with samples is present."""
    frames = read_video(path)
    with av.open(str(path)) as container:
        fps = float(container.streams.video[0].average_rate)
        has_audio = bool(container.streams.audio)
        samples = 0
        if has_audio:
            samples = sum(f.samples for f in container.decode(audio=0))
    return SimpleNamespace(frames=frames, count=len(frames), fps=fps, audio_samples=samples, has_audio=has_audio)


def cheap_images(kp_driving: np.ndarray) -> np.ndarray:
    """Stand-in warp output: one flat grey 512² image per frame, its level set by the driving keypoints."""
    levels = 60 + (np.abs(kp_driving).sum(axis=(1, 2)) * 1000).astype(np.int64) % 120
    return np.ascontiguousarray(np.broadcast_to(levels[:, None, None, None].astype(np.uint8),
                                                (len(kp_driving), 512, 512, 3)))


class WarpSpy:
    """Replaces Stages.warp_decode: records kp_driving of every call, then runs the real graph or the stand-in.

    `fail_after` makes the call after that many calls raise (a run that breaks part-way)."""

    def __init__(self, real: bool = False, fail_after: int | None = None) -> None:
        self.real, self.fail_after = real, fail_after
        self.kp_driving: list[np.ndarray] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> WarpSpy:
        original = Stages.warp_decode
        spy = self

        def warp(stages: Stages, feature, kp_source: np.ndarray, kp_driving: np.ndarray) -> np.ndarray:
            if spy.fail_after is not None and len(spy.kp_driving) >= spy.fail_after:
                raise RuntimeError("warp failed on purpose (test)")
            spy.kp_driving.append(np.array(kp_driving, dtype=np.float32))
            if spy.real:
                return original(stages, feature, kp_source, kp_driving)
            return cheap_images(np.asarray(kp_driving))

        monkeypatch.setattr(Stages, "warp_decode", warp)
        return self

    @property
    def all_kp(self) -> np.ndarray:
        return np.concatenate(self.kp_driving)


def face_mask(engine: LivePortrait, image_rgb: np.ndarray, options: AnimationOptions | None = None) -> np.ndarray:
    """H×W paste-back weight of the largest face, computed independently of the pipeline's own mask."""
    o = options or AnimationOptions()
    lmk = engine.animator.analyzer(o.det_thresh).faces(image_rgb)[0].lmk106  # a still is cropped on these
    params = CropParams(dsize=512, scale=o.scale, vx_ratio=o.vx_ratio, vy_ratio=o.vy_ratio, flag_do_rot=o.flag_do_rot)
    crop = crop_face(image_rgb, lmk, params)
    h, w = image_rgb.shape[:2]
    return prepare_paste_back(None, crop.M_c2o, (w, h), crop_size=crop.img_crop.shape[0])[..., 0]


def h264_round_trip(image_rgb: np.ndarray, folder: Path, n: int = 3) -> np.ndarray:
    """The source as the output encoder sees it (same crf): the floor for 'unchanged' pixels."""
    path = folder / "roundtrip.mp4"
    with VideoWriter(path, FPS, crf=AnimationOptions().crf) as writer:
        for _ in range(n):
            writer.write(image_rgb)
    return read_video(path, 1)[0]


def upstream_pickle(path: Path, template) -> Path:
    """Write a template in the official .pkl layout (per-frame dicts; ratio lists)."""
    motion = [{"scale": template.scale[i:i + 1], "R": template.R[i:i + 1], "exp": template.exp[i:i + 1],
               "t": template.t[i:i + 1], "kp": template.kp[i:i + 1], "x_s": template.x_s[i:i + 1]}
              for i in range(template.n_frames)]
    data = {"n_frames": template.n_frames, "output_fps": template.fps, "motion": motion,
            "c_eyes_lst": [template.eye_ratio[i:i + 1] for i in range(template.n_frames)],
            "c_lip_lst": [template.lip_ratio[i:i + 1] for i in range(template.n_frames)]}
    path.write_bytes(pickle.dumps(data))
    return path


def models_copy(models_dir: Path, dest: Path) -> Path:
    """A models folder whose graphs are symlinks to `models_dir` and whose manifest is a private copy."""
    dest.mkdir(parents=True)
    for item in models_dir.iterdir():
        if item.name == MANIFEST_NAME:
            shutil.copy(item, dest / item.name)
        elif item.is_file():
            (dest / item.name).symlink_to(item.resolve())
    return dest


def replace_model_file(folder: Path, key: str, data: bytes, update_manifest: bool = True) -> Path:
    """Put new bytes under a manifest entry's file; optionally record their sha256/size (a proper re-export)."""
    manifest = read_manifest(folder)
    entry = manifest.models[key]
    path = folder / entry.file
    path.unlink()
    path.write_bytes(data)
    if update_manifest:
        entry.sha256, entry.bytes = sha256_file(path), path.stat().st_size
        manifest.write(folder)
    return path


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pipeline")


@pytest.fixture(scope="module")
def clip(work: Path) -> Path:
    """3-frame driving clip at 25 fps with a 440 Hz AAC track."""
    return write_clip(work / "drive3.mp4", driving_frames(), audio_hz=440.0)


@pytest.fixture(scope="module")
def i2v(engine: LivePortrait, work: Path, clip: Path) -> SimpleNamespace:
    """One real image→video run (3 frames through the real warp graph), saving a motion template."""
    spy = WarpSpy(real=True)
    with pytest.MonkeyPatch.context() as mp:
        spy.install(mp)
        result = engine.animate(SOURCE, clip, output_dir=work / "i2v", batch_size=3,
                                save_template=work / "motion.npz", progress=False)
    return SimpleNamespace(result=result, kp=spy.all_kp, main=result.paths[0], concat=result.paths[1])


# ----------------------------------------------------------------------------------------------- i2v tests
def test_image_to_video_writes_driving_count_fps_and_audio(i2v: SimpleNamespace) -> None:
    r = i2v.result
    assert r.mode == "image->video" and r.frames == 3 and r.fps == pytest.approx(FPS)
    assert i2v.main.name == "source_astronaut--drive3.mp4" and i2v.concat.name == "source_astronaut--drive3_concat.mp4"
    info = stream_info(i2v.main)
    assert info.count == 3 and info.fps == pytest.approx(FPS)
    assert info.frames[0].shape == (512, 512, 3)  # the source's size (paste-back)
    # the driving clip's sine track is carried over, trimmed to the 0.12 s of video
    assert info.has_audio and 0.08 * 44100 < info.audio_samples < 0.2 * 44100
    assert not list(i2v.main.parent.glob(".*part*")), "temporary files left behind"


def test_concat_video_has_three_panels(i2v: SimpleNamespace) -> None:
    info = stream_info(i2v.concat)
    assert info.count == 3 and info.frames[0].shape == (512, 3 * 512, 3)
    assert info.has_audio
    # left panel is the driving frame: the black middle frame shows as black, the others do not
    left = [f[:, :512].astype(float).mean() for f in info.frames]
    assert left[1] < 5 and left[0] > 40 and left[2] > 40


def test_face_changes_and_background_stays_source(i2v: SimpleNamespace, engine: LivePortrait, work: Path) -> None:
    source = load_image_rgb(SOURCE)
    mask = face_mask(engine, source)
    outside, inside = mask == 0, mask >= 0.999
    assert outside.sum() > 2000 and inside.sum() > 100_000
    frames = [f.astype(np.float32) for f in stream_info(i2v.main).frames]
    # outside the mask the output is the source up to H.264 loss: compare with the source's own round trip
    encoded = h264_round_trip(source, work).astype(np.float32)
    floor = np.abs(encoded - source)[outside].mean()
    for frame in frames:
        assert np.abs(frame - source)[outside].mean() < floor + 0.5  # measured: floor 2.31, frames 2.32
        assert np.abs(frame - source)[inside].mean() > 20  # the generated face replaced the source's
    # the face moves between frames (the black driving frame changes the motion the most)
    assert np.abs(frames[1] - frames[0])[inside].mean() > 5
    assert np.abs(frames[1] - frames[0])[outside].mean() < 1.0


# ------------------------------------------------------------------------------------------ template tests
def test_saved_template_reproduces_the_motion(i2v: SimpleNamespace, engine: LivePortrait, work: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    saved = work / "motion.npz"
    assert saved in i2v.result.paths
    template = load_template(saved)
    assert template.n_frames == 3 and template.fps == pytest.approx(FPS)
    spy = WarpSpy().install(monkeypatch)
    result = engine.animate(SOURCE, saved, output_dir=work / "tpl", batch_size=3, progress=False)
    assert result.mode == "template->video" and result.frames == 3
    np.testing.assert_allclose(spy.all_kp, i2v.kp, atol=1e-5)
    assert stream_info(result.paths[0]).count == 3


def test_pickle_template_needs_trust(i2v: SimpleNamespace, engine: LivePortrait, work: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    pkl = upstream_pickle(work / "upstream.pkl", load_template(work / "motion.npz"))
    with pytest.raises(UntrustedPickleError, match="--trust-pickle"):
        engine.animate(SOURCE, pkl, output_dir=work / "pkl", progress=False)
    assert not (work / "pkl").exists() or not list((work / "pkl").iterdir())
    spy = WarpSpy().install(monkeypatch)
    result = engine.animate(SOURCE, pkl, output_dir=work / "pkl", batch_size=3, trust_pickle=True, progress=False)
    assert result.frames == 3
    np.testing.assert_allclose(spy.all_kp, i2v.kp, atol=1e-5)


# ----------------------------------------------------------------------------------------- other modes
def test_video_source_is_video_to_video(engine: LivePortrait, work: Path, clip: Path) -> None:
    """A video as source → v2v; the output has min(source, driving) frames at the source's fps."""
    still = load_image_rgb(SOURCE)
    brighter = np.clip(still.astype(np.int16) + 12, 0, 255).astype(np.uint8)
    source_video = write_clip(work / "source2.mp4", [still, brighter], fps=20)
    result = engine.animate(source_video, clip, output_dir=work / "v2v", batch_size=2, progress=False)
    assert result.mode == "video->video" and result.frames == 2
    info = stream_info(result.paths[0])
    assert info.count == 2 and info.fps == pytest.approx(20) and info.frames[0].shape == (512, 512, 3)
    concat = stream_info(result.paths[1])
    assert concat.count == 2 and concat.frames[0].shape == (512, 1536, 3)
    # the face area was regenerated, not copied from the source video
    mask = face_mask(engine, still) >= 0.999
    assert np.abs(info.frames[0].astype(float) - still)[mask].mean() > 20


def test_driving_image_is_image_to_image(engine: LivePortrait, work: Path) -> None:
    """An image as driving → one .jpg (+ _concat.jpg), no video."""
    driving = work / "pose.png"
    cv2.imwrite(str(driving), cv2.cvtColor(driving_frames()[0], cv2.COLOR_RGB2BGR))
    result = engine.animate(SOURCE, driving, output_dir=work / "i2i", progress=False)
    assert result.mode == "image->image" and result.frames == 1
    main, concat = result.paths
    assert main.name == "source_astronaut--pose.jpg" and concat.name == "source_astronaut--pose_concat.jpg"
    image, side = load_image_rgb(main), load_image_rgb(concat)
    assert image.shape == (512, 512, 3) and side.shape == (512, 1536, 3)
    source = load_image_rgb(SOURCE).astype(float)
    mask = face_mask(engine, load_image_rgb(SOURCE))
    assert np.abs(image - source)[mask >= 0.999].mean() > 20
    assert np.abs(image - source)[mask == 0].mean() < 4  # JPEG loss only
    assert not list((work / "i2i").glob("*.mp4"))


def test_video_source_follows_the_official_frame_rules(engine: LivePortrait, work: Path, clip: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Video source: a leading frame without a face is dropped (the rest stay aligned with their crops); the
    concat shows driving crop | source crop | result; without cropping the frames are resized whole and the
    output is the network's 512² image (no paste-back)."""
    still = load_image_rgb(SOURCE)
    source_video = write_clip(work / "source_blackstart.mp4", [np.zeros_like(still), still, still], fps=20)
    WarpSpy().install(monkeypatch)
    result = engine.animate(source_video, clip, output_dir=work / "v2v_skip", batch_size=2, progress=False)
    assert result.frames == 2, result  # 3 source frames, the first faceless; 3 driving frames
    assert any("no face in the first 1 source frame(s)" in w for w in result.warnings), result.warnings
    frames = stream_info(result.paths[0]).frames
    assert len(frames) == 2
    mask = face_mask(engine, still) == 0
    for frame in frames:  # pasted onto the matching (non-black) frame: the background is the portrait's
        assert np.abs(frame.astype(float) - still)[mask].mean() < 4
    concat = stream_info(result.paths[1]).frames[0]
    assert concat.shape == (512, 1536, 3)
    source_panel = concat[:, 512:1024].astype(float)
    assert source_panel.mean() > 40  # the source crop, not the black frame

    no_crop = AnimationOptions(flag_do_crop=False)
    with pytest.raises(AnimationError, match="first frame of the source video"):  # upstream raises here too
        engine.animate(source_video, clip, options=no_crop, output_dir=work / "v2v_nocrop", progress=False)
    faces_from_start = write_clip(work / "source_face.mp4", [still, still], fps=20)
    uncropped = engine.animate(faces_from_start, clip, options=no_crop, output_dir=work / "v2v_nocrop",
                               batch_size=2, progress=False, write_concat=False)
    assert uncropped.frames == 2 and stream_info(uncropped.paths[0]).frames[0].shape == (512, 512, 3)
