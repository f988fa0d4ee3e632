"""The animal flow's rules, each against numbers worked out by hand or an independent transcription: the crop
from X-Pose's 9 / 68 points, the convex-hull multiplier, the animal motion rule, X-Pose's input and output handling
(resize sizes, Pillow-equal bilinear resize, normalisation, group choice, scaling) and the no-animal threshold."""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
from scipy.spatial import ConvexHull

from runtime.animal.crop import crop_animal_face
from runtime.animal.motion import AnimalMotionComposer, absolute_keypoints
from runtime.animal.resize import pil_bilinear_resize
from runtime.animal.xpose import (
    MEAN,
    STD,
    NoAnimalFace,
    XPoseDetector,
    input_size,
    load_text_features,
    preprocess,
    select_face,
)
from runtime.crop import CropParams, face_rect_from_landmarks, transform_points
from runtime.motion import KpInfo, convex_hull_volume, motion_multiplier, rotation_matrix
from runtime.options import AnimationOptions
from tests.xpose_stand_in import ASSETS, build_xpose_stand_in, default_logits, layout_9, layout_68

PARAMS = CropParams(dsize=512, scale=2.3, vx_ratio=0.0, vy_ratio=-0.125, flag_do_rot=True)

# An upright animal face: eyes on y = 100, mouth corners on y = 160, chin point at y = 170.
NINE = np.array([[100, 100], [120, 100], [160, 100], [180, 100], [140, 130], [120, 160], [160, 160], [140, 150],
                 [140, 170]], dtype=np.float64)


# ------------------------------------------------------------------------------------------------- crop
def test_nine_point_crop_matches_the_hand_computed_box() -> None:
    # eye anchor = mean of the eye centres (110, 100) and (170, 100) = (140, 100); lip anchor = (140, 160): upright.
    # Extent of all 9 points: x 100..180 (80), y 100..170 (70) -> side 80 * 2.3 = 184; box middle (140, 135);
    # vy -0.125 * 184 = -23 moves it up to (140, 112).
    image = np.zeros((300, 300, 3), np.uint8)
    crop = crop_animal_face(image, NINE, PARAMS)
    s = 512 / 184
    expected = np.array([[s, 0, 256 - s * 140], [0, s, 256 - s * 112], [0, 0, 1]], dtype=np.float32)
    np.testing.assert_allclose(crop.M_o2c, expected, rtol=0, atol=2e-5)
    assert crop.img_crop.shape == (512, 512, 3) and crop.img_crop_256.shape == (256, 256, 3)
    np.testing.assert_allclose(transform_points([[140, 112]], crop.M_o2c), [[256, 256]], atol=1e-3)


def test_roll_comes_from_the_eye_and_mouth_anchors_only() -> None:
    # The same face turned 30 degrees about (140, 130): angle +30 degrees, same side, centre turned with it.
    theta = math.radians(30)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    pivot = np.array([140.0, 130.0])
    turned = (NINE - pivot) @ rot.T + pivot
    rect = face_rect_from_landmarks(turned, 2.3, 0.0, -0.125, dtype=np.float64)
    assert math.degrees(rect.angle) == pytest.approx(30.0, abs=1e-4)
    assert rect.size == pytest.approx(184.0, abs=1e-3)
    np.testing.assert_allclose(rect.center, rot @ (np.array([140.0, 112.0]) - pivot) + pivot, atol=1e-3)
    # nose and upper/lower lip (4, 7, 8) do not enter the anchors: moving them sideways keeps the angle
    moved = NINE.copy()
    moved[[4, 7, 8], 0] += 15
    assert face_rect_from_landmarks(moved, 2.3, 0.0, -0.125, dtype=np.float64).angle == pytest.approx(0.0, abs=1e-9)


