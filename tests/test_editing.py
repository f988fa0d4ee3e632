"""Portrait editing (the official app's retargeting panel) on the fixture models.

The real warping+decoder graph costs seconds per image on a CPU, so only four renders go through it; the per-slider
checks use the driving keypoints and the cheap warp stand-in of test_pipeline.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import cli
from runtime.api import LivePortrait
from runtime.editing import EDIT_RANGES, EXPRESSION_EDITS, EditParams, PortraitEditor, edited_expression
from runtime.face_analysis import FaceAnalyzer
from runtime.media import load_image_rgb
from runtime.motion import apply_stitching
from runtime.options import AnimationOptions
from runtime.paste_back import paste_back as paste_face
from runtime.sessions import ModelSet
from runtime.stages import Stages
from tests.test_pipeline import SOURCE, WarpSpy

WARP_GRAPHS = {"warping_spade", "warping", "spade_decoder"}


@pytest.fixture(scope="module")
def editor(engine: LivePortrait) -> PortraitEditor:
    return engine.portrait_editor(SOURCE)


class RunCounter:
    """Counts every graph run through ModelSet.run and every face-analysis call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.graphs: Counter[str] = Counter()
        self.face_calls = 0
        run = ModelSet.run

        def counted(models: ModelSet, graph: str, feeds, keep_on_device=()):
            self.graphs[graph] += 1
            return run(models, graph, feeds, keep_on_device)

        monkeypatch.setattr(ModelSet, "run", counted)
        for name in ("faces", "first_face", "track"):
            original = getattr(FaceAnalyzer, name)

            def face_call(analyzer, *args, _original=original, **kwargs):
                self.face_calls += 1
                return _original(analyzer, *args, **kwargs)

            monkeypatch.setattr(FaceAnalyzer, name, face_call)


def _slider_value(name: str) -> float:
    low, high = EDIT_RANGES[name]
    default = dataclasses.fields(EditParams)[[f.name for f in dataclasses.fields(EditParams)].index(name)].default
    return high if high != default else low


def test_ranges_are_the_official_sliders_and_validated() -> None:
    assert set(EDIT_RANGES) == {f.name for f in dataclasses.fields(EditParams)}
    assert EDIT_RANGES["yaw"] == (-25.0, 25.0) and EDIT_RANGES["pitch"] == (-15.0, 15.0)
    assert EDIT_RANGES["mov_z"] == (0.9, 1.2) and EDIT_RANGES["eyeball_direction_y"] == (-63.0, 63.0)
    assert EDIT_RANGES["lip_variation_three"] == (-90.0, 120.0) and EDIT_RANGES["wink"] == (0.0, 39.0)
    EditParams(**{name: high for name, (_, high) in EDIT_RANGES.items()})  # the ends are allowed
    for name, (low, high) in EDIT_RANGES.items():
        with pytest.raises(ValueError, match=rf"^{name} must be in \[{low}, {high}\]"):
            EditParams(**{name: high + 0.01})
        with pytest.raises(ValueError, match=rf"^{name} must be in"):
            EditParams(**{name: low - 0.01})
    with pytest.raises(ValueError, match="smile must be a number"):
        EditParams(smile=float("nan"))
    with pytest.raises(ValueError, match="yaw must be a number"):
        EditParams(yaw="10")  # type: ignore[arg-type]


def test_expression_sliders_touch_only_their_entries() -> None:
    exp = np.random.default_rng(0).normal(0, 0.01, (1, 21, 3)).astype(np.float32)
    np.testing.assert_array_equal(edited_expression(exp, EditParams()), exp)
    changed = np.abs(edited_expression(exp, EditParams(smile=1.0)) - exp) > 0
    assert sorted(map(tuple, np.argwhere(changed[0]))) == [(3, 1), (7, 1), (13, 1), (14, 1), (16, 1), (17, 1),
                                                           (17, 2), (20, 1)]
    out = edited_expression(exp, EditParams(mov_x=0.1, mov_y=-0.05, lip_variation_zero=0.05))
    assert out[0, 5, 0] == pytest.approx(exp[0, 5, 0] - 0.1) and out[0, 5, 1] == pytest.approx(exp[0, 5, 1] - 0.05)
    assert out[0, 19, 0] == pytest.approx(exp[0, 19, 0] + 0.05)
    # sign-dependent sliders: gaze right moves row 15 more than row 11, gaze left the other way round
    right = edited_expression(exp, EditParams(eyeball_direction_x=10)) - exp
    left = edited_expression(exp, EditParams(eyeball_direction_x=-10)) - exp
    assert right[0, 15, 0] == pytest.approx(0.01) and right[0, 11, 0] == pytest.approx(0.007)
    assert left[0, 11, 0] == pytest.approx(-0.01) and left[0, 15, 0] == pytest.approx(-0.007)
    up = edited_expression(exp, EditParams(eyebrow=10)) - exp
    down = edited_expression(exp, EditParams(eyebrow=-10)) - exp
    assert np.count_nonzero(up) == 2 and np.count_nonzero(down) == 4
    # vertical gaze with the lid term folded in: rows 11/15 move 0.0005 per unit, 13/16 0.00015 the other way
    gaze = edited_expression(exp, EditParams(eyeball_direction_y=10)) - exp
    assert gaze[0, 11, 1] == pytest.approx(-0.005) and gaze[0, 13, 1] == pytest.approx(-0.0015)
    assert set(EXPRESSION_EDITS) | {"eye_ratio", "lip_ratio", "pitch", "yaw", "roll", "mov_z"} == set(EDIT_RANGES)


