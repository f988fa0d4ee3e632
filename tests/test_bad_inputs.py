"""Inputs that cannot work: each fails before any expensive work with an error that says what is wrong, and the
CLI turns it into `error: ...` on stderr and exit code 1 (never a traceback, never exit 0)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import cli
from runtime.api import AnimationError, LivePortrait
from runtime.manifest import ModelsError, read_manifest
from runtime.media import MediaError
from tests.test_pipeline import CARPHONE, SOURCE, models_copy, replace_model_file

EXPORT_COMMAND = "python cli.py export"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One broken input of each kind."""
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.mp4").write_bytes(b"")
    (d / "truncated.mp4").write_bytes(CARPHONE.read_bytes()[:200_000])
    (d / "notes.mp4").write_text("these are notes, not a video\n" * 20)
    (d / "truncated.png").write_bytes(SOURCE.read_bytes()[:50_000])
    (d / "folder.mp4").mkdir()
    cv2.imwrite(str(d / "black.png"), np.zeros((256, 256, 3), np.uint8))
    cv2.imwrite(str(d / "pose.png"), cv2.imread(str(SOURCE)))
    (d / "a_file").write_text("a regular file, so nothing can be created below it\n")
    return {p.name: p for p in d.iterdir()} | {"dir": d, "missing.mp4": d / "missing.mp4"}


def run_cli(args: list[str], models: Path, capsys: pytest.CaptureFixture, out: Path | None = None) -> tuple[int, str]:
    """cli.main in-process; returns (exit code, stderr)."""
    argv = [*args, "--models", str(models), "--device", "cpu", "--quiet"]
    if out is not None:
        argv += ["-o", str(out)]
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


# ------------------------------------------------------------------------------------------------- models
def test_missing_models_dir_names_the_export_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    absent = tmp_path / "models_onnx"
    with pytest.raises(ModelsError, match="does not exist") as info:
        LivePortrait(absent, device="cpu")
    assert EXPORT_COMMAND in str(info.value)
    code, err = run_cli(["-s", str(SOURCE), "-d", str(CARPHONE)], absent, capsys, tmp_path / "out")
    assert code == 1 and err.startswith("error:") and EXPORT_COMMAND in err
    assert not (tmp_path / "out").exists()


def test_missing_graph_file(models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = models_copy(models_dir, tmp_path / "models")
    (folder / "stitching.onnx").unlink()
    with pytest.raises(ModelsError, match=r"stitching\.onnx: missing"):
        LivePortrait(folder, device="cpu")
    code, err = run_cli(["-s", str(SOURCE), "-d", str(CARPHONE)], folder, capsys, tmp_path / "out")
    assert code == 1 and "stitching.onnx: missing" in err and EXPORT_COMMAND in err


def test_corrupt_graph_fails_the_hash_check(models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = models_copy(models_dir, tmp_path / "models")
    data = bytearray((models_dir / "stitching.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte changed
    replace_model_file(folder, "stitching", bytes(data), update_manifest=False)
    with pytest.raises(ModelsError, match=r"stitching\.onnx: sha256 differs"):
        LivePortrait(folder, device="cpu")
    code, err = run_cli(["-s", str(SOURCE), "-d", str(CARPHONE)], folder, capsys, tmp_path / "out")
    assert code == 1 and "sha256 differs" in err


def test_manifest_not_matching_the_files(models_dir: Path, tmp_path: Path) -> None:
    folder = models_copy(models_dir, tmp_path / "models")
    data = (models_dir / "lip_retargeting.onnx").read_bytes()
    replace_model_file(folder, "lip_retargeting", data + b"\0" * 16, update_manifest=False)
    with pytest.raises(ModelsError, match=r"lip_retargeting\.onnx: \d+ bytes on disk, manifest says \d+"):
        LivePortrait(folder, device="cpu")
    # an entry the pipeline needs is not listed at all
    manifest = read_manifest(folder)
    del manifest.models["eye_retargeting"]
    manifest.write(folder)
    with pytest.raises(ModelsError, match="lists no eye_retargeting") as info:
        LivePortrait(folder, device="cpu")
    assert EXPORT_COMMAND in str(info.value)


# -------------------------------------------------------------------------------------------------- media
def test_source_without_face(engine: LivePortrait, files: dict[str, Path], models_dir: Path,
                             capsys: pytest.CaptureFixture) -> None:
    out = files["dir"] / "out_noface"
    with pytest.raises(AnimationError, match="no face found in the source image"):
        engine.animate(files["black.png"], files["pose.png"], output_dir=out, progress=False)
    code, err = run_cli(["-s", str(files["black.png"]), "-d", str(files["pose.png"])], models_dir, capsys, out)
    assert code == 1 and "no face found in the source image" in err
    assert not list(out.glob("*.jpg"))


BAD_FILES = {
    "missing.mp4": "file not found",
    "empty.mp4": "file is empty",
    "truncated.mp4": "truncated or corrupt",
    "notes.mp4": "not an image or video",
    "folder.mp4": "not a regular file",
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_driving_file(name: str, engine: LivePortrait, files: dict[str, Path], models_dir: Path,
                          capsys: pytest.CaptureFixture) -> None:
    out = files["dir"] / f"out_{name}"
    with pytest.raises(MediaError, match=BAD_FILES[name]) as info:
        engine.animate(SOURCE, files[name], output_dir=out, progress=False)
    assert info.value.path == files[name]
    code, err = run_cli(["-s", str(SOURCE), "-d", str(files[name])], models_dir, capsys, out)
    assert code == 1 and name in err and BAD_FILES[name] in err
    assert not out.exists()  # inputs are checked before the output folder is created


@pytest.mark.parametrize("name", ["missing.mp4", "empty.mp4", "truncated.png", "notes.mp4", "folder.mp4"])
def test_bad_source_file(name: str, engine: LivePortrait, files: dict[str, Path]) -> None:
    with pytest.raises(MediaError, match=r"not found|empty|could not be decoded|not an image|not a regular") as info:
        engine.animate(files[name], CARPHONE, output_dir=files["dir"] / "out_src", progress=False)
    assert info.value.path == files[name]


def test_output_folder_not_writable(engine: LivePortrait, files: dict[str, Path], models_dir: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    """An output folder below a regular file cannot be created (even by root, unlike a chmod'ed folder)."""
    out = files["a_file"] / "sub"
    with pytest.raises(MediaError, match="cannot be created|not a directory"):
        engine.animate(SOURCE, files["pose.png"], output_dir=out, progress=False)
    code, err = run_cli(["-s", str(SOURCE), "-d", str(files["pose.png"])], models_dir, capsys, out)
    assert code == 1 and "a_file" in err