def test_68_point_crop_uses_the_ibug_eye_and_mouth_corners() -> None:
    rng = np.random.default_rng(3)
    pts = rng.uniform(101, 179, size=(68, 2))
    pts[[0, 1]] = [[140, 100], [140, 180]]  # the y extent: 100..180
    # eye corners 36/39 and 42/45 on the left (x = 100), mouth corners 48/54 on the right (x = 180): the face's
    # y axis points along +x, so its x axis is (0, -1) and the roll is -90 degrees
    pts[[36, 39, 42, 45]] = [[100, 110], [100, 120], [100, 140], [100, 150]]
    pts[[48, 54]] = [[180, 120], [180, 140]]
    rect = face_rect_from_landmarks(pts, 2.3, 0.0, -0.125, dtype=np.float64)
    assert math.degrees(rect.angle) == pytest.approx(-90.0, abs=1e-4)
    # rotated frame: side = max extent of all points (80 in both axes here) * 2.3; vy shifts along +x (face y)
    side = 80 * 2.3
    assert rect.size == pytest.approx(side, abs=1e-3)
    np.testing.assert_allclose(rect.center, [140 - 0.125 * side, 140], atol=1e-3)
    # the upright 68 layout of the stand-in gives the same anchors as its 9 layout
    nine, sixty_eight = layout_9() * 500, layout_68() * 500
    assert face_rect_from_landmarks(nine, 2.3, 0, -0.125, np.float64).angle == pytest.approx(0.0, abs=1e-9)
    assert face_rect_from_landmarks(sixty_eight, 2.3, 0, -0.125, np.float64).angle == pytest.approx(0.0, abs=1e-9)


def test_crop_refuses_other_point_counts() -> None:
    with pytest.raises(ValueError, match="9×2 or 68×2"):
        crop_animal_face(np.zeros((10, 10, 3), np.uint8), np.zeros((5, 2)), PARAMS)


# ----------------------------------------------------------------------------------------------- motion
def cube(side: float, center=(0.0, 0.0, 0.0)) -> np.ndarray:
    corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=np.float64) - 0.5
    return corners * side + np.asarray(center)


def test_hull_multiplier_is_the_root_of_the_volume_ratio() -> None:
    # 21 keypoints: a cube of side 2 (volume 8) plus 13 points inside it; the first driving frame a unit cube
    rng = np.random.default_rng(0)
    x_s = np.vstack([cube(2.0), rng.uniform(-0.9, 0.9, size=(13, 3))])
    x_d = np.vstack([cube(1.0, (5, 5, 5)), rng.uniform(4.6, 5.4, size=(13, 3))])
    assert convex_hull_volume(x_s) == pytest.approx(8.0, rel=1e-12)
    assert convex_hull_volume(x_d) == pytest.approx(1.0, rel=1e-12)
    assert motion_multiplier(x_s[None], x_d[None]) == pytest.approx(math.sqrt(8.0), rel=1e-12)


def kp_info(rng: np.random.Generator, n: int) -> KpInfo:
    return KpInfo(scale=rng.uniform(0.8, 1.2, (n, 1)), t=rng.normal(0, 0.05, (n, 3)),
                  exp=rng.normal(0, 0.02, (n, 21, 3)), kp=rng.normal(0, 0.3, (n, 21, 3)),
                  pitch=rng.uniform(-20, 20, (n, 1)), yaw=rng.uniform(-20, 20, (n, 1)),
                  roll=rng.uniform(-20, 20, (n, 1)))


