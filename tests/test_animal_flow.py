"""The animal flow end to end on the fixture models and the X-Pose stand-in (tests/xpose_stand_in.py): the CLI
with --animal (3 frames through the real warp graph), the motion every front hands to the warp against an
independent composition, templates, the driving-crop rule, the no-animal and missing-model errors, and the flow
without PyTorch.

`animal_root` is the one line to change for the real export: a models_onnx/ folder whose liveportrait_animals/
holds the animal graphs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

import cli
from runtime.animal.crop import crop_animal_face
from runtime.animal.motion import AnimalMotionComposer
from runtime.api import AnimationError, LivePortrait
from runtime.crop import CropParams
from runtime.manifest import ModelsError
from runtime.media import load_image_rgb
from runtime.options import AnimationOptions
from runtime.pipeline import resize_256
from runtime.sessions import ModelSet
from runtime.templates import Template, save_template
from tests.test_pipeline import (
    SOURCE,
    WarpSpy,
    driving_frames,
    h264_round_trip,
    models_copy,
    read_video,
    stream_info,
    write_clip,
)
from tests.xpose_stand_in import animal_models_folder, build_xpose_stand_in, default_logits, layout_9, layout_68

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def animal_root(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models_onnx/ with the human graphs (symlinks) and liveportrait_animals/ (animal manifest + stand-in xpose)."""
    root = models_copy(models_dir, tmp_path_factory.mktemp("animal") / "models_onnx")
    animal_models_folder(models_dir, root / "liveportrait_animals")
    return root


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3-frame 176×144 driving clip (not square) with an AAC track."""
    return write_clip(tmp_path_factory.mktemp("animal_clip") / "drive3.mp4", driving_frames(), audio_hz=440.0)


@pytest.fixture(scope="module")
def animal_engine(animal_root: Path) -> LivePortrait:
    return LivePortrait(animal_root, device="cpu", animal=True)


def expected_kp(engine: LivePortrait, driving_256: np.ndarray, options: AnimationOptions) -> np.ndarray:
    """The driving keypoints by an independent route: the crop from the stand-in's 9 points, the motion graph on
    it and on the driving inputs, and AnimalMotionComposer."""
    source = load_image_rgb(SOURCE)
    h, w = source.shape[:2]
    params = CropParams(dsize=512, scale=options.scale, vx_ratio=options.vx_ratio, vy_ratio=options.vy_ratio)
    crop = crop_animal_face(source, layout_9().astype(np.float64) * [w, h], params)
    stages = engine.animator.stages
    stitching = stages.stitching if options.flag_stitching else None
    composer = AnimalMotionComposer(stages.motion(crop.img_crop_256[None]), stitching, options.driving_multiplier)
    return composer.compose(stages.motion(driving_256))


def test_cli_animal_writes_the_videos(animal_root: Path, clip: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "animations"
    code = cli.main(["-s", str(SOURCE), "-d", str(clip), "--animal", "--models", str(animal_root), "--device", "cpu",
                     "--batch-size", "3", "-o", str(out), "--quiet", "--no-auto-export"])
    assert code == 0, capsys.readouterr().err
    main, concat = out / "source_astronaut--drive3.mp4", out / "source_astronaut--drive3_concat.mp4"
    assert sorted(p.name for p in out.iterdir()) == [main.name, concat.name]
    info = stream_info(main)
    assert info.count == 3 and info.frames[0].shape == (512, 512, 3) and info.fps == 25 and info.has_audio
    side = stream_info(concat)
    assert side.count == 3 and side.frames[0].shape == (512, 3 * 512, 3)
    # pasted back: far from the animal's crop the photo is unchanged (up to what H.264 alone changes)
    floor = h264_round_trip(load_image_rgb(SOURCE), tmp_path)
    assert np.abs(info.frames[1][:40, :40].astype(int) - floor[:40, :40]).mean() < 1.0
    # the face changed between frames (the fixture networks see the driving motion)
    assert np.abs(info.frames[0].astype(int) - info.frames[1]).max() > 10


def test_motion_reaching_the_warp_is_the_animal_rule(animal_engine: LivePortrait, clip: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    spy = WarpSpy().install(monkeypatch)
    options = AnimationOptions(animal=True, driving_multiplier=1.2)
    result = animal_engine.animate(SOURCE, clip, options, output_dir=tmp_path, batch_size=2, progress=False)
    assert result.frames == 3 and result.mode == "image->video"
    # the 176×144 clip is not cropped (upstream's animal rule): each decoded frame is stretched to 256²
    driving = np.stack([resize_256(f) for f in read_video(clip)])
    np.testing.assert_allclose(spy.all_kp, expected_kp(animal_engine, driving, options), atol=2e-4)


def test_template_drives_the_animal(animal_engine: LivePortrait, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    driving = np.stack([resize_256(f) for f in driving_frames()])
    info = animal_engine.animator.stages.motion(driving)
    path = save_template(tmp_path / "motion.npz", Template.from_kp_info(info, np.zeros((3, 2)), np.zeros((3, 1)), 30))
    spy = WarpSpy().install(monkeypatch)
    options = AnimationOptions(animal=True)
    result = animal_engine.animate(SOURCE, path, options, output_dir=tmp_path / "out", progress=False)
    assert result.frames == 3 and result.fps == 30
    np.testing.assert_allclose(spy.all_kp, expected_kp(animal_engine, driving, options), atol=2e-4)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["source_astronaut--motion.mp4",
                                                                   "source_astronaut--motion_concat.mp4"]


def test_human_engine_runs_animal_jobs(animal_root: Path, clip: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    spy = WarpSpy().install(monkeypatch)
    human = LivePortrait(animal_root, device="cpu")  # the server's engine: options.animal picks the animal models
    options = AnimationOptions(animal=True)
    human.animate(SOURCE, clip, options, output_dir=tmp_path, progress=False)
    assert human.animal_engine().models.family == "liveportrait_animals"
    driving = np.stack([resize_256(f) for f in read_video(clip)])
    np.testing.assert_allclose(spy.all_kp, expected_kp(human.animal_engine(), driving, options), atol=2e-4)
    with pytest.raises(ValueError, match="animal photos only"):
        list(human.animal_engine().animate_frames(load_image_rgb(SOURCE), driving_frames(), AnimationOptions()))


def test_driving_video_is_cropped_only_with_the_flag(animal_engine: LivePortrait) -> None:
    frames = driving_frames()
    plain = animal_engine.animator.plan_driving(frames, AnimationOptions(animal=True), square=False, need_lmks=False)
    assert plain.box is None and plain.lmks is None
    flagged = AnimationOptions(animal=True, flag_crop_driving_video=True)
    cropped = animal_engine.animator.plan_driving(frames, flagged, square=False, need_lmks=False)
    assert cropped.box is not None and cropped.box[2] - cropped.box[0] < 176


def test_unsupported_inputs_are_refused(animal_engine: LivePortrait, clip: Path, tmp_path: Path) -> None:
    image = tmp_path / "pose.png"
    cv2.imwrite(str(image), driving_frames()[0][:, :, ::-1])
    with pytest.raises(AnimationError, match="driven by a video or a motion template, not an image"):
        animal_engine.animate(SOURCE, image, AnimationOptions(animal=True), output_dir=tmp_path, progress=False)
    with pytest.raises(AnimationError, match="source video is not supported"):
        animal_engine.animate(clip, clip, AnimationOptions(animal=True), output_dir=tmp_path, progress=False)
    with pytest.raises(AnimationError, match="--save-template is not available with --animal"):
        animal_engine.animate(SOURCE, clip, AnimationOptions(animal=True), output_dir=tmp_path,
                              save_template=tmp_path / "t.npz", progress=False)
    assert not list(tmp_path.glob("*.mp4"))


def test_no_animal_face_fails_with_the_score(models_dir: Path, clip: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "models_onnx" / "liveportrait_animals"
    animal_models_folder(models_dir, folder, build_xpose_stand_in(default_logits(score=0.05), layout_9(), layout_68()))
    out = tmp_path / "out"
    code = cli.main(["-s", str(SOURCE), "-d", str(clip), "--animal", "--models", str(folder.parent), "--device",
                     "cpu", "-o", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert "no animal face found in source_astronaut.png (best score 0.05 < threshold 0.10)" in err
    assert not out.exists() or not list(out.iterdir())
    # --animal-min-score 0 keeps upstream's behaviour: the best candidate is always taken
    engine = LivePortrait(folder, device="cpu", animal=True)
    face = engine.animator.detect_animal(load_image_rgb(SOURCE), AnimationOptions(animal=True, animal_min_score=0))
    assert face.score == pytest.approx(0.05, abs=1e-6)


def test_missing_animal_graphs_name_the_export_command(models_dir: Path, tmp_path: Path) -> None:
    folder = animal_models_folder(models_dir, tmp_path / "liveportrait_animals", with_xpose=False)
    with pytest.raises(ModelsError, match=r"lists no xpose \(xpose\.onnx not exported\)\. Export them with: python "
                                          r"cli\.py export --family liveportrait_animals"):
        LivePortrait(folder, device="cpu", animal=True)
    # every graph there, but exported as the human family: refused rather than animating pets with human weights
    relabelled = animal_models_folder(models_dir, tmp_path / "relabelled")
    manifest = json.loads((relabelled / "manifest.json").read_text())
    manifest["exporter"]["family"] = "liveportrait"
    (relabelled / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelsError, match="holds the liveportrait export, not liveportrait_animals"):
        ModelSet(relabelled, device="cpu", family="liveportrait_animals")
    with pytest.raises(ModelsError) as info:
        cli.ensure_models(tmp_path / "empty_models", tmp_path / "no_weights", auto_export=True, animal=True)
    text = str(info.value)
    assert "empty_models/liveportrait_animals has no manifest.json" in text
    assert "liveportrait_animals/xpose.pth" in text
    assert "python cli.py export --family liveportrait_animals" in text


CHILD = textwrap.dedent("""
    import json, sys
    sys.modules["torch"] = None  # any `import torch` now raises ImportError
    import numpy as np
    import cli
    from runtime.stages import Stages
    Stages.warp_decode = lambda self, f, s, d: np.full((len(d), 512, 512, 3), 90, np.uint8)
    models, source, driving, out = sys.argv[1:5]
    code = cli.main(["-s", source, "-d", driving, "-o", out, "--models", models, "--device", "cpu", "--quiet",
                     "--animal", "--animal-face-type", "animal_face_68"])
    assert code == 0, code
    import pathlib, tempfile
    from runtime.server.main import build
    from runtime.server.settings import Settings
    from starlette.testclient import TestClient
    app, _ = build(Settings(models=pathlib.Path(models), device="cpu"), pathlib.Path(tempfile.mkdtemp()))
    schema = json.dumps(TestClient(app).get("/openapi.json").json())
    assert '"animal"' in schema and "animal_face_type" in schema and "animal_min_score" in schema
    loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    print("TORCH", loaded, "SCIPY", "scipy.spatial" in sys.modules)
""")


def test_animal_flow_runs_without_torch(animal_root: Path, clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(animal_root), str(SOURCE), str(clip), str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "TORCH ['torch'] SCIPY True"
    assert sorted(p.name for p in out.iterdir()) == ["source_astronaut--drive3.mp4",
                                                    "source_astronaut--drive3_concat.mp4"]
