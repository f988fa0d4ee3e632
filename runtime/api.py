"""The Python API: construct once (models, device), animate many times; files or arrays out.

    from runtime.api import LivePortrait
    engine = LivePortrait("models_onnx", device="auto")
    result = engine.animate("photo.jpg", "driving.mp4")          # animations/photo--driving.mp4 (+ _concat)
    frames = list(engine.animate_frames(photo_rgb, driving_frames))  # arrays in, arrays out
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from runtime.crop import DRIVING_PARAMS
from runtime.editing import EditParams, PortraitEditor
from runtime.media import (
    MediaError,
    VideoReader,
    VideoWriter,
    animation_paths,
    ensure_writable_folder,
    load_image_rgb,
    probe_media,
    write_image_rgb,
)
from runtime.motion import KpInfo
from runtime.options import AnimationOptions
from runtime.overlap import AsyncSink, Prefetch
from runtime.pipeline import (
    AnimationError,
    Animator,
    DrivingMotion,
    DrivingPlan,
    RenderedFrame,
    RunStats,
    batched,
    driving_prepass_needed,
    pastes_back,
)
from runtime.sessions import GPU_DEVICES, ModelSet
from runtime.templates import Template, load_template, save_template

TEMPLATE_SUFFIXES = (".npz", ".pkl")


@dataclass(frozen=True)
class Progress:
    """Where a running animate() call is, for progress bars and job status in servers.

    stage: "source" (preparing the portrait / the source video pre-pass), "driving" (the driving landmark / motion
    pre-pass, only when one runs), "animating" (frames rendered and handed to the writers).
    """

    stage: str
    done: int
    total: int | None


class AnimationCancelled(AnimationError):
    """The caller's cancel event was set; the run stopped and left no output file behind."""


ProgressCallback = Callable[[Progress], None]


@dataclass
class AnimationResult:
    """Files written and what the user should know about the run."""

    paths: list[Path]
    mode: str
    frames: int
    fps: float
    warnings: list[str] = field(default_factory=list)


