"""Our crops against the official cropper's numbers (tests/assets/official_crops.json, see OFFICIAL_CROPS.md in the
project's reference folder): the official code ran on the same media with the same stand-in detector graphs, so
every box, matrix, landmark and crop must agree to ≤ 0.01 px — not merely look plausible.

If a stand-in graph changes, the sha256 recorded in the JSON no longer matches it and the test says the numbers
are stale instead of failing on geometry.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from runtime.api import LivePortrait
from runtime.crop import driving_bbox, face_rect_from_landmarks, transform_points
from runtime.media import VideoReader, load_image_rgb, probe_media
from runtime.options import AnimationOptions
from runtime.retargeting import eye_close_ratio, lip_close_ratio
from runtime.stages import Stages
from tests.conftest import ASSETS
from tests.test_pipeline import WarpSpy

OFFICIAL = json.loads((ASSETS / "official_crops.json").read_text())
PX = 0.01  # the bound on every geometric quantity, in pixels
# the JSON rounds to 1e-4, and the official code mixes float32/float64: colour means of a crop agree to a few
# hundredths of a level, single pixels to one level
MEAN_LEVELS = 0.05


@pytest.fixture(scope="module", autouse=True)
def stand_ins_match(fixture_weights: Path) -> None:
    """The recorded numbers belong to these exact stand-in graphs."""
    for rel, digest in OFFICIAL["stand_in_graphs"].items():
        actual = hashlib.sha256((fixture_weights / rel).read_bytes()).hexdigest()
        if actual != digest:
            pytest.fail(f"{rel} changed (sha256 {actual[:12]}… ≠ {digest[:12]}…): official_crops.json is stale; "
                        "recompute it with the official cropper on the new stand-ins")


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    with VideoReader(ASSETS / "driving_carphone.mp4") as reader:
        return list(reader)


# Matrices are stored rounded to 1e-4 per entry, too coarse to map a 512 px crop's corners to 0.01 px; entries are
# compared at that rounding, and the geometry in pixels through the landmarks mapped into the crop (recorded
# in crop pixels, so they pin the whole matrix).
M_ENTRY = 1.5e-4


def assert_image_summary(image: np.ndarray, ref: dict) -> None:
    assert list(image.shape) == ref["shape"]
    np.testing.assert_allclose(image.reshape(-1, 3).mean(axis=0), ref["channel_mean"], atol=MEAN_LEVELS)
    step = image.shape[0] // 256
    for key, rgb in ref["pixels"].items():
        r, c = (int(v) for v in key.split(","))
        np.testing.assert_allclose(image[r * step, c * step].astype(int), rgb, atol=1, err_msg=f"pixel {key}")
    if "block_mean_8x8" in ref:
        blocks = image.reshape(8, image.shape[0] // 8, 8, image.shape[1] // 8, 3).mean(axis=(1, 3))
        np.testing.assert_allclose(blocks, ref["block_mean_8x8"], atol=MEAN_LEVELS * 4)


@pytest.mark.parametrize("case", ["source_default", "source_options"])
def test_source_crop_is_the_official_one(engine: LivePortrait, case: str) -> None:
    """A still source is cut on the detector's 106 points; the 203 points only give the eye/lip ratios."""
    ref = OFFICIAL[case]
    o = ref["options"]
    options = AnimationOptions(scale=o["scale"], vx_ratio=o["vx_ratio"], vy_ratio=o["vy_ratio"],
                               flag_do_rot=o["flag_do_rot"], det_thresh=o["det_thresh"])
    if o["vx_ratio"]:  # the official crop ignores vx_ratio (never passed on); we honour it, so compare at 0
        assert ref["vx_ratio_changes_M"] is False
        options = options.replace(vx_ratio=0.0)
    image = engine.animator.source_image(load_image_rgb(ASSETS / ref["image"]["file"]), options)
    assert list(image.shape) == ref["image"]["shape_after_resize"]
    faces = engine.animator.analyzer(options.det_thresh).faces(image)
    assert len(faces) == len(ref["faces"])
    np.testing.assert_allclose(faces[0].lmk106, ref["lmk106"], atol=PX)

    rect = face_rect_from_landmarks(faces[0].lmk106, options.scale, options.vx_ratio, options.vy_ratio)
    np.testing.assert_allclose(rect.center, ref["crop_rect"]["center"], atol=PX)
    np.testing.assert_allclose(rect.size, ref["crop_rect"]["size"], atol=PX)

    face = engine.animator.source_faces(image, options)[0]
    np.testing.assert_allclose(face.crop.M_o2c, ref["M_o2c"], atol=M_ENTRY)
    np.testing.assert_allclose(face.crop.M_c2o, ref["M_c2o"], atol=M_ENTRY * 2)
    np.testing.assert_allclose(face.crop.lmk_crop, ref["pt_crop106"], atol=PX)
    np.testing.assert_allclose(face.lmk, ref["lmk203"], atol=PX)
    assert_image_summary(face.crop.img_crop, ref["crop_512"])
    assert_image_summary(face.crop.img_crop_256, ref["crop_256"])
    assert np.array_equal(face.image_256, face.crop.img_crop_256)  # what the networks see
    np.testing.assert_allclose(eye_close_ratio(face.lmk)[0], ref["eye_ratio"], atol=1e-3)
    np.testing.assert_allclose(lip_close_ratio(face.lmk)[0], ref["lip_ratio"], atol=1e-3)


