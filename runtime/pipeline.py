"""The animation flows: image→video, video→video, image→image, every face of a photo; frames in, frames out.

This module yields frames and never touches files, so the file-writing API (runtime/api.py) and embedders that
want arrays share one implementation. Driving frames are streamed in batches; only per-frame keypoints and
landmarks (a few KB a frame) are kept for the whole video.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

from runtime.crop import (
    DRIVING_PARAMS,
    CropParams,
    CropResult,
    average_bbox,
    crop_by_bbox,
    crop_face,
    driving_bbox,
    resize_to_limit,
)
from runtime.face_analysis import FaceAnalyzer, FaceLandmarks, LandmarkTracker
from runtime.motion import KpInfo, MotionComposer, VideoMotionComposer
from runtime.options import AnimationOptions
from runtime.paste_back import paste_back as paste_face
from runtime.paste_back import prepare_paste_back
from runtime.paste_back_gpu import GraphPaster
from runtime.retargeting import eye_close_ratio, lip_close_ratio
from runtime.sessions import ModelSet
from runtime.stages import SourceFeature, Stages

NET_SIZE = 256


class AnimationError(RuntimeError):
    """The inputs cannot be animated (no face, empty video, ...); the message says what to change."""


@dataclass
class SourceFace:
    """One face of the source, prepared once: crop, keypoint info, appearance feature, paste-back mask."""

    image_256: np.ndarray
    info: KpInfo
    feature: SourceFeature
    crop: CropResult | None = None
    lmk: np.ndarray | None = None
    mask: np.ndarray | None = None
    composer: MotionComposer | None = None


@dataclass
class DrivingMotion:
    """Motion of a batch of driving frames (+ eye/lip ratios when retargeting needs them)."""

    info: KpInfo
    eye: np.ndarray | None = None
    lip: np.ndarray | None = None
    crops_256: np.ndarray | None = None  # for the side-by-side concat video


@dataclass
class DrivingPlan:
    """How a driving clip becomes network inputs, decided once per clip the way the official pipeline decides it.

    A clip is cropped to its face when --crop-driving-video is set *or when its frames are not square*: the
    official pipeline treats a square clip as an already-cropped face and any other clip as footage to crop.
    Cropping detects the face until it is first found (earlier frames are dropped, as upstream drops them), tracks
    it from there without re-detection, and cuts every kept frame with the mean of the per-frame boxes.
    """

    box: np.ndarray | None = None  # clip-wide [l, t, r, b] crop box; None = frames are resized whole
    skip: int = 0  # leading frames without a face, dropped
    lmks: list[np.ndarray] | None = None  # 203 points of every kept frame; None when nothing needs them

    def crop_256(self, frame: np.ndarray, dsize: int) -> np.ndarray:
        """One driving frame as the motion network sees it (and as the concat video shows it)."""
        if self.box is None:
            return resize_256(frame)
        return crop_by_bbox(frame, self.box, dsize).img_crop_256


@dataclass
class RenderedFrame:
    """One output frame: the full frame (pasted back, or the crop), the first face's 512² result crop and the two
    256² network inputs the concat video shows beside it (driving crop; source crop)."""

    frame: np.ndarray
    crop: np.ndarray
    driving_256: np.ndarray | None = None
    source_256: np.ndarray | None = None
    source_crop: np.ndarray | None = None  # the 512² source crop (the concat video's optional sharp middle panel)


@dataclass
class RunStats:
    """What happened during a run that the user should hear about."""

    frames: int = 0
    driving_frames_skipped: int = 0  # leading driving frames without a face (dropped, as upstream)
    source_frames_skipped: int = 0  # leading source-video frames without a face (dropped)
    source_faces: int = 0
    warnings: list[str] = field(default_factory=list)


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of at most `size` items."""
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def resize_256(image_rgb: np.ndarray) -> np.ndarray:
    """Whole frame → network input: bilinear, as the official path for square driving clips and uncropped sources."""
    if image_rgb.shape[:2] == (NET_SIZE, NET_SIZE):
        return image_rgb
    return cv2.resize(image_rgb, (NET_SIZE, NET_SIZE), interpolation=cv2.INTER_LINEAR)