class LivePortrait:
    """The engine: loads models_onnx/ once on a device and reuses the sessions for every call."""

    def __init__(self, models_dir: str | Path = "models_onnx", device: str = "auto", precision: str = "auto",
                 check_hash: bool = True, threads: int = 0, coreml_units: str | None = None,
                 strict_device: bool = False, cuda_graph_batch: int = 0, animal: bool = False) -> None:
        """cuda_graph_batch > 0 runs warping + decoder at that fixed batch, captured as a CUDA graph (CUDA only);
        pass the same batch_size to animate().

        animal=True loads the pet models (`<models_dir>/liveportrait_animals/`, or models_dir itself when it is
        that export) and animates animal photos; a human engine also runs animal jobs (options.animal) by
        loading them on first use."""
        if cuda_graph_batch:
            from runtime.providers import resolve_device

            if resolve_device(device).device != "cuda":
                raise ValueError("CUDA graphs need the CUDA device (--device cuda with onnxruntime-gpu)")
        self.animal = animal
        self._settings = dict(models_dir=models_dir, device=device, precision=precision, check_hash=check_hash,
                              threads=threads, coreml_units=coreml_units, strict_device=strict_device,
                              cuda_graph_batch=cuda_graph_batch)
        self._animal_engine: LivePortrait | None = None
        self._animal_lock = threading.Lock()
        if animal:
            from runtime.animal.animator import AnimalAnimator, animal_models_dir
            from runtime.manifest import ANIMAL_FAMILY

            self.models = ModelSet(animal_models_dir(models_dir), device=device, precision=precision,
                                   check_hash=check_hash, threads=threads, coreml_units=coreml_units,
                                   strict_device=strict_device, static_batch=cuda_graph_batch, family=ANIMAL_FAMILY)
            self.animator: Animator = AnimalAnimator(self.models)
        else:
            self.models = ModelSet(models_dir, device=device, precision=precision, check_hash=check_hash,
                                   threads=threads, coreml_units=coreml_units, strict_device=strict_device,
                                   static_batch=cuda_graph_batch)
            self.animator = Animator(self.models)

    def animal_engine(self) -> LivePortrait:
        """The engine for options.animal jobs: this one when it is an animal engine, else one built on first use
        with the same device settings (a ModelsError names the export command when the animal models are missing)."""
        if self.animal:
            return self
        with self._animal_lock:
            if self._animal_engine is None:
                self._animal_engine = LivePortrait(**self._settings, animal=True)
            return self._animal_engine

    def _engine_for(self, options: AnimationOptions) -> LivePortrait:
        """Human or animal engine for these options (an animal engine refuses human jobs)."""
        if options.animal:
            return self.animal_engine()
        if self.animal:
            raise ValueError("this engine was built with animal=True: it animates animal photos only (pass "
                             "AnimationOptions(animal=True), or use a LivePortrait without animal for people)")
        return self

    @property
    def device(self) -> str:
        return self.models.device

    def default_batch(self) -> int:
        """Driving frames per graph call: GPUs like batches; CPUs run one frame at a time.

        On a CPU batch 2 measured no faster per frame (AVX2 EPYC 2026-12-03: 0-6 % faster; AMX Xeon 2026-12-04:
        4 % slower) while the warping session's peak memory nearly doubles (2.67 → 4.62 GB), so batch 1 it is.
        """
        if self.models.static_batch:
            return self.models.static_batch
        return 8 if self.device in GPU_DEVICES else 1

    # ------------------------------------------------------------- arrays API
    def animate_frames(self, source_rgb: np.ndarray, driving_frames: Iterable[np.ndarray],
                       options: AnimationOptions | None = None, face_index: int | None = 0,
                       batch_size: int = 0, paste_back: bool = True) -> Iterator[np.ndarray]:
        """RGB uint8 photo + RGB uint8 driving frames → animated RGB frames (pasted back unless disabled).

        ``face_index`` 0 animates the largest face (official); None animates every face of the photo.
        """
        options = options or AnimationOptions(animal=self.animal)
        if not paste_back:
            options = options.replace(flag_pasteback=False)
        if self._engine_for(options) is not self:
            yield from self._engine_for(options).animate_frames(source_rgb, driving_frames, options, face_index,
                                                                batch_size, paste_back)
            return
        source = self.animator.source_image(np.asarray(source_rgb), options)
        faces = self.animator.source_faces(source, options, face_index)
        size = batch_size or self.default_batch()
        frames_iter = iter(driving_frames)
        first = next(frames_iter, None)
        if first is None:
            raise AnimationError("the driving video has no decodable frames")
        h, w = np.asarray(first).shape[:2]
        square = h == w or self.animal  # animals: the driving clip is cropped only with the flag, as upstream
        frames = itertools.chain([first], frames_iter)
        if driving_prepass_needed(options, square, options.any_retargeting):
            frames = list(frames)  # the landmark pre-pass and the motion pass both read them
        plan = self._plan(lambda: frames, options, square=square, need_lmks=options.any_retargeting,
                          stats=RunStats())
        motions = self._motion_stream(lambda: frames, plan, options, size, keep_crops=False)
        for rendered in self.animator.image_to_video(faces, source, motions, options):
            yield rendered.frame

    def portrait_editor(self, source: str | Path | np.ndarray, options: AnimationOptions | None = None,
                        face_index: int = 0) -> PortraitEditor:
        """Prepare a photo (path or RGB uint8 array) once for slider edits; see runtime.editing.

        options None means the official editing panel's crop (scale 2.5); stitching and cropping follow `options`.
        """
        if self.animal or (options is not None and options.animal):
            raise ValueError("portrait editing is for people: the animal models have no eye/lip retargeting")
        image = load_image_rgb(source) if isinstance(source, (str, Path)) else np.asarray(source)
        return PortraitEditor(self.animator, image, options, face_index)

    # --------------------------------------------------------------- file API
    def animate(self, source: str | Path, driving: str | Path, options: AnimationOptions | None = None,
                output_dir: str | Path = "animations", face_index: int | None = 0, batch_size: int = 0,
                save_template: str | Path | None = None, trust_pickle: bool = False, write_concat: bool = True,
                progress: bool = True, on_progress: ProgressCallback | None = None,
                cancel: threading.Event | None = None) -> AnimationResult:
        """Animate files; writes `<output_dir>/<source>--<driving>.mp4` (+ `_concat`) or `.jpg` for two images.

        ``face_index`` 0 animates the largest face (official); None animates every face of a photo.
        `on_progress` gets a Progress at each stage's start, per frame while animating and at the end; a set `cancel`
        event stops the run within one driving batch with AnimationCancelled (temp files are deleted).
        """
        options = options or AnimationOptions(animal=self.animal)
        engine = self._engine_for(options)
        if engine is not self:
            return engine.animate(source, driving, options, output_dir, face_index, batch_size, save_template,
                                  trust_pickle, write_concat, progress, on_progress, cancel)
        source, driving = Path(source), Path(driving)
        source_info = probe_media(source)
        template = _read_template(driving, trust_pickle)
        driving_info = None if template is not None else probe_media(driving)
        if self.animal:
            _check_animal_inputs(source_info, driving_info, save_template)
        ensure_writable_folder(Path(output_dir) / "probe")
        size = batch_size or self.default_batch()
        run = _Run(self, options, source, driving, Path(output_dir), size, write_concat, progress)
        run.on_progress, run.cancel = on_progress, cancel
        run.check_cancel()
        if source_info.kind == "video":
            result = run.video_source(template, driving_info, face_index)
        elif template is not None:
            result = run.image_source_template(template, face_index)
        elif driving_info.kind == "image":
            result = run.image_to_image(face_index)
        else:
            result = run.image_to_video(driving_info, face_index, save_template)
        if save_template is not None:
            if run.template is not None:
                result.paths.append(save_template_file(save_template, run.template))
            else:
                result.warnings.append(f"no template saved to {save_template}: --save-template needs an image "
                                       "source and a driving video")
        return result

    # ---------------------------------------------------------------- helpers
    def _plan(self, frames_factory, options: AnimationOptions, square: bool, need_lmks: bool, stats: RunStats,
              limit: int | None = None) -> DrivingPlan:
        """The driving clip's crop decision and landmark pre-pass (see DrivingPlan).

        ``limit`` caps the frames read: video→video uses only as many driving frames as the source has, and the
        crop box is averaged over those alone, as upstream.
        """
        plan = self.animator.plan_driving(itertools.islice(frames_factory(), limit), options, square, need_lmks)
        stats.driving_frames_skipped = plan.skip
        return plan

    def _motion_stream(self, frames_factory, plan: DrivingPlan, options: AnimationOptions, size: int,
                       keep_crops: bool, collect: list | None = None,
                       limit: int | None = None) -> Iterator[DrivingMotion]:
        """The kept driving frames → batches of motion, cropped by ``plan``."""
        index = 0
        frames_iter = Prefetch(frames_factory())
        try:
            kept = itertools.islice(frames_iter, plan.skip, limit)
            for frames in batched(kept, size):
                lmks = plan.lmks[index:index + len(frames)] if plan.lmks is not None else None
                motion = self.animator.driving_motion(frames, lmks, plan, options, keep_crops)
                if collect is not None:
                    collect.append(motion)
                index += len(frames)
                yield motion
        finally:
            frames_iter.close()
        if index == 0:
            raise AnimationError("the driving video has no decodable frames")


