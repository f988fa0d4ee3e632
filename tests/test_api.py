"""The LivePortrait API beyond the single-face happy path: several faces, face selection, driving frames without a
face, huge sources, failures part-way. The warp graph is replaced by the cheap recorder of test_pipeline (pixels of
the real graph are checked there); everything else (detection, crop, motion, paste-back, writers) runs for real.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from export.stand_ins import build_box_detector
from runtime.api import LivePortrait
from runtime.media import VideoReader, load_image_rgb
from runtime.options import AnimationOptions
from tests.test_pipeline import SOURCE, WarpSpy, driving_frames, models_copy, replace_model_file, write_clip

GAP = 256  # grey gap between the two portraits of the group photo
PATCH = 60  # half side of the square compared around each face centre


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api")


@pytest.fixture(scope="module")
def group(models_dir: Path, work: Path) -> tuple[np.ndarray, LivePortrait, list[tuple[int, int]]]:
    """Two astronauts side by side and an engine whose detector reports exactly their two face boxes."""
    one = load_image_rgb(SOURCE)
    h, w = one.shape[:2]
    photo = np.concatenate([one, np.full((h, GAP, 3), 128, np.uint8), one], axis=1)  # 1280×512: not downscaled
    det_scale = 512 / photo.shape[1]  # the detector letterboxes into 512² at the top-left
    face = np.array([0.3 * w, 0.2 * h, 0.7 * w, 0.8 * h])  # the stand-in's face box inside one portrait
    offsets = np.array([0, w + GAP])
    boxes = np.stack([(face + [dx, 0, dx, 0]) * det_scale for dx in offsets])
    folder = models_copy(models_dir, work / "two_faces_models")
    replace_model_file(folder, "det_10g", build_box_detector(boxes).SerializeToString())
    centres = [(int(dx + 0.5 * w), int(0.5 * h)) for dx in offsets]
    return photo, LivePortrait(folder, device="cpu"), centres  # hash check on: the manifest was updated


def _changed(frame: np.ndarray, photo: np.ndarray, centre: tuple[int, int]) -> float:
    x, y = centre
    window = np.s_[y - PATCH:y + PATCH, x - PATCH:x + PATCH]
    return float(np.abs(frame[window].astype(float) - photo[window]).mean())


def test_every_face_of_a_group_photo_is_animated(group, monkeypatch: pytest.MonkeyPatch) -> None:
    """face_index=None (--all-faces): every face, each pasted back in place; the default is the official one face."""
    photo, engine, centres = group
    WarpSpy().install(monkeypatch)
    frames = list(engine.animate_frames(photo, driving_frames()[:1], batch_size=1, face_index=None))
    assert len(frames) == 1 and frames[0].shape == photo.shape
    assert all(_changed(frames[0], photo, c) > 20 for c in centres)
    gap = np.s_[:, 512 + 100:512 + GAP - 100]  # between the two paste-back masks
    assert np.array_equal(frames[0][gap], photo[gap])
    default = next(iter(engine.animate_frames(photo, driving_frames()[:1], batch_size=1)))
    assert sorted(_changed(default, photo, c) > 20 for c in centres) == [False, True]


def test_face_index_animates_only_that_face(group, monkeypatch: pytest.MonkeyPatch) -> None:
    photo, engine, centres = group
    WarpSpy().install(monkeypatch)
    touched = []
    for index in (0, 1):
        frame = next(iter(engine.animate_frames(photo, driving_frames()[:1], face_index=index, batch_size=1)))
        changed = [_changed(frame, photo, c) for c in centres]
        assert sorted(changed)[0] == 0.0 and sorted(changed)[1] > 20, changed  # one face exactly untouched
        touched.append(int(np.argmax(changed)))
    assert sorted(touched) == [0, 1]  # the two indices select the two different faces
    with pytest.raises(RuntimeError, match="--face-index 2 is out of range: the source has 2 face"):
        next(iter(engine.animate_frames(photo, driving_frames()[:1], face_index=2)))


def test_animate_frames_without_paste_back_returns_crops(engine: LivePortrait,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    spy = WarpSpy().install(monkeypatch)
    frames = list(engine.animate_frames(load_image_rgb(SOURCE), iter(driving_frames()), batch_size=2,
                                        paste_back=False))
    assert [f.shape for f in frames] == [(512, 512, 3)] * 3
    assert [len(k) for k in spy.kp_driving] == [2, 1]  # batch_size honoured, generator input accepted


def test_leading_faceless_driving_frames_are_skipped(engine: LivePortrait, work: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A cropped driving clip that starts with black (faceless) frames: as upstream, the animation starts at the
    first frame with a face, the video is that much shorter, and the run says so."""
    real = driving_frames()[0]
    black = np.zeros_like(real)
    clip = write_clip(work / "blackstart.mp4", [black, black, real, np.ascontiguousarray(real[::-1])])
    spy = WarpSpy().install(monkeypatch)
    result = engine.animate(SOURCE, clip, output_dir=work / "crop", batch_size=2, progress=False)
    assert result.frames == 2 and len(spy.all_kp) == 2
    assert any("no face in the first 2 driving frame(s)" in w for w in result.warnings), result.warnings
    with VideoReader(result.paths[0]) as reader:
        assert sum(1 for _ in reader) == 2
    # relative motion starts at the first kept frame: frame 2 gives the source's own keypoints back
    assert not np.allclose(spy.all_kp[0], spy.all_kp[1], atol=1e-4)


def test_huge_source_is_downscaled(engine: LivePortrait, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = cv2.resize(load_image_rgb(SOURCE), (3000, 2000), interpolation=cv2.INTER_LINEAR)
    source = work / "big.jpg"
    cv2.imwrite(str(source), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    driving = work / "still.png"
    cv2.imwrite(str(driving), cv2.cvtColor(driving_frames()[0], cv2.COLOR_RGB2BGR))
    WarpSpy().install(monkeypatch)
    result = engine.animate(source, driving, output_dir=work / "big", write_concat=False, progress=False)
    # longer side to source_max_dim=1280, the other int(2000·1280/3000)=853 trimmed to even (source_division 2)
    assert load_image_rgb(result.paths[0]).shape == (852, 1280, 3)
    small = AnimationOptions(source_max_dim=640)
    result = engine.animate(source, driving, options=small, output_dir=work / "big640", write_concat=False,
                            progress=False)
    assert load_image_rgb(result.paths[0]).shape == (426, 640, 3)


def test_failure_part_way_leaves_no_output(engine: LivePortrait, work: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    clip = write_clip(work / "fail3.mp4", driving_frames())
    WarpSpy(fail_after=1).install(monkeypatch)
    out = work / "failed"
    with pytest.raises(RuntimeError, match="warp failed on purpose"):
        engine.animate(SOURCE, clip, output_dir=out, batch_size=1, progress=False)
    left = sorted(p.name for p in out.rglob("*")) if out.exists() else []
    assert left == [], f"a failed run left files behind: {left}"


def test_cpu_engines_run_one_frame_per_call_and_gpus_eight(engine: LivePortrait,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch 2 was no faster per frame on the CPUs measured and nearly doubled the warping session's memory."""
    assert engine.device == "cpu" and engine.default_batch() == 1
    monkeypatch.setattr(type(engine.models), "device", "cuda", raising=False)
    assert engine.default_batch() == 8