def test_editor_measures_the_photo(editor: PortraitEditor) -> None:
    assert 0.0 <= editor.source_eye_ratio <= 2.0 and 0.0 <= editor.source_lip_ratio <= 2.0
    assert editor.source_eye_ratio == round(editor.source_eye_ratio, 2)
    assert editor.image.shape == load_image_rgb(SOURCE).shape


def _keypoint_image(stages: Stages, feature, kp_source: np.ndarray, kp_driving: np.ndarray) -> np.ndarray:
    """Stand-in warp whose image carries the driving keypoints' bytes: it changes whenever they do."""
    images = np.zeros((len(kp_driving), 512, 512, 3), np.uint8)
    raw = np.ascontiguousarray(kp_driving, np.float32).reshape(len(kp_driving), -1).view(np.uint8)
    images.reshape(len(kp_driving), -1)[:, :raw.shape[1]] = raw
    return images


def test_every_slider_moves_the_keypoints_and_the_rendered_image(editor: PortraitEditor,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Wiring for all 17 sliders (the real graph's pixels are checked on a few of them below)."""
    monkeypatch.setattr(Stages, "warp_decode", _keypoint_image)
    base_kp = editor.driving_keypoints(EditParams())
    base = editor.render(EditParams(), paste_back=False)
    for name in EDIT_RANGES:
        params = EditParams(**{name: _slider_value(name)})
        kp = editor.driving_keypoints(params)
        assert np.abs(kp - base_kp).max() > 1e-5, f"{name} did not move the keypoints"
        image = editor.render(params, paste_back=False)
        np.testing.assert_array_equal(_keypoint_image(None, None, None, kp), image[None])  # exactly these warped
        assert not np.array_equal(image, base), f"{name} did not change the image"
    # a target ratio equal to the photo's own is no edit (the official rule)
    same = EditParams(eye_ratio=editor.source_eye_ratio, lip_ratio=editor.source_lip_ratio)
    np.testing.assert_array_equal(editor.driving_keypoints(same), base_kp)


@pytest.fixture(scope="module")
def real(editor: PortraitEditor, engine: LivePortrait) -> SimpleNamespace:
    """The real-graph renders, each run once: defaults (timed and counted), the bare reconstruction, an eye edit,
    a smile edit and a yaw edit."""
    out = SimpleNamespace()
    with pytest.MonkeyPatch.context() as mp:
        counter = RunCounter(mp)
        start = time.perf_counter()
        out.default = editor.render(EditParams(), paste_back=False)
        out.render_s = time.perf_counter() - start
        out.default_graphs, out.default_face_calls = dict(counter.graphs), counter.face_calls
        start = time.perf_counter()
        out.plain = Stages(engine.models).warp_decode(editor.face.feature, editor.x_s, editor.x_s)[0]
        out.warp_s = time.perf_counter() - start
        counter.graphs.clear()
        out.eyes = editor.render(EditParams(eye_ratio=0.8 if editor.source_eye_ratio < 0.4 else 0.0),
                                 paste_back=False)
        out.eye_graphs, out.eye_face_calls = dict(counter.graphs), counter.face_calls
    out.smile = editor.render(EditParams(smile=1.3), paste_back=False)
    out.yaw = editor.render(EditParams(yaw=25.0), paste_back=False)
    print(f"\nedit render {out.render_s:.2f} s, bare warp_decode {out.warp_s:.2f} s, "
          f"ratio {out.render_s / out.warp_s:.3f}")
    return out


def test_render_runs_one_warp_and_no_face_or_encoder_graph(real: SimpleNamespace) -> None:
    assert real.default_face_calls == 0 and real.eye_face_calls == 0  # no detector / landmark model
    warps = sum(n for g, n in real.default_graphs.items() if g in WARP_GRAPHS)
    assert warps in (1, 2) and real.default_graphs.get("warping_spade", 1) == 1, real.default_graphs
    assert set(real.default_graphs) - WARP_GRAPHS == {"stitching"}, real.default_graphs
    assert real.default_graphs["stitching"] == 1
    assert set(real.eye_graphs) - WARP_GRAPHS == {"eye_retargeting", "stitching"}, real.eye_graphs
    assert real.eye_graphs["eye_retargeting"] == 1
    assert real.default.shape == (512, 512, 3) and real.default.dtype == np.uint8


def test_defaults_render_the_unedited_reconstruction(editor: PortraitEditor, real: SimpleNamespace) -> None:
    # The official panel composes s·(x_c·R + δ) + t with the whole t, so at the defaults the keypoints are the
    # source's shifted by its tz, then stitched: the reconstruction up to that (small) shift.
    shifted = editor.x_s.copy()
    shifted[..., 2] += editor.face.info.t[0, 2]
    expected = apply_stitching(editor.stages.stitching, editor.x_s, shifted)
    np.testing.assert_allclose(editor.driving_keypoints(EditParams()), expected, atol=1e-6)
    diff = np.abs(real.default.astype(np.int16) - real.plain).mean()
    edit = np.abs(real.yaw.astype(np.int16) - real.plain).mean()
    print(f"\nvs the bare reconstruction (x_d = x_s): defaults {diff:.2f} levels, yaw 25: {edit:.2f} levels")
    assert diff < 0.5 * edit, (diff, edit)


def test_real_edits_change_the_pixels(real: SimpleNamespace) -> None:
    for name in ("eyes", "smile", "yaw"):
        diff = np.abs(getattr(real, name).astype(np.int16) - real.default).mean()
        assert diff > 0.01, (name, diff)


def test_paste_back_returns_the_whole_photo(editor: PortraitEditor, real: SimpleNamespace,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Stages, "warp_decode", lambda stages, f, s, d: real.yaw[None])  # replay the real yaw crop
    photo = editor.image
    full = editor.render(EditParams(yaw=25.0))
    assert full.shape == photo.shape and full.dtype == np.uint8
    np.testing.assert_array_equal(full, paste_face(real.yaw, editor.face.crop.M_c2o, photo, editor._mask))
    assert np.abs(full.astype(np.int16) - photo).mean() > 0.01
    assert editor.render(EditParams(yaw=25.0), paste_back=False).shape == (512, 512, 3)


def test_cli_edit_writes_an_image(models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture) -> None:
    WarpSpy().install(monkeypatch)  # the real graph is exercised above; here the wiring and the file
    out = tmp_path / "edited.png"
    code = cli.main(["edit", "-s", str(SOURCE), "--yaw", "10", "--smile", "0.5", "--eye-ratio", "0.3",
                     "--no-paste-back", "-o", str(out), "--models", str(models_dir), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert load_image_rgb(out).shape == (512, 512, 3)
    assert f"wrote {out}" in capsys.readouterr().out
    code = cli.main(["edit", "-s", str(SOURCE), "--smile", "5", "-o", str(tmp_path / "bad.png"),
                     "--models", str(models_dir)])
    assert code == 2 and "smile must be in [-0.3, 1.3], got 5.0" in capsys.readouterr().err
    assert not (tmp_path / "bad.png").exists()


def test_cli_edit_help_lists_every_slider(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        cli.main(["edit", "--help"])
    text = capsys.readouterr().out
    for name, (low, high) in EDIT_RANGES.items():
        assert f"--{name.replace('_', '-')}" in text
        assert f"[{low:g}, {high:g}]" in text, name


def test_photo_that_is_already_a_crop(engine: LivePortrait, monkeypatch: pytest.MonkeyPatch) -> None:
    """--no-do-crop: the whole photo is the network input; the ratios come from landmarks found once up front."""
    editor = engine.portrait_editor(load_image_rgb(SOURCE), options=AnimationOptions(flag_do_crop=False))
    assert editor.face.crop is None and editor.lmk is not None
    assert 0.0 <= editor.source_eye_ratio <= 2.0 and 0.0 <= editor.source_lip_ratio <= 2.0
    counter = RunCounter(monkeypatch)
    spy = WarpSpy().install(monkeypatch)
    image = editor.render(EditParams(lip_ratio=0.5 if editor.source_lip_ratio < 0.3 else 0.0))
    assert image.shape == (512, 512, 3)  # nothing to paste into: the generated image itself
    assert len(spy.kp_driving) == 1 and counter.face_calls == 0
    assert counter.graphs == Counter({"lip_retargeting": 1, "stitching": 1}), counter.graphs