def test_animal_motion_rule_matches_a_transcription() -> None:
    rng = np.random.default_rng(1)
    source, driving = kp_info(rng, 1), kp_info(rng, 4)
    weights = rng.normal(0, 0.01, (126, 65)).astype(np.float32)

    def stitching(feat: np.ndarray) -> np.ndarray:
        return feat @ weights

    composer = AnimalMotionComposer(source, stitching, driving_multiplier=1.3)
    got = np.concatenate([composer.compose(driving.take(slice(0, 1))), composer.compose(driving.take(slice(1, 4)))])

    # transcription, frame by frame, float64
    s_s, kp_s = float(source.scale[0, 0]), source.kp[0].astype(np.float64)
    r_s = rotation_matrix(source.pitch, source.yaw, source.roll)[0].astype(np.float64)
    x_s = s_s * (kp_s @ r_s + source.exp[0]) + np.r_[source.t[0, :2], 0.0]
    frames = []
    for i in range(4):
        r_d = rotation_matrix(driving.pitch[i], driving.yaw[i], driving.roll[i])[0].astype(np.float64)
        t_d = np.r_[driving.t[i, :2], 0.0]  # tz = 0
        frames.append(s_s * (kp_s @ r_d + driving.exp[i]) + t_d)  # absolute R and exp, source scale
    m = math.sqrt(ConvexHull(x_s).volume) / math.sqrt(ConvexHull(frames[0]).volume)
    expected = []
    for x_d in frames:
        x_d = x_s + (x_d - frames[0]) * m
        delta = np.r_[x_s.ravel(), x_d.ravel()] @ weights
        x_d = x_d + delta[:63].reshape(21, 3)
        x_d[:, :2] += delta[63:]
        expected.append(x_s + (x_d - x_s) * 1.3)
    np.testing.assert_allclose(got, np.stack(expected), rtol=0, atol=2e-5)
    assert composer.multiplier == pytest.approx(m, rel=1e-5)
    np.testing.assert_allclose(composer.x_s[0], x_s, atol=1e-5)


def test_first_frame_without_stitching_gives_the_source_keypoints() -> None:
    rng = np.random.default_rng(2)
    source, driving = kp_info(rng, 1), kp_info(rng, 2)
    composer = AnimalMotionComposer(source, None)
    x_d = composer.compose(driving)
    np.testing.assert_allclose(x_d[0], composer.x_s[0], atol=1e-6)  # relative to the first driving frame
    assert np.abs(x_d[1] - x_d[0]).max() > 1e-3
    np.testing.assert_allclose(absolute_keypoints(source, driving)[:, :, 2],
                               (source.scale[:, :, None] * (source.kp @ driving.rot + driving.exp))[:, :, 2],
                               atol=1e-6)  # no tz


