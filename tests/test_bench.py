"""The bench: JSON contents, torch/ours ratios, same inputs on both engines, option errors, no torch import."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from runtime import bench

ROOT = Path(__file__).resolve().parents[1]


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return bench.run(parser.parse_args(argv))


def _positive(value: object) -> bool:
    return isinstance(value, float) and value > 0 and np.isfinite(value)


def test_statistics_and_per_frame_time() -> None:
    assert bench.median([5.0, 1.0, 3.0]) == 3.0
    assert bench.p90([float(i) for i in range(1, 11)]) == pytest.approx(9.1)
    assert bench.p90([7.0]) == 7.0
    calls = []
    ms = bench.time_per_frame(lambda: (calls.append(1), time.sleep(0.04)), batch=4, repeats=2, warmup=1)
    assert len(calls) == 3 and len(ms) == 2
    assert all(10.0 <= m < 100.0 for m in ms)  # 40 ms per call over 4 frames


def test_no_torch_json_has_required_keys(models_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    # --device cpu: auto may pick the OpenVINO route on a bf16 CPU once a test has added the split pair
    argv = ["--models", str(models_dir), "--device", "cpu", "--stages", "motion,stitching", "--repeats", "2",
            "--warmup", "0", "--no-torch", "--batch-sizes", "1,2", "--json", str(out)]
    assert _run(argv) == 0
    printed = capsys.readouterr().out
    assert "motion" in printed and "stitching" in printed and "ms/frame" in printed
    report = json.loads(out.read_text())
    for key in ("device", "date", "versions", "providers", "threads", "stages", "speedup_vs_torch"):
        assert key in report, key
    assert set(report["versions"]) >= {"onnxruntime", "torch", "numpy", "opencv", "av", "python"}
    assert report["providers"]["motion_extractor"] == "CPUExecutionProvider"
    assert report["variants"]["motion_extractor"] == "motion_extractor"  # the manifest key that ran
    assert set(report["stages"]) == {"motion", "motion@b2", "stitching", "stitching@b2"}
    for entry in report["stages"].values():
        assert _positive(entry["ours_ms"]) and entry["ours_p90_ms"] >= entry["ours_ms"]
        assert "torch_ms" not in entry
    assert report["stages"]["motion@b2"]["batch"] == 2
    assert report["speedup_vs_torch"] == {}
    assert any("--no-torch" in n for n in report["notes"])


def test_torch_ratio_is_torch_over_ours(models_dir: Path, fixture_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = ["--models", str(models_dir), "--weights", str(fixture_weights), "--stages", "stitching",
            "--repeats", "3", "--warmup", "1", "--batch-sizes", "1,3", "--json", str(out)]
    assert _run(argv) == 0
    report = json.loads(out.read_text())
    assert report["versions"]["torch"]
    assert report["threads"]["torch"] >= 1
    for key in ("stitching", "stitching@b3"):
        entry = report["stages"][key]
        assert _positive(entry["ours_ms"]) and _positive(entry["torch_ms"])
        assert report["speedup_vs_torch"][key] == pytest.approx(entry["torch_ms"] / entry["ours_ms"], rel=1e-12)


def test_both_engines_get_the_same_inputs(models_dir: Path, fixture_weights: Path) -> None:
    """Timings compare like with like: the torch calls reproduce our graphs' outputs on the bench inputs."""
    import torch

    from export.torch_reference import TorchReference
    from runtime.sessions import ModelSet
    from runtime.stages import Stages

    stages = Stages(ModelSet(models_dir, device="cpu", check_hash=False))
    x = bench.make_net_inputs(stages, batch=2)
    assert x.images.shape == (2, 256, 256, 3) and x.kp_driving.shape == (2, 21, 3)
    assert x.stitch_feat.shape == (2, 126) and x.eye_feat.shape == (2, 66) and x.lip_feat.shape == (2, 65)
    ref = TorchReference(fixture_weights, "cpu")
    torch_motion = ref.calls(x)["motion"]()
    ours = stages.motion(x.images)
    np.testing.assert_allclose(torch_motion[6], ours.kp, atol=1e-4)  # canonical keypoints
    np.testing.assert_allclose(torch_motion[1], ours.yaw, atol=1e-2)  # degrees
    with torch.inference_mode():
        delta = ref.modules["stitching"](torch.from_numpy(x.stitch_feat)).numpy()
    np.testing.assert_allclose(delta, stages.stitching(x.stitch_feat), atol=1e-5)