class Animator:
    """All flows over one ModelSet; construct once, call many times."""

    def __init__(self, models: ModelSet) -> None:
        self.models = models
        self.stages = Stages(models)
        self._analyzer: FaceAnalyzer | None = None
        self._analyzer_thresh: float | None = None

    def analyzer(self, det_thresh: float) -> FaceAnalyzer:
        """Face detector + landmark models (sessions shared across calls)."""
        if self._analyzer is None or self._analyzer_thresh != det_thresh:
            runner = self.models.runner
            self._analyzer = FaceAnalyzer(runner("det_10g").session, runner("2d106det").session,
                                          runner("landmark").session, det_thresh=det_thresh)
            self._analyzer_thresh = det_thresh
        return self._analyzer

    # ----------------------------------------------------------------- source
    def source_image(self, image_rgb: np.ndarray, options: AnimationOptions) -> np.ndarray:
        """Downscale per source_max_dim / source_division, like the official source loading."""
        return resize_to_limit(image_rgb, options.source_max_dim, options.source_division)

    def source_faces(self, image_rgb: np.ndarray, options: AnimationOptions,
                     face_index: int | None = 0) -> list[SourceFace]:
        """Crop and encode one face of the photo (``face_index``, 0 = the largest, as upstream) or, with
        ``face_index=None``, every face largest first. Raises when there is none.

        The crop is cut on the detector's 106 points and the 203 points only give the eye/lip ratios, as in the
        official ``crop_source_image``. Without cropping the whole photo is resized, and the largest face (if any)
        still gives the ratios that lip normalisation and retargeting need.
        """
        found = self.analyzer(options.det_thresh).faces(image_rgb)
        if not options.flag_do_crop:
            lmk = found[0].lmk203 if found else None
            return [self._encode_face(resize_256(image_rgb), None, lmk, image_rgb, options)]
        if not found:
            raise AnimationError(
                "no face found in the source image (try a lower --det-thresh, a larger face, or --no-do-crop "
                "for an image that already is a face crop)")
        if face_index is not None:
            if not 0 <= face_index < len(found):
                raise AnimationError(f"--face-index {face_index} is out of range: the source has {len(found)} face(s)")
            found = [found[face_index]]
        params = _source_params(options)
        faces = []
        for face in found:
            crop = crop_face(image_rgb, face.lmk106, params)
            faces.append(self._encode_face(crop.img_crop_256, crop, face.lmk203, image_rgb, options))
        return faces

    def _encode_face(self, image_256: np.ndarray, crop: CropResult | None, lmk: np.ndarray | None,
                     image_rgb: np.ndarray, options: AnimationOptions) -> SourceFace:
        info = self.stages.motion(image_256[None])
        feature = self.stages.appearance(image_256)
        mask = None
        if crop is not None and pastes_back(options):
            h, w = image_rgb.shape[:2]
            mask = prepare_paste_back(None, crop.M_c2o, (w, h), crop_size=crop.img_crop.shape[0])
        return SourceFace(image_256=image_256, info=info, feature=feature, crop=crop, lmk=lmk, mask=mask)

    def composer(self, face: SourceFace, options: AnimationOptions, driving_is_video: bool) -> MotionComposer:
        """Per-face motion composer (relative motion, stitching, retargeting, lip normalisation)."""
        s = self.stages
        return MotionComposer(face.info, options, s.stitching, s.eye, s.lip, source_lmk=face.lmk,
                              driving_is_video=driving_is_video)

    # ---------------------------------------------------------------- driving
    def plan_driving(self, frames: Iterable[np.ndarray], options: AnimationOptions, square: bool,
                     need_lmks: bool) -> DrivingPlan:
        """Decide the crop of a driving clip (see DrivingPlan); a landmark pre-pass runs when it crops or when
        retargeting/templates need the driving face's points."""
        crop = options.flag_crop_driving_video or not square
        if not driving_prepass_needed(options, square, need_lmks):
            return DrivingPlan()
        tracker = LandmarkTracker(self.analyzer(options.det_thresh))
        raw = [tracker(frame) for frame in frames]
        if not raw:
            raise AnimationError("the driving video has no decodable frames")
        if not crop:
            if raw[0] is None:
                raise AnimationError("no face found in the first driving frame: eye/lip retargeting and templates "
                                     "track the driving face from frame 0 (as the official pipeline does)")
            return DrivingPlan(lmks=raw)
        skip = next((i for i, lmk in enumerate(raw) if lmk is not None), None)
        if skip is None:
            why = "--crop-driving-video is set" if options.flag_crop_driving_video else "its frames are not square"
            raise AnimationError(f"no face found in any driving frame (the driving input is cropped to its face "
                                 f"because {why}); use a driving video that shows a face")
        lmks = raw[skip:]  # once found, the face is tracked and never lost
        params = _driving_params(options)
        return DrivingPlan(box=average_bbox([driving_bbox(lmk, params) for lmk in lmks]), skip=skip, lmks=lmks)

    def driving_motion(self, frames: list[np.ndarray], lmks: list[np.ndarray] | None, plan: DrivingPlan,
                       options: AnimationOptions, keep_crops: bool) -> DrivingMotion:
        """Motion of a batch of kept driving frames: crop (or resize), motion graph, eye/lip ratios."""
        dsize = _driving_params(options).dsize
        crops = np.stack([plan.crop_256(f, dsize) for f in frames])
        info = self.stages.motion(crops)
        eye = lip = None
        if lmks is not None:
            eye = np.concatenate([eye_close_ratio(lmk) for lmk in lmks])
            lip = np.concatenate([lip_close_ratio(lmk) for lmk in lmks])
        return DrivingMotion(info=info, eye=eye, lip=lip, crops_256=crops if keep_crops else None)

    # ------------------------------------------------------------------ flows
    def image_to_video(
        self,
        faces: list[SourceFace],
        source_rgb: np.ndarray,
        motions: Iterable[DrivingMotion],
        options: AnimationOptions,
        driving_is_video: bool = True,
    ) -> Iterator[RenderedFrame]:
        """Animate the still source (every prepared face) with a stream of driving-motion batches."""
        for face in faces:
            face.composer = self.composer(face, options, driving_is_video)
        source_256 = faces[0].image_256
        source_crop = faces[0].crop.img_crop if faces[0].crop is not None else None
        pasters = self._gpu_pasters(faces, source_rgb, options)
        for motion in motions:
            if pasters is not None:
                yield from self._render_on_gpu(faces, pasters, motion, source_256, source_crop)
                continue
            rendered = []
            for face in faces:
                x_d = face.composer.compose(motion.info, motion.eye, motion.lip)
                rendered.append(self.stages.warp_decode(face.feature, face.composer.x_s, x_d))
            for i in range(len(motion.info)):
                crops = [r[i] for r in rendered]
                frame = self._paste(source_rgb, faces, crops, options)
                driving = None if motion.crops_256 is None else motion.crops_256[i]
                yield RenderedFrame(frame=frame, crop=crops[0], driving_256=driving, source_256=source_256,
                                    source_crop=source_crop)

    def _gpu_pasters(self, faces: list[SourceFace], source_rgb: np.ndarray,
                     options: AnimationOptions) -> list[GraphPaster] | None:
        """On CUDA with paste_back.onnx exported: one graph paster per face; None means the numpy paste-back."""
        if not pastes_back(options) or any(f.crop is None or f.mask is None for f in faces):
            return None
        runner = self.stages.paste_runner()
        if runner is None:
            return None
        return [GraphPaster(runner, face.crop.M_c2o, face.mask, source_rgb) for face in faces]

    def _render_on_gpu(self, faces: list[SourceFace], pasters: list[GraphPaster], motion: DrivingMotion,
                       source_256: np.ndarray, source_crop: np.ndarray | None) -> Iterator[RenderedFrame]:
        """One driving batch with the crops warped and blended where they were decoded; frames come back whole."""
        frames: np.ndarray | None = None
        first_crops: np.ndarray | None = None
        for face, paster in zip(faces, pasters, strict=True):
            x_d = face.composer.compose(motion.info, motion.eye, motion.lip)
            image = self.stages.warp_decode_on_device(face.feature, face.composer.x_s, x_d)
            frames, crops = paster.paste_with_crops(image, base=frames)  # later faces go over earlier ones
            first_crops = crops if first_crops is None else first_crops
        for i in range(len(motion.info)):
            driving = None if motion.crops_256 is None else motion.crops_256[i]
            yield RenderedFrame(frame=frames[i], crop=first_crops[i], driving_256=driving, source_256=source_256,
                                source_crop=source_crop)

    def _paste(self, source_rgb: np.ndarray, faces: list[SourceFace], crops: list[np.ndarray],
               options: AnimationOptions) -> np.ndarray:
        if not pastes_back(options) or faces[0].crop is None:
            return crops[0]
        frame = source_rgb
        for face, crop in zip(faces, crops, strict=True):
            frame = paste_face(crop, face.crop.M_c2o, frame, face.mask)
        return frame

    def video_to_video(
        self,
        source_frames: Callable[[], Iterable[np.ndarray]],
        driving: KpInfo,
        driving_eye: np.ndarray | None,
        driving_lip: np.ndarray | None,
        options: AnimationOptions,
        driving_is_video: bool,
        driving_crops: Callable[[], Iterable[np.ndarray | None]] | None = None,
        face_index: int | None = None,
        batch_size: int = 4,
        stats: RunStats | None = None,
    ) -> Iterator[RenderedFrame]:
        """Animate a source video frame by frame (re-cropped per frame) with motion known for every frame.

        `source_frames` is called twice: a pre-pass for landmarks and keypoints (smoothing needs the whole
        sequence), then the rendering pass. Frames are downscaled like a still source; leading frames without a
        face are dropped (upstream drops them too, but then pastes the remaining crops onto the wrong frames).
        """
        stats = stats or RunStats()
        track = self._track_source_video(source_frames(), options, face_index, batch_size)
        stats.source_frames_skipped = track.skip
        composer = VideoMotionComposer(KpInfo.concat(track.infos), driving, options, self.stages.stitching,
                                       self.stages.eye, self.stages.lip, source_lmks=track.ratio_lmks,
                                       driving_is_video=driving_is_video)
        n = composer.n_frames
        crops_iter = iter(driving_crops()) if driving_crops is not None else None
        index = 0
        kept = itertools.islice(self._source_frames(source_frames(), options), track.skip, track.skip + n)
        for frames in batched(kept, batch_size):
            crops = [self._crop_source_frame(f, track.lmks[index + i], options) for i, f in enumerate(frames)]
            feature = self.stages.appearance(np.stack([c.img_crop_256 for c in crops]))
            idx = np.arange(index, index + len(frames))
            eye = None if driving_eye is None else driving_eye[idx if driving_is_video else np.zeros_like(idx)]
            lip = None if driving_lip is None else driving_lip[idx if driving_is_video else np.zeros_like(idx)]
            x_s, x_d = composer.compose(idx, eye, lip)
            images = self.stages.warp_decode(feature, x_s, x_d)
            for frame, crop, image in zip(frames, crops, images, strict=True):
                out = image
                if pastes_back(options):
                    h, w = frame.shape[:2]
                    mask = prepare_paste_back(None, crop.M_c2o, (w, h), crop_size=crop.img_crop.shape[0])
                    out = paste_face(image, crop.M_c2o, frame, mask)
                driving_256 = next(crops_iter, None) if crops_iter is not None else None
                yield RenderedFrame(frame=out, crop=image, driving_256=driving_256, source_256=crop.img_crop_256,
                                    source_crop=crop.img_crop if options.flag_do_crop else None)
            index += len(frames)
        stats.frames = index

    def _source_frames(self, frames: Iterable[np.ndarray], options: AnimationOptions) -> Iterator[np.ndarray]:
        """Source-video frames downscaled per source_max_dim / source_division, as upstream loads them."""
        for frame in frames:
            yield self.source_image(frame, options)

    def _crop_source_frame(self, frame: np.ndarray, lmk: np.ndarray, options: AnimationOptions) -> CropResult:
        """One source-video frame as the networks see it: cropped on its tracked 203 points, or resized whole."""
        if options.flag_do_crop:
            return crop_face(frame, lmk, _source_params(options))
        eye = np.eye(3, dtype=np.float32)
        return CropResult(img_crop=frame, img_crop_256=resize_256(frame), lmk_crop=None, M_o2c=eye, M_c2o=eye)

    def _track_source_video(self, frames: Iterable[np.ndarray], options: AnimationOptions,
                            face_index: int | None, batch_size: int) -> SourceTrack:
        """Pre-pass over the source video: tracked 203 points, ratio points and keypoint info of every kept frame.

        As upstream: the face is detected until found (``face_index`` picks it, largest first), then tracked by the
        203-point model alone. When cropping, the eye/lip ratios come from one more 203-point run seeded by the
        tracked points; without cropping, the tracked points themselves (and frame 0 must show the face).
        """
        analyzer = self.analyzer(options.det_thresh)
        need_ratios = (options.flag_normalize_lip or options.flag_source_video_eye_retargeting
                       or options.any_retargeting)
        track = SourceTrack()
        previous: np.ndarray | None = None
        for batch in batched(self._source_frames(frames, options), batch_size):
            crops = []
            for frame in batch:
                if previous is None:
                    lmk = self._detect_source_face(analyzer, frame, face_index)
                    if lmk is None:
                        if not options.flag_do_crop:
                            raise AnimationError("no face found in the first frame of the source video (without "
                                                 "cropping, the face is tracked from frame 0)")
                        track.skip += 1
                        continue
                else:
                    lmk = analyzer.track(frame, previous)
                previous = lmk
                track.lmks.append(lmk)
                if need_ratios:
                    ratio = analyzer.lmk203.predict(frame, lmk) if options.flag_do_crop else lmk
                    track.ratio_lmks.append(ratio)
                crops.append(self._crop_source_frame(frame, lmk, options).img_crop_256)
            if crops:
                track.infos.append(self.stages.motion(np.stack(crops)))
        if not track.lmks:
            raise AnimationError("no face found in any frame of the source video" if track.skip
                                 else "the source video has no frames")
        if not need_ratios:
            track.ratio_lmks = None
        return track

    @staticmethod
    def _detect_source_face(analyzer: FaceAnalyzer, frame: np.ndarray, face_index: int | None) -> np.ndarray | None:
        found: list[FaceLandmarks] = analyzer.faces(frame)
        if not found:
            return None
        k = face_index or 0
        if k >= len(found):
            raise AnimationError(f"--face-index {k} is out of range: the source video's first face frame "
                                 f"has {len(found)} face(s)")
        return found[k].lmk203


