"""First run of `cli.py animate`: no models_onnx/ yet. Export from pretrained_weights/ or say exactly what to do.

A real export takes minutes here, so the auto-export test swaps the exporter for one that copies the session's
already-exported fixture models (the real exporter is tested in test_export.py); the decision logic, messages,
and the animation that follows run for real.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import pytest

import cli
from runtime.manifest import MANIFEST_NAME, ModelsError
from tests.test_pipeline import SOURCE, WarpSpy, driving_frames


def test_weight_list_matches_the_exporter() -> None:
    from export.export_all import FACE_FILES
    from export.networks import NETWORKS

    expected = {f"liveportrait/{n.checkpoint}" for n in NETWORKS.values()} | set(FACE_FILES.values())
    expected.add("liveportrait/landmark.onnx")
    assert set(cli.WEIGHT_FILES) == expected


def test_missing_weights_name_the_files_and_the_commands(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    weights = tmp_path / "weights"
    (weights / "liveportrait" / "base_models").mkdir(parents=True)
    (weights / "liveportrait" / "base_models" / "motion_extractor.pth").write_bytes(b"x")
    models = tmp_path / "models_onnx"
    with pytest.raises(ModelsError) as info:
        cli.ensure_models(models, weights, auto_export=True)
    text = str(info.value)
    assert text.startswith(f"models folder {models} has no {MANIFEST_NAME}")
    assert "lacks 7 checkpoint file(s)" in text and "liveportrait/base_models/warping_module.pth" in text
    assert "motion_extractor.pth" not in text  # present, so not listed
    assert f"python -m export.fixtures --out {weights}" in text
    assert f"python cli.py export --weights {weights} --out {models}" in text
    # through the command line: exit 1, the same message, nothing exported
    code = cli.main(["-s", str(SOURCE), "-d", str(SOURCE), "--models", str(models), "--weights", str(weights)])
    err = capsys.readouterr().err
    assert code == 1 and "python cli.py export --weights" in err and "lacks 7 checkpoint" in err
    assert not models.exists()


def test_no_torch_or_no_auto_export_say_how(fixture_weights: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "m"
    with pytest.raises(ModelsError, match=r"--no-auto-export\)\. Run: python cli.py export"):
        cli.ensure_models(models, fixture_weights, auto_export=False)
    monkeypatch.setattr(cli, "_exporter", lambda: None)
    with pytest.raises(ModelsError, match=r"exporting needs PyTorch \(pip install torch\)"):
        cli.ensure_models(models, fixture_weights, auto_export=True)
    assert not models.exists()


def test_existing_manifest_is_left_alone(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "_exporter", lambda: pytest.fail("must not export"))
    cli.ensure_models(models_dir, Path("/nonexistent"), auto_export=True)


def test_first_animate_exports_then_animates(fixture_weights: Path, models_dir: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    calls = []

    def fake_export(weights: Path, out: Path, log=print, **_) -> list:
        calls.append((weights, out))
        log("[1/6] appearance_feature_extractor.onnx: trace, simplify, check ...")
        shutil.copytree(models_dir, out, dirs_exist_ok=True)
        return []

    monkeypatch.setattr(cli, "_exporter", lambda: fake_export)
    WarpSpy().install(monkeypatch)
    still = tmp_path / "still.png"
    cv2.imwrite(str(still), cv2.cvtColor(driving_frames()[0], cv2.COLOR_RGB2BGR))
    models = tmp_path / "models_onnx"
    out = tmp_path / "out"
    code = cli.main(["-s", str(SOURCE), "-d", str(still), "--models", str(models), "--weights",
                     str(fixture_weights), "-o", str(out), "--device", "cpu", "--no-concat", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert calls == [(fixture_weights, models)]
    assert f"has no {MANIFEST_NAME} (nothing exported yet): exporting the ONNX graphs from {fixture_weights}" \
        in captured.err
    assert "[1/6] appearance" in captured.err
    assert (out / "source_astronaut--still.jpg").is_file()
    # a second run finds the manifest and does not export again
    code = cli.main(["-s", str(SOURCE), "-d", str(still), "--models", str(models), "--weights",
                     str(fixture_weights), "-o", str(out), "--device", "cpu", "--no-concat", "--quiet"])
    assert code == 0 and len(calls) == 1


def test_first_run_export_runs_in_a_child_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The exporter's PyTorch state (GBs) must not stay in the animating process: `cli.py export` runs as a child
    with this interpreter, and a failed child is a ModelsError (exit status and where its message went)."""
    import subprocess
    import sys
    from types import SimpleNamespace

    seen = []

    def fake_run(command, stdout=None, check=False):
        seen.append(command)
        return SimpleNamespace(returncode=0 if len(seen) == 1 else 1)  # the first call succeeds, the second fails

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert cli._exporter() is cli.export_in_child
    cli.export_in_child(tmp_path / "w", tmp_path / "m", family="liveportrait_animals")
    assert seen[0] == [sys.executable, str(Path(cli.__file__).resolve()), "export", "--family", "liveportrait_animals",
                       "--weights", str(tmp_path / "w"), "--out", str(tmp_path / "m")]
    with pytest.raises(ModelsError, match=r"exited with status 1 \(its message is above\)"):
        cli.export_in_child(tmp_path / "w", tmp_path / "m")