def _check_animal_inputs(source_info, driving_info, save_template: str | Path | None) -> None:
    """What upstream's animal flow takes: a still photo, driven by a video or a template."""
    if source_info.kind != "image":
        raise AnimationError("the animal flow animates a still photo; a source video is not supported (upstream's "
                             "animal pipeline takes images only)")
    if driving_info is not None and driving_info.kind != "video":
        raise AnimationError("the animal flow is driven by a video or a motion template, not an image: its motion "
                             "is relative to the first driving frame, so one frame would not move the pet")
    if save_template is not None:
        raise AnimationError("--save-template is not available with --animal: make the template with the human "
                             "flow (python cli.py -s <portrait> -d <video> --save-template t.npz); it drives "
                             "animals too")


def _read_template(path: Path, trust_pickle: bool) -> Template | None:
    """A motion template when `path` is one (by suffix or zip magic), else None."""
    if path.suffix.lower() not in TEMPLATE_SUFFIXES:
        return None
    try:
        return load_template(path, trust_pickle=trust_pickle)
    except (ValueError, KeyError) as exc:
        raise AnimationError(f"{path}: not a usable motion template ({exc})") from exc


def save_template_file(path: str | Path, template: Template) -> Path:
    """Write a template (.npz), creating its folder."""
    ensure_writable_folder(Path(path))
    return save_template(path, template)