# ----------------------------------------------------------------------------------------------- X-Pose
@pytest.mark.parametrize(("size", "expected"), [
    ((512, 600), (800, 937)),  # short side 800, long floored: 800 * 600 / 512 = 937.5
    ((600, 512), (937, 800)),
    ((800, 1000), (800, 1000)),  # already at size: untouched
    ((1280, 720), (1333, 750)),  # long side capped: short = round(1333 * 720 / 1280) = 750
    ((2000, 500), (1332, 333)),  # round(333.25) = 333, long = floor(333 * 4)
    ((176, 144), (977, 800)),
])
def test_xpose_input_size_rule(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert input_size(*size) == expected


def test_pil_bilinear_resize_equals_pillow() -> None:
    image_mod = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(5)
    for (h, w), (ow, oh) in (((600, 512), (800, 937)), ((144, 176), (977, 800)), ((1280, 960), (800, 1066)),
                             ((31, 47), (20, 90))):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ours = pil_bilinear_resize(image, (ow, oh))
        ref = np.asarray(image_mod.fromarray(image).resize((ow, oh), image_mod.BILINEAR))
        assert np.array_equal(ours, ref), ((h, w), (ow, oh), int(np.abs(ours.astype(int) - ref).max()))


def test_preprocess_normalises_like_imagenet() -> None:
    image = np.empty((600, 512, 3), np.uint8)
    image[...] = (124, 10, 250)
    x = preprocess(image)
    assert x.shape == (1, 3, 937, 800) and x.dtype == np.float32
    expected = (np.array([124, 10, 250]) / 255.0 - MEAN) / STD
    np.testing.assert_allclose(x[0, :, 400, 300], expected, atol=1e-5)


def test_text_features_are_padded_to_68_rows_with_a_mask() -> None:
    nine = load_text_features(ASSETS / "xpose_text.npz", "animal_face_9")
    assert nine.instance.shape == (1, 512) and nine.keypoints.shape == (68, 512)
    assert nine.count == 9 and nine.mask[:9].all() and not nine.mask[9:].any()
    assert np.abs(nine.keypoints[:9]).sum() > 0 and not nine.keypoints[9:].any()
    assert nine.keypoints.dtype == np.float32
    assert load_text_features(ASSETS / "xpose_text.npz", "animal_face_68").count == 68
    with pytest.raises(ValueError, match="animal_face_9, animal_face_68"):
        load_text_features(ASSETS / "xpose_text.npz", "animal_face_5")


def test_select_face_takes_the_first_best_group_and_scales_to_the_original_size() -> None:
    logits = np.full((1, 50), -3.0, np.float32)
    logits[0, [4, 9]] = 2.0  # a tie: the lower index wins
    keypoints = np.zeros((1, 50, 68, 2), np.float32)
    keypoints[0, 4, :, 0], keypoints[0, 4, :, 1] = 0.25, 0.5
    keypoints[0, 9] = 0.75
    face = select_face({"logits": logits, "keypoints": keypoints}, 9, width=640, height=480)
    assert face.index == 4
    assert face.score == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert face.points.shape == (9, 2) and face.points.dtype == np.float64
    np.testing.assert_array_equal(face.points, np.tile([160.0, 240.0], (9, 1)))  # no half-pixel shift


class _Runner:
    """The stand-in graph on onnxruntime, with the GraphRunner call shape."""

    def __init__(self, model) -> None:
        self.session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        self.seen: list[dict[str, np.ndarray]] = []

    def run(self, feeds):
        self.seen.append(feeds)
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, feeds), strict=True))


def test_detector_on_the_stand_in_graph_returns_its_points() -> None:
    model = build_xpose_stand_in(default_logits(best=7, score=0.9), layout_9(), layout_68())
    for face_type, layout in (("animal_face_9", layout_9()), ("animal_face_68", layout_68())):
        runner = _Runner(model)
        detector = XPoseDetector(runner, load_text_features(ASSETS / "xpose_text.npz", face_type))
        face = detector.detect(np.zeros((600, 512, 3), np.uint8))
        assert face.index == 7 and face.score == pytest.approx(0.9, abs=1e-6)
        np.testing.assert_allclose(face.points, layout[:len(face.points)] * [512, 600], atol=1e-3)
        assert runner.seen[0]["image"].shape == (1, 3, 937, 800)


def test_no_animal_face_below_the_threshold() -> None:
    model = build_xpose_stand_in(default_logits(best=3, score=0.05), layout_9(), layout_68())
    detector = XPoseDetector(_Runner(model), load_text_features(ASSETS / "xpose_text.npz", "animal_face_9"),
                             min_score=0.1)
    with pytest.raises(NoAnimalFace, match=r"no animal face found in sofa\.jpg \(best score 0\.05 < threshold "
                                           r"0\.10\); .*--animal-min-score"):
        detector.detect(np.zeros((64, 64, 3), np.uint8), "sofa.jpg")
    relaxed = XPoseDetector(detector.runner, detector.text, min_score=0.0)  # upstream: always the best candidate
    assert relaxed.detect(np.zeros((64, 64, 3), np.uint8)).index == 3


def test_animal_options_refuse_what_the_animal_flow_lacks() -> None:
    with pytest.raises(ValueError, match="flag_eye_retargeting.*not available with animal"):
        AnimationOptions(animal=True, flag_eye_retargeting=True)
    with pytest.raises(ValueError, match="animal_face_type"):
        AnimationOptions(animal_face_type="animal_face_5")
    with pytest.raises(ValueError, match="animal_min_score"):
        AnimationOptions(animal_min_score=1.5)
    assert AnimationOptions(animal=True).animal_face_type == "animal_face_9"