def test_cropping_on_203_points_would_be_visibly_off(engine: LivePortrait) -> None:
    """Guard for the test itself: the old rule (crop on the 203 points) misses the official crop by 30× the
    tolerance even with these stand-ins (measured 0.31 crop px; the issue saw 1.4 px with real landmark models),
    so the test above can tell the two rules apart."""
    from runtime.crop import SOURCE_PARAMS, crop_face

    ref = OFFICIAL["source_default"]
    image = load_image_rgb(ASSETS / ref["image"]["file"])
    face = engine.animator.analyzer(0.15).faces(image)[0]
    wrong = crop_face(image, face.lmk203, SOURCE_PARAMS)
    error = np.abs(transform_points(face.lmk106, wrong.M_o2c) - np.asarray(ref["pt_crop106"])).max()
    assert error > 10 * PX


def test_rotated_source_crop_is_the_official_one() -> None:
    """The rotation branch (the stand-ins always see an upright face): the official crop of tilted 106 points."""
    from runtime.crop import CropParams, crop_face

    probe = OFFICIAL["probes"]["tilted_landmarks_crop_image"]
    lmk = np.asarray(probe["input_lmk106"], np.float32)
    image = load_image_rgb(ASSETS / "source_astronaut.png")
    for case in probe["cases"]:
        kw = case["kwargs"]
        params = CropParams(scale=kw["scale"], vy_ratio=kw["vy_ratio"], flag_do_rot=kw["flag_do_rot"])
        crop = crop_face(image, lmk, params)
        np.testing.assert_allclose(crop.M_c2o, case["M_c2o"], atol=M_ENTRY)
        rect = face_rect_from_landmarks(lmk, params.scale, 0.0, params.vy_ratio)
        np.testing.assert_allclose(rect.center, case["center"], atol=PX)
        np.testing.assert_allclose(rect.size, case["size"], atol=PX)
        assert_image_summary(crop.img_crop, case["crop_512"])


def test_non_square_driving_clip_is_auto_cropped_like_upstream(engine: LivePortrait, frames) -> None:
    """176×144 is not square, so the official pipeline crops it although --crop-driving-video is off: detect
    once, track 203 points, one clip-wide box (the mean of the per-frame boxes), bilinear 256² inputs."""
    ref = OFFICIAL["driving"]
    assert ref["video"]["is_square_video"] is False and ref["video"]["auto_cropped"] is True
    info = probe_media(ASSETS / "driving_carphone.mp4")
    assert (info.width, info.height) == (ref["video"]["width"], ref["video"]["height"])
    crop_ref = ref["auto_crop"]
    options = AnimationOptions(det_thresh=crop_ref["options"]["det_thresh"])
    assert options.flag_crop_driving_video is False
    plan = engine.animator.plan_driving(frames, options, square=info.width == info.height, need_lmks=False)
    assert plan.skip == 0 and len(plan.lmks) == crop_ref["n_crops"] == len(frames)
    boxes = np.array([driving_bbox(lmk) for lmk in plan.lmks])
    np.testing.assert_allclose(boxes, crop_ref["per_frame_box_xyxy"], atol=PX)
    np.testing.assert_allclose(plan.box, crop_ref["global_box_xyxy"], atol=PX)
    np.testing.assert_allclose(plan.lmks[:3], crop_ref["lmk203_frame_first"], atol=PX)  # the first three frames

    from runtime.crop import crop_by_bbox

    first = crop_by_bbox(frames[0], plan.box, 512, plan.lmks[0])
    crops3 = [crop_by_bbox(f, plan.box, 512, lmk).lmk_crop for f, lmk in zip(frames[:3], plan.lmks, strict=False)]
    np.testing.assert_allclose(first.M_o2c, crop_ref["M_o2c"], atol=M_ENTRY + 2.6 * PX)  # translation = −s·centre
    np.testing.assert_allclose(crops3, crop_ref["lmk203_crop_first"], atol=PX)
    np.testing.assert_allclose([crop_by_bbox(f, plan.box, 512, lmk).lmk_crop.mean(axis=0)
                                for f, lmk in zip(frames, plan.lmks, strict=True)],
                               crop_ref["lmk203_crop_centroid"], atol=PX)
    assert_image_summary(first.img_crop, crop_ref["crop_512_first"])
    assert_image_summary(first.img_crop_256, crop_ref["crop_256_first"])
    means = np.array([plan.crop_256(f, 512).reshape(-1, 3).mean(axis=0) for f in frames])
    np.testing.assert_allclose(means, crop_ref["crop_256_channel_mean"], atol=MEAN_LEVELS)
    np.testing.assert_allclose(np.concatenate([eye_close_ratio(lmk) for lmk in plan.lmks]), crop_ref["eye_ratio"],
                               atol=1e-3)
    np.testing.assert_allclose(np.concatenate([lip_close_ratio(lmk) for lmk in plan.lmks]).ravel(),
                               crop_ref["lip_ratio"], atol=1e-3)


