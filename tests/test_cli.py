"""The command line: help lists every option with its default, `animate` is the default command, exit codes."""

from __future__ import annotations

import dataclasses
import pickle
import re
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

import cli
from runtime.options import AnimationOptions
from tests.test_pipeline import SOURCE, WarpSpy, driving_frames

ROOT = Path(__file__).resolve().parents[1]


def option_blocks(text: str) -> dict[str, str]:
    """Help text → {first long option name: its whole help block}."""
    blocks: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if re.match(r"^  -", line):
            options = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
            longs = re.findall(r"--[\w-]+", options)
            current = longs[0] if longs else None
            if current is not None:
                blocks[current] = line
        elif current is not None and line.startswith("      "):
            blocks[current] += " " + line.strip()
        else:
            current = None
    return blocks


def check_every_option_has_a_default(text: str) -> None:
    blocks = option_blocks(text)
    for field in dataclasses.fields(AnimationOptions):
        flag = field.name.removeprefix("flag_").replace("_", "-")
        names = [f"--{flag}", f"--no-{flag}", f"--{field.name.replace('_', '-')}"]
        block = next((blocks[n] for n in names if n in blocks), None)
        assert block is not None, f"{field.name} has no option in the help"
        default = field.default
        shown = ("on" if default else "off") if isinstance(default, bool) else str(default)
        assert f"(default: {shown})" in block, block
    for name in ("--output-dir", "--models", "--device", "--precision", "--batch-size", "--face-index"):
        assert "(default:" in blocks[name], blocks[name]
        assert blocks[name].count("(default:") == 1, f"default printed twice: {blocks[name]}"


def test_top_level_help_lists_commands_and_animate_options(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in ("animate", "export", "bench", "doctor"):
        assert command in text
    check_every_option_has_a_default(text)


def test_animate_help_lists_every_option_with_default(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["animate", "--help"])
    assert info.value.code == 0
    check_every_option_has_a_default(capsys.readouterr().out)


def test_animate_is_the_default_command(models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    driving = tmp_path / "pose.png"
    cv2.imwrite(str(driving), cv2.cvtColor(driving_frames()[0], cv2.COLOR_RGB2BGR))
    spy = WarpSpy().install(monkeypatch)
    out = tmp_path / "out"
    code = cli.main(["-s", str(SOURCE), "-d", str(driving), "-o", str(out), "--models", str(models_dir),
                     "--device", "cpu", "--quiet", "--no-concat", "--save-template", str(tmp_path / "t.npz")])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert sorted(p.name for p in out.iterdir()) == ["source_astronaut--pose.jpg"]
    # a driving image has no motion sequence to save: said, not silently dropped
    assert "warning: no template saved" in printed.err and not (tmp_path / "t.npz").exists()
    assert f"wrote {out / 'source_astronaut--pose.jpg'}" in printed.out
    assert len(spy.kp_driving) == 1


def test_options_reach_the_engine(models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """--no-relative-motion changes the keypoints handed to the warp; --face-index out of range fails (exit 1)."""
    driving = tmp_path / "pose.png"
    # black (large motion) and square, so it is taken as a face crop: a non-square one would be cropped to a face
    cv2.imwrite(str(driving), cv2.cvtColor(driving_frames()[1][:, :144], cv2.COLOR_RGB2BGR))
    spy = WarpSpy().install(monkeypatch)
    base = ["-s", str(SOURCE), "-d", str(driving), "--models", str(models_dir), "--device", "cpu", "--quiet",
            "--no-concat"]
    assert cli.main([*base, "-o", str(tmp_path / "a")]) == 0
    assert cli.main([*base, "-o", str(tmp_path / "b"), "--no-relative-motion"]) == 0
    assert abs(spy.kp_driving[0] - spy.kp_driving[1]).max() > 1e-3
    assert cli.main([*base, "-o", str(tmp_path / "c"), "--face-index", "3"]) == 1
    assert "--face-index 3 is out of range" in capsys.readouterr().err
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir())


def test_untrusted_pickle_template_is_refused(models_dir: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    template = tmp_path / "motion.pkl"
    template.write_bytes(pickle.dumps({"motion": []}))
    code = cli.main(["-s", str(SOURCE), "-d", str(template), "-o", str(tmp_path / "out"), "--models",
                     str(models_dir), "--device", "cpu", "--quiet"])
    assert code == 1 and "--trust-pickle" in capsys.readouterr().err


def test_subprocess_failure_exit_code_and_message(tmp_path: Path) -> None:
    """A real process: the error goes to stderr, the exit code is 1, no traceback."""
    proc = subprocess.run(
        [sys.executable, "cli.py", "-s", str(SOURCE), "-d", str(SOURCE), "--models", str(tmp_path / "none"),
         "--weights", str(tmp_path / "no-weights"), "--device", "cpu"],  # nothing to export from, wherever it runs
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: models folder") and "python cli.py export" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_usage_errors_exit_non_zero(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["-s", str(SOURCE)])  # no driving
    assert info.value.code == 2 and "--driving" in capsys.readouterr().err
    assert cli.main([]) == 2