def test_face_and_media_stages(models_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = ["--models", str(models_dir), "--stages", "detection,landmarks,paste_back,decode,encode",
            "--repeats", "1", "--warmup", "0", "--frames", "3", "--json", str(out)]
    assert _run(argv) == 0
    stages = json.loads(out.read_text())["stages"]
    assert set(stages) == {"detection", "landmarks", "paste_back", "decode", "encode"}
    assert all(_positive(s["ours_ms"]) for s in stages.values())
    assert "3 frames" in stages["decode"]["note"]


def test_missing_weights_skip_torch_with_a_note(models_dir: Path, tmp_path: Path, capsys) -> None:
    argv = ["--models", str(models_dir), "--weights", str(tmp_path / "nowhere"), "--stages", "stitching",
            "--repeats", "1", "--warmup", "0"]
    assert _run(argv) == 0
    assert f"no official weights under {tmp_path / 'nowhere'}" in capsys.readouterr().out


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--stages", "motion,warping", "unknown stage warping"),
    ("--batch-sizes", "1,zero", "--batch-sizes must be"),
])
def test_bad_options_name_the_problem(models_dir: Path, option: str, value: str, message: str, capsys) -> None:
    assert _run(["--models", str(models_dir), option, value]) == 2
    assert message in capsys.readouterr().err


def test_cuda_graph_needs_one_batch_size_and_the_cuda_device(models_dir: Path, capsys) -> None:
    assert _run(["--models", str(models_dir), "--cuda-graph", "--batch-sizes", "1,8"]) == 2
    assert "single --batch-sizes" in capsys.readouterr().err
    assert _run(["--models", str(models_dir), "--cuda-graph", "--device", "cpu", "--stages", "motion",
                 "--no-torch"]) == 1
    assert "CUDA graphs need the CUDA device" in capsys.readouterr().err


def test_missing_models_folder_is_an_error(tmp_path: Path, capsys) -> None:
    assert _run(["--models", str(tmp_path / "none"), "--stages", "motion", "--no-torch"]) == 1
    assert "python cli.py export" in capsys.readouterr().err


def test_runtime_bench_never_imports_torch_without_comparison(models_dir: Path, tmp_path: Path) -> None:
    code = (
        "import sys, cli\n"
        f"rc = cli.main(['bench', '--models', {str(models_dir)!r}, '--stages', 'stitching', '--repeats', '1', "
        "'--warmup', '0', '--no-torch'])\n"
        "assert rc == 0, rc\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "stitching" in proc.stdout


def test_tune_configs_change_one_factor_at_a_time() -> None:
    configs = bench.tune_configs(cores=4)
    base = bench.SessionConfig()
    assert configs[0] == base and len(set(configs)) == len(configs)
    for c in configs[1:]:
        changed = [f for f in ("threads", "parallel", "opt_level", "spinning", "flush_denormals", "mem_pattern")
                   if getattr(c, f) != getattr(base, f)]
        assert len(changed) == 1, c
    assert {c.threads for c in configs} == {0, 1, 2, 4}
    assert "no-spin" in bench.SessionConfig(spinning=False).label()
    assert "no-ftz" in bench.SessionConfig(flush_denormals=False).label()


def test_tune_baseline_is_the_runtime_cpu_session(tmp_path: Path) -> None:
    """The sweep's first point has the runtime's CPU session settings, so its other rows read as changes to them."""
    from runtime.providers import resolve_device
    from runtime.sessions import GraphRunner
    from tests.test_providers import _relu_model

    runtime = GraphRunner("relu", _relu_model(tmp_path, 2), resolve_device("cpu")).session.get_session_options()
    tuned = bench.SessionConfig().options()
    keys = ("session.set_denormal_as_zero", "session.use_env_allocators")
    assert (tuned.enable_mem_pattern, [tuned.get_session_config_entry(k) for k in keys],
            tuned.graph_optimization_level) == (
        runtime.enable_mem_pattern, [runtime.get_session_config_entry(k) for k in keys],
        runtime.graph_optimization_level)


def test_tune_cpu_times_every_config_and_batch(models_dir: Path) -> None:
    configs = [bench.SessionConfig(), bench.SessionConfig(threads=1, spinning=False)]
    rows = bench.tune_cpu(models_dir, ["motion_extractor"], [1, 2], repeats=1, warmup=0, configs=configs)
    assert {(r["config"], r["batch"]) for r in rows} == {(c.label(), b) for c in configs for b in (1, 2)}
    assert all(r["ms_per_frame"] > 0 and r["cpu_ms_per_frame"] > 0 and r["min"] <= r["p90"] for r in rows)