def concat_frame(driving_256: np.ndarray | None, source: np.ndarray, result_crop: np.ndarray) -> np.ndarray:
    """driving | source | result, the official `_concat` layout: the panels are the two 256² network inputs
    resized (bilinear) to the result's size; without a driving picture (templates) only source | result."""
    h, w = result_crop.shape[:2]
    panels = [p for p in (driving_256, source) if p is not None]
    parts = [cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR) if p.shape[:2] != (h, w) else p for p in panels]
    return np.hstack([*parts, result_crop])


class _Run:
    """One animate() call: mode-specific wiring of frames, writers, progress and warnings."""

    def __init__(self, engine: LivePortrait, options: AnimationOptions, source: Path, driving: Path, out: Path,
                 batch: int, write_concat: bool, progress: bool) -> None:
        self.engine, self.animator = engine, engine.animator
        self.options, self.source, self.driving, self.out = options, source, driving, out
        self.batch, self.write_concat, self.progress = batch, write_concat, progress
        self.stats = RunStats()
        self.template: Template | None = None
        self.on_progress: ProgressCallback | None = None
        self.cancel: threading.Event | None = None
        self.source_frames: int | None = None  # a source video's declared frame count
        self._prepass_pending = False  # a pre-pass will run lazily inside the first rendered batch
        self._animating_total: tuple[int | None] | None = None  # set once the write loop waits for frames

    def report(self, stage: str, done: int, total: int | None) -> None:
        if self.on_progress is not None:
            self.on_progress(Progress(stage, done, total if total is None or done <= total else None))

    def check_cancel(self) -> None:
        """Raise AnimationCancelled once the caller's event is set (called per frame and per batch)."""
        if self.cancel is not None and self.cancel.is_set():
            raise AnimationCancelled("the animation was cancelled; no output was written")

    def watched(self, make: Callable[[], Iterable[np.ndarray]], prepass: str | None,
                total: int | None) -> Callable[[], Iterator[np.ndarray]]:
        """Wrap a frames factory: every frame checks `cancel`; the first pass (a pre-pass) reports `prepass`."""
        calls = itertools.count()
        self._prepass_pending = self._prepass_pending or prepass is not None

        def factory() -> Iterator[np.ndarray]:
            stage = prepass if next(calls) == 0 else None
            return self._frames(make(), stage, total)

        return factory

    def _frames(self, frames: Iterable[np.ndarray], stage: str | None, total: int | None) -> Iterator[np.ndarray]:
        if stage is not None:
            self.report(stage, 0, total)
        done = 0
        try:
            for frame in frames:
                self.check_cancel()
                yield frame
                done += 1
                if stage is not None:
                    self.report(stage, done, total)
            if stage is not None:
                self._prepass_done()
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()

    def _start_animating(self, total: int | None) -> None:
        """The "animating" stage starts now, or when the pre-pass that the first batch triggers has finished."""
        self._animating_total = (total,)
        if not self._prepass_pending:
            self.report("animating", 0, total)

    def _prepass_done(self) -> None:
        self._prepass_pending = False
        if self._animating_total is not None:
            self.report("animating", 0, self._animating_total[0])

    def _faces(self, face_index: int | None):
        self.report("source", 0, 1)
        image = self.animator.source_image(load_image_rgb(self.source), self.options)
        named = {"source_name": self.source.name} if self.engine.animal else {}
        faces = self.animator.source_faces(image, self.options, face_index, **named)
        self.stats.source_faces = len(faces)
        self.check_cancel()
        self.report("source", 1, 1)
        return image, faces

    def _warnings(self) -> list[str]:
        out = list(self.stats.warnings)
        for n, what in ((self.stats.driving_frames_skipped, "driving"), (self.stats.source_frames_skipped, "source")):
            if n:
                out.append(f"no face in the first {n} {what} frame(s): they were skipped, as the official pipeline "
                           f"does (the animation starts at the first {what} frame with a face)")
        if self.stats.source_faces > 1 and not pastes_back(self.options):
            out.append(f"{self.stats.source_faces} faces animated but only the first is written without paste-back")
        return out

    def _concat(self, rendered: RenderedFrame) -> np.ndarray:
        """The side-by-side frame; --concat-source-512 shows the sharp 512² source crop in the middle."""
        source = rendered.source_256
        if self.options.flag_concat_source_512 and rendered.source_crop is not None:
            source = rendered.source_crop
        return concat_frame(rendered.driving_256, source, rendered.crop)

    def _write_video(self, frames: Iterator[RenderedFrame], fps: float, total: int | None,
                     audio_from: Path | None) -> list[Path]:
        """Stream frames into the main (and concat) video; both appear only when complete."""
        from tqdm import tqdm

        main_path, concat_path = animation_paths(self.out, self.source, self.driving)
        crf = self.options.crf
        writers = [VideoWriter(main_path, fps, crf=crf, audio_from=audio_from)]
        concat = None
        count = 0
        bar = tqdm(total=total, unit="frame", desc="animating", disable=not self.progress, dynamic_ncols=True)
        try:
            sink = AsyncSink(lambda pair: [w.write(f) for w, f in zip(writers, pair, strict=False)], depth=16)
            try:
                self._start_animating(total)
                for rendered in frames:
                    self.check_cancel()
                    if count == 0 and self.write_concat:
                        concat = VideoWriter(concat_path, fps, crf=crf, audio_from=audio_from)
                        writers.append(concat)
                    pair = [rendered.frame]
                    if concat is not None:
                        pair.append(self._concat(rendered))
                    sink.put(pair)
                    count += 1
                    bar.update(1)
                    self.report("animating", count, total)
            finally:
                sink.close()
            if count == 0:
                raise AnimationError("no frames were produced (empty driving input)")
            self.check_cancel()
            paths = [w.close() for w in writers]
            self.report("animating", count, count)
            return paths
        except BaseException:
            for w in writers:
                w.abort()
            raise
        finally:
            bar.close()
            self.stats.frames = count

    def image_to_video(self, driving_info, face_index: int | None, save_template: Path | None) -> AnimationResult:
        source_rgb, faces = self._faces(face_index)
        o = self.options
        need_lmks = o.any_retargeting or save_template is not None
        collected: list[DrivingMotion] | None = [] if save_template is not None else None
        fps = driving_info.fps or o.output_fps

        def frames():
            return VideoReader(self.driving)

        square = _is_square(driving_info) or self.engine.animal  # animals: crop only with the flag (upstream)
        prepass = "driving" if driving_prepass_needed(o, square, need_lmks) else None
        frames = self.watched(frames, prepass, driving_info.frame_count)
        plan = self.engine._plan(frames, o, square, need_lmks, self.stats)
        motions = self.engine._motion_stream(frames, plan, o, self.batch, keep_crops=self.write_concat,
                                             collect=collected)
        rendered = self.animator.image_to_video(faces, source_rgb, motions, o)
        audio = self.driving if driving_info.has_audio else None
        total = None if driving_info.frame_count is None else driving_info.frame_count - plan.skip
        paths = self._write_video(rendered, fps, total, audio)
        if collected:
            self.template = _template_from(collected, fps)
        return AnimationResult(paths, "image->video", self.stats.frames, fps, self._warnings())

    def image_source_template(self, template: Template, face_index: int | None) -> AnimationResult:
        source_rgb, faces = self._faces(face_index)
        info = template.to_kp_info()
        motions = (DrivingMotion(info=info.take(slice(i, i + self.batch)),
                                 eye=template.eye_ratio[i:i + self.batch], lip=template.lip_ratio[i:i + self.batch])
                   for i in range(0, template.n_frames, self.batch))
        rendered = self.animator.image_to_video(faces, source_rgb, motions, self.options,
                                                driving_is_video=template.n_frames > 1)
        paths = self._write_video(rendered, template.fps, template.n_frames, None)
        return AnimationResult(paths, "template->video", self.stats.frames, template.fps, self._warnings())

    def image_to_image(self, face_index: int | None) -> AnimationResult:
        source_rgb, faces = self._faces(face_index)
        driving_rgb = load_image_rgb(self.driving)
        square = driving_rgb.shape[0] == driving_rgb.shape[1]
        need = self.options.any_retargeting
        prepass = "driving" if driving_prepass_needed(self.options, square, need) else None
        frames = self.watched(lambda: [driving_rgb], prepass, 1)
        plan = self.engine._plan(frames, self.options, square, need, self.stats)
        motions = list(self.engine._motion_stream(frames, plan, self.options, 1, keep_crops=True))
        self.report("animating", 0, 1)
        rendered = next(iter(self.animator.image_to_video(faces, source_rgb, motions, self.options,
                                                          driving_is_video=False)))
        self.check_cancel()
        main_path, concat_path = animation_paths(self.out, self.source, self.driving, suffix=".jpg")
        paths = [write_image_rgb(main_path, rendered.frame)]
        if self.write_concat:
            paths.append(write_image_rgb(concat_path, self._concat(rendered)))
        self.report("animating", 1, 1)
        return AnimationResult(paths, "image->image", 1, 0.0, self._warnings())

    def video_to_video(self, driving: KpInfo, eye, lip, driving_is_video: bool, fps: float, face_index,
                       crops_factory, audio: Path | None, total: int | None) -> AnimationResult:
        def frames():
            return VideoReader(self.source)

        frames = self.watched(frames, "source", self.source_frames)
        rendered = self.animator.video_to_video(frames, driving, eye, lip, self.options, driving_is_video,
                                                driving_crops=crops_factory, face_index=face_index,
                                                batch_size=self.batch, stats=self.stats)
        paths = self._write_video(rendered, fps, total, audio)
        return AnimationResult(paths, "video->video", self.stats.frames, fps, self._warnings())

    def _driving_prepass(self, factory, plan: DrivingPlan, limit: int | None,
                         total: int | None) -> list[DrivingMotion]:
        """Video source: the driving motion of every frame, batch by batch, reported as the "driving" stage."""
        self.report("driving", 0, total)
        motions: list[DrivingMotion] = []
        done = 0
        for motion in self.engine._motion_stream(factory, plan, self.options, self.batch, keep_crops=False,
                                                 limit=limit):
            self.check_cancel()
            motions.append(motion)
            done += len(motion.info)
            self.report("driving", done, total)
        return motions

    def video_source(self, template: Template | None, driving_info, face_index: int | None) -> AnimationResult:
        """Source video: driving motion for every frame first (smoothing needs the sequence), then render."""
        o = self.options
        with VideoReader(self.source) as reader:
            fps, source_audio, source_count = reader.fps, reader.has_audio, reader.frame_count
        self.source_frames = source_count
        crops_factory = None
        if template is not None:
            info, eye, lip = template.to_kp_info(), template.eye_ratio, template.lip_ratio
            is_video = template.n_frames > 1
            driving_audio = None
        else:
            is_video = driving_info.kind == "video"
            if is_video:
                def factory():
                    return VideoReader(self.driving)
            else:
                image = load_image_rgb(self.driving)

                def factory():
                    return [image]
            limit = source_count if is_video else None
            watched = self.watched(factory, None, None)
            plan = self.engine._plan(watched, o, _is_square(driving_info), o.any_retargeting, self.stats, limit)
            motions = self._driving_prepass(watched, plan, limit, driving_info.frame_count if is_video else 1)
            info = KpInfo.concat([m.info for m in motions])
            eye = np.concatenate([m.eye for m in motions]) if motions[0].eye is not None else None
            lip = np.concatenate([m.lip for m in motions]) if motions[0].lip is not None else None
            driving_audio = self.driving if is_video and driving_info.has_audio else None
            if self.write_concat:
                dsize = DRIVING_PARAMS.dsize

                def crops_factory():
                    frames = itertools.islice(factory(), plan.skip, None) if is_video else _repeat(image)
                    return (plan.crop_256(f, dsize) for f in frames)
        audio = self.source if (o.audio_priority == "source" and source_audio) else (driving_audio or (
            self.source if source_audio else None))
        total = source_count if not is_video else min(source_count or len(info), len(info))
        return self.video_to_video(info, eye, lip, is_video, fps, face_index, crops_factory, audio, total)


def _is_square(info) -> bool:
    """Upstream's test for "already a face crop": the driving frames are as wide as they are high."""
    return info.width == info.height


def _repeat(item):
    while True:
        yield item


def _template_from(motions: list[DrivingMotion], fps: float) -> Template:
    info = KpInfo.concat([m.info for m in motions])
    eye = np.concatenate([m.eye for m in motions])
    lip = np.concatenate([m.lip for m in motions])
    return Template.from_kp_info(info, eye, lip, fps)


__all__ = ["AnimationCancelled", "AnimationError", "AnimationResult", "EditParams", "LivePortrait", "MediaError",
           "PortraitEditor", "Progress"]
