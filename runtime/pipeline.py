"""The animation flows: image→video, video→video, image→image, every face of a photo; frames in, frames out.

This module yields frames and never touches files, so the file-writing API (runtime/api.py) and embedders that
want arrays share one implementation. Driving frames are streamed in batches; only per-frame keypoints and
landmarks (a few KB a frame) are kept for the whole video.
"""

from __future__ import annotations

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
from runtime.face_analysis import FaceAnalyzer, LandmarkTracker
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
class RenderedFrame:
    """One output frame: the full frame (pasted back, or the crop) and the first face's 512² crop."""

    frame: np.ndarray
    crop: np.ndarray
    driving_256: np.ndarray | None = None
    source_crop: np.ndarray | None = None


@dataclass
class RunStats:
    """What happened during a run that the user should hear about."""

    frames: int = 0
    driving_frames_without_face: int = 0
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
    """Whole frame → network input (the official path for driving videos that are already face crops)."""
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
                     face_index: int | None = None) -> list[SourceFace]:
        """Crop and encode every face of the photo (or one), largest first. Raises when there is none."""
        if not options.flag_do_crop:
            return [self._encode_face(resize_256(image_rgb), None, None, image_rgb, options)]
        lmks = self.analyzer(options.det_thresh).faces(image_rgb)
        if not lmks:
            raise AnimationError(
                "no face found in the source image (try a lower --det-thresh, a larger face, or --no-do-crop "
                "for an image that already is a face crop)")
        if face_index is not None:
            if not 0 <= face_index < len(lmks):
                raise AnimationError(f"--face-index {face_index} is out of range: the source has {len(lmks)} face(s)")
            lmks = [lmks[face_index]]
        params = _source_params(options)
        faces = []
        for lmk in lmks:
            crop = crop_face(image_rgb, lmk, params)
            faces.append(self._encode_face(crop.img_crop_256, crop, lmk, image_rgb, options))
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
    def driving_landmarks(self, frames: Iterable[np.ndarray], options: AnimationOptions) -> list[np.ndarray | None]:
        """Pre-pass: tracked 203-point landmarks of every driving frame (None where no face was found yet)."""
        tracker = LandmarkTracker(self.analyzer(options.det_thresh))
        return [tracker(frame) for frame in frames]

    def driving_box(self, lmks: list[np.ndarray | None], options: AnimationOptions) -> np.ndarray:
        """One crop box for the whole driving clip: the mean of the per-frame boxes (official smoothing)."""
        params = _driving_params(options)
        boxes = [driving_bbox(lmk, params) for lmk in lmks if lmk is not None]
        if not boxes:
            raise AnimationError("no face found in any driving frame; drop --crop-driving-video to use the frames "
                                 "as they are (they should then be face crops)")
        return average_bbox(boxes)

    def driving_motion(self, frames: list[np.ndarray], lmks: list[np.ndarray | None] | None,
                       box: np.ndarray | None, options: AnimationOptions, keep_crops: bool) -> DrivingMotion:
        """Motion of a batch of driving frames: crop (or resize), motion graph, eye/lip ratios."""
        if box is not None:
            crops = np.stack([crop_by_bbox(f, box, _driving_params(options).dsize).img_crop_256 for f in frames])
        else:
            crops = np.stack([resize_256(f) for f in frames])
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
        source_crop = faces[0].crop.img_crop if faces[0].crop is not None else _upscale_512(faces[0].image_256)
        pasters = self._gpu_pasters(faces, source_rgb, options)
        for motion in motions:
            if pasters is not None:
                yield from self._render_on_gpu(faces, pasters, motion, source_crop)
                continue
            rendered = []
            for face in faces:
                x_d = face.composer.compose(motion.info, motion.eye, motion.lip)
                rendered.append(self.stages.warp_decode(face.feature, face.composer.x_s, x_d))
            for i in range(len(motion.info)):
                crops = [r[i] for r in rendered]
                frame = self._paste(source_rgb, faces, crops, options)
                driving = None if motion.crops_256 is None else motion.crops_256[i]
                yield RenderedFrame(frame=frame, crop=crops[0], driving_256=driving, source_crop=source_crop)

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
                       source_crop: np.ndarray) -> Iterator[RenderedFrame]:
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
            yield RenderedFrame(frame=frames[i], crop=first_crops[i], driving_256=driving, source_crop=source_crop)

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
        sequence), then the rendering pass.
        """
        stats = stats or RunStats()
        lmks, infos = self._source_video_motion(source_frames(), options, face_index, batch_size)
        source = KpInfo.concat(infos)
        composer = VideoMotionComposer(source, driving, options, self.stages.stitching, self.stages.eye,
                                       self.stages.lip, source_lmks=np.stack(lmks), driving_is_video=driving_is_video)
        n = composer.n_frames
        params = _source_params(options)
        crops_iter = iter(driving_crops()) if driving_crops is not None else None
        index = 0
        for frames in batched(_take(source_frames(), n), batch_size):
            crops = [crop_face(f, lmks[index + i], params) for i, f in enumerate(frames)]
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
                yield RenderedFrame(frame=out, crop=image, driving_256=driving_256, source_crop=crop.img_crop)
            index += len(frames)
        stats.frames = index

    def _source_video_motion(self, frames: Iterable[np.ndarray], options: AnimationOptions,
                             face_index: int | None, batch_size: int) -> tuple[list[np.ndarray], list[KpInfo]]:
        """Pre-pass over the source video: tracked landmarks and keypoint info of every frame."""
        analyzer = self.analyzer(options.det_thresh)
        params = _source_params(options)
        lmks: list[np.ndarray] = []
        infos: list[KpInfo] = []
        previous: np.ndarray | None = None
        for batch in batched(frames, batch_size):
            crops = []
            for frame in batch:
                if previous is None:
                    found = analyzer.faces(frame)
                    if not found:
                        raise AnimationError("no face found in the first frame of the source video")
                    k = face_index or 0
                    if k >= len(found):
                        raise AnimationError(f"--face-index {k} is out of range: the source video's first frame "
                                             f"has {len(found)} face(s)")
                    lmk = found[k]
                else:
                    lmk = analyzer.track(frame, previous)
                previous = lmk
                lmks.append(lmk)
                crops.append(crop_face(frame, lmk, params).img_crop_256)
            infos.append(self.stages.motion(np.stack(crops)))
        if not lmks:
            raise AnimationError("the source video has no frames")
        return lmks, infos


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


def _upscale_512(image_256: np.ndarray) -> np.ndarray:
    return cv2.resize(image_256, (512, 512), interpolation=cv2.INTER_LINEAR)


def _take(items: Iterable, n: int) -> Iterator:
    for i, item in enumerate(items):
        if i >= n:
            return
        yield item


def fill_missing(lmks: list[np.ndarray | None]) -> tuple[list[np.ndarray], int]:
    """Frames without a face reuse the last landmarks (leading ones the first found); returns (filled, missing)."""
    missing = sum(1 for lmk in lmks if lmk is None)
    first = next((lmk for lmk in lmks if lmk is not None), None)
    if first is None:
        return [], missing
    filled, last = [], first
    for lmk in lmks:
        last = lmk if lmk is not None else last
        filled.append(last)
    return filled, missing