@dataclass
class SourceTrack:
    """What the source-video pre-pass keeps: a few KB a frame, never the frames themselves."""

    skip: int = 0
    lmks: list[np.ndarray] = field(default_factory=list)
    ratio_lmks: list[np.ndarray] | None = field(default_factory=list)
    infos: list[KpInfo] = field(default_factory=list)


def driving_prepass_needed(options: AnimationOptions, square: bool, need_lmks: bool) -> bool:
    """Whether a driving clip's landmarks are tracked before its motion: to crop it (flag, or not square) or
    because retargeting/templates need its eye/lip ratios."""
    return options.flag_crop_driving_video or not square or need_lmks


def pastes_back(options: AnimationOptions) -> bool:
    """The official rule: paste back only with cropping and stitching on (else shoulders would not align)."""
    return options.flag_pasteback and options.flag_do_crop and options.flag_stitching


def _source_params(options: AnimationOptions) -> CropParams:
    return CropParams(dsize=512, scale=options.scale, vx_ratio=options.vx_ratio, vy_ratio=options.vy_ratio,
                      flag_do_rot=options.flag_do_rot)


def _driving_params(options: AnimationOptions) -> CropParams:
    return CropParams(dsize=DRIVING_PARAMS.dsize, scale=options.scale_crop_driving_video,
                      vx_ratio=options.vx_ratio_crop_driving_video, vy_ratio=options.vy_ratio_crop_driving_video,
                      flag_do_rot=False)