def test_square_clip_tracks_the_uncropped_frames(engine: LivePortrait, frames) -> None:
    """The square path (calc_lmks_from_cropped_video): no crop, points tracked on the whole frames, which are
    resized (stretched) to 256²; we run its landmark pass only when retargeting needs the ratios."""
    ref = OFFICIAL["driving"]["calc_lmks_from_cropped_video"]
    options = AnimationOptions(flag_eye_retargeting=True)
    assert engine.animator.plan_driving(iter(frames), AnimationOptions(), square=True, need_lmks=False).lmks is None
    plan = engine.animator.plan_driving(frames, options, square=True, need_lmks=True)
    assert plan.box is None and plan.skip == 0
    np.testing.assert_allclose(plan.lmks[:3], ref["lmk203_first"], atol=PX)  # the first three frames
    np.testing.assert_allclose(np.array([lmk.mean(axis=0) for lmk in plan.lmks]), ref["lmk203_centroid"], atol=PX)
    np.testing.assert_allclose(np.concatenate([eye_close_ratio(lmk) for lmk in plan.lmks]), ref["eye_ratio"],
                               atol=1e-3)
    means = np.array([plan.crop_256(f, 512).reshape(-1, 3).mean(axis=0) for f in frames])
    np.testing.assert_allclose(means, ref["resized_256_channel_mean"], atol=MEAN_LEVELS)


def test_leading_faceless_driving_frames_are_dropped(engine: LivePortrait, frames,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The official probe: frames 0, 1, 5 of the first 10 black. Upstream skips 0 and 1 (the animation starts at
    the first face), tracks through 5, and crops all 8 kept frames with one box — end to end through the API."""
    probe = OFFICIAL["probes"]["driving_black_frames"]
    clip = [np.zeros_like(f) if i in (0, 1, 5) else f for i, f in enumerate(frames[:10])]
    seen: list[np.ndarray] = []
    original = Stages.motion

    def motion(stages: Stages, images: np.ndarray):
        seen.extend(np.asarray(images))
        return original(stages, images)

    monkeypatch.setattr(Stages, "motion", motion)
    spy = WarpSpy().install(monkeypatch)
    source = load_image_rgb(ASSETS / "source_astronaut.png")
    out = list(engine.animate_frames(source, iter(clip), batch_size=4))
    driving_inputs = seen[1:]  # the first motion call is the source's
    assert len(out) == len(spy.all_kp) == probe["n_crops"] == 8
    means = np.array([d.reshape(-1, 3).mean(axis=0) for d in driving_inputs])
    np.testing.assert_allclose(means, probe["crop_256_channel_mean"], atol=MEAN_LEVELS)
    plan = engine.animator.plan_driving(clip, AnimationOptions(), square=False, need_lmks=False)
    assert plan.skip == 2
    np.testing.assert_allclose(plan.box, probe["global_box_xyxy"], atol=PX)
    np.testing.assert_allclose([driving_bbox(lmk) for lmk in plan.lmks], probe["per_frame_box_xyxy"], atol=PX)


def test_square_clip_without_a_face_in_frame_0_fails_like_upstream(engine: LivePortrait, frames) -> None:
    clip = [np.zeros((144, 144, 3), np.uint8)] + [f[:, 16:160] for f in frames[1:3]]
    from runtime.pipeline import AnimationError

    with pytest.raises(AnimationError, match="first driving frame"):
        engine.animator.plan_driving(clip, AnimationOptions(), square=True, need_lmks=True)
