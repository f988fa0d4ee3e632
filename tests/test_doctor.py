"""`cli.py doctor`: package conflicts, manifest checks, smoke runs with node placement, on a tiny models folder."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from runtime import doctor
from runtime.manifest import Manifest, ModelEntry, TensorSpec, sha256_file

# (key, graph, input width, output width): three of the contract's small MLP graphs.
SMALL_GRAPHS = [("stitching", 126, 65), ("eye_retargeting", 66, 63), ("lip_retargeting", 65, 63)]


def _mlp_graph(name: str, n_in: int, n_out: int, input_type: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """feat (N×n_in) → MatMul → Add → Relu → delta (N×n_out): three nodes, dynamic N like the real graphs."""
    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [n_in, n_out], rng.standard_normal(n_in * n_out).tolist())
    b = helper.make_tensor("b", TensorProto.FLOAT, [n_out], np.zeros(n_out).tolist())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["feat", "w"], ["h"], name="fc"),
         helper.make_node("Add", ["h", "b"], ["hb"], name="bias"),
         helper.make_node("Relu", ["hb"], ["delta"], name="act")],
        name, [helper.make_tensor_value_info("feat", input_type, ["N", n_in])],
        [helper.make_tensor_value_info("delta", TensorProto.FLOAT, ["N", n_out])], [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def _entry(folder: Path, key: str, model: onnx.ModelProto, n_in: int, n_out: int,
           grid: str | None = None) -> ModelEntry:
    path = folder / f"{key}.onnx"
    onnx.save(model, path)
    return ModelEntry(key=key, file=path.name, graph=key.split(".")[0], sha256=sha256_file(path),
                      bytes=path.stat().st_size, opset=17, precision="fp32", grid_sample=grid,
                      inputs=[TensorSpec("feat", ("N", n_in), "float32")],
                      outputs=[TensorSpec("delta", ("N", n_out), "float32")])


@pytest.fixture()
def models_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models_onnx"
    folder.mkdir()
    entries = {k: _entry(folder, k, _mlp_graph(k, a, b), a, b) for k, a, b in SMALL_GRAPHS}
    Manifest(models=entries, exporter={"package": "test"}).write(folder)
    return folder


def _run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict, str]:
    rc = doctor.main([*argv, "--json"])
    out = capsys.readouterr()
    return rc, json.loads(out.out), out.err


def test_json_reports_cpu_placement_and_timing(models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, report, _ = _run_json(capsys, "--models", str(models_dir), "--device", "cpu")
    assert report["onnxruntime"]["version"] and "CPUExecutionProvider" in report["onnxruntime"]["providers"]
    assert report["python"]["version"].count(".") == 2
    graphs = report["providers"]["CPUExecutionProvider"]["graphs"]
    assert sorted(graphs) == sorted(k for k, _, _ in SMALL_GRAPHS)
    for key, g in graphs.items():
        assert g["share"] == 1.0, key
        assert g["placed"] == g["nodes"] >= 1  # ORT may fuse MatMul+Add, never below one node
        assert g["by_provider"] == {"CPUExecutionProvider": g["nodes"]}
        assert 0 < g["ms"] < 1000 and g["runs"] >= 1
    assert all(e["ok"] for e in report["models"]["entries"].values())
    # the fake folder lacks the big graphs: reported as an error with the export command, hence exit status 1
    missing = [p for p in report["problems"] if "lists no" in p["what"]]
    assert missing and "appearance_feature_extractor" in missing[0]["what"]
    assert "cli.py export" in missing[0]["fix"] and rc == 1


def test_file_that_differs_from_manifest_is_a_problem(models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    onnx.save(_mlp_graph("stitching", 126, 65, input_type=TensorProto.FLOAT16), models_dir / "stitching.onnx")
    rc, report, _ = _run_json(capsys, "--models", str(models_dir), "--device", "cpu")
    entry = report["models"]["entries"]["stitching"]
    assert entry["ok"] is False and "stitching.onnx" in entry["problem"]
    problem = next(p for p in report["problems"] if "stitching.onnx" in p["what"])
    assert problem["level"] == "error" and "does not match manifest.json" in problem["what"]
    assert "cli.py export" in problem["fix"]
    assert "stitching" not in report["providers"]["CPUExecutionProvider"]["graphs"]  # never loads a bad file
    assert rc == 1


def test_unlisted_file_and_missing_manifest(models_dir: Path, tmp_path: Path) -> None:
    (models_dir / "stray.onnx").write_bytes(b"x")
    report = doctor.collect(models_dir, smoke=False)
    assert report["models"]["unlisted_files"] == ["stray.onnx"]
    assert any("stray.onnx" in p["what"] and p["level"] == "warning" for p in report["problems"])

    empty = doctor.collect(tmp_path / "nowhere", smoke=False)
    assert empty["models"]["manifest"] is False and empty["providers"] == {}
    assert any("does not exist" in p["what"] and "cli.py export" in p["fix"] for p in empty["problems"])


def test_conflicting_onnxruntime_packages_are_loud(models_dir: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    versions = {"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.31.1"}
    monkeypatch.setattr(doctor, "_installed_version", versions.get)
    rc, report, err = _run_json(capsys, "--models", str(models_dir), "--no-smoke")
    assert report["onnxruntime"]["packages"] == versions
    conflict = next(p for p in report["problems"] if p["what"].startswith("CONFLICTING"))
    assert conflict["level"] == "error"
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in conflict["fix"]
    assert "CONFLICTING ONNXRUNTIME PACKAGES" in err and "!!!!" in err  # the banner goes to stderr
    assert rc == 1
    # onnxruntime-gpu without its CUDA provider means another build's files won the shared directory
    assert any("CUDAExecutionProvider is not offered" in p["what"] for p in report["problems"])


def test_single_package_has_no_conflict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "_installed_version", {"onnxruntime": "1.31.1"}.get)
    assert doctor.ort_packages() == {"onnxruntime": "1.31.1"}
    assert doctor.package_problems(doctor.ort_packages(), ["CPUExecutionProvider"]) == []


def test_graph_failure_is_reported_not_raised(models_dir: Path) -> None:
    manifest = json.loads((models_dir / "manifest.json").read_text())
    manifest["models"]["eye_retargeting"]["inputs"][0]["dtype"] = "int64"  # smoke feeds int64 to a float input
    (models_dir / "manifest.json").write_text(json.dumps(manifest))
    report = doctor.collect(models_dir, smoke=True, devices=["cpu"])
    graphs = report["providers"]["CPUExecutionProvider"]["graphs"]
    assert "error" in graphs["eye_retargeting"] and graphs["stitching"]["share"] == 1.0
    assert any(p["what"].startswith("eye_retargeting failed on CPUExecutionProvider") for p in report["problems"])


def test_mac_without_gs4d_graph_is_told_the_export_flag(tmp_path: Path) -> None:
    entry = _entry(tmp_path, "warping_spade", _mlp_graph("warping_spade", 4, 4), 4, 4, grid="5d")
    Manifest(models={"warping_spade": entry}).write(tmp_path)
    info, problems, _ = doctor.check_models(tmp_path, ["cpu", "coreml"])
    assert info["variants"]["cpu"]["warping_spade"] == "warping_spade"
    assert info["variants"]["coreml"]["warping_spade"] is None
    coreml = next(p for p in problems if "'coreml'" in p["what"])
    assert "warping_spade.gs4d" in coreml["what"] and coreml["fix"].endswith("--grid-sample 4d")


def test_cpu_without_the_winograd_graph_is_told_to_export_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor.prov, "resolve_device", lambda _: SimpleNamespace(device="cpu"))
    entries = {"warping_spade": _entry(tmp_path, "warping_spade", _mlp_graph("warping_spade", 4, 4), 4, 4, grid="5d")}
    Manifest(models=entries).write(tmp_path)
    _, problems, _ = doctor.check_models(tmp_path, ["cpu"])
    hint = next(p for p in problems if "warping_spade.wino" in p["what"])
    assert hint["level"] == "warning" and "cli.py export" in hint["fix"]
    entries["warping_spade.wino"] = _entry(tmp_path, "warping_spade.wino", _mlp_graph("w", 4, 4), 4, 4, grid="5d")
    Manifest(models=entries).write(tmp_path)
    info, problems, _ = doctor.check_models(tmp_path, ["cpu"])
    assert info["variants"]["cpu"]["warping_spade"] == "warping_spade.wino"
    assert not [p for p in problems if "warping_spade.wino" in p["what"]]


def test_smoke_inputs_use_manifest_shapes() -> None:
    det = ModelEntry("det_10g", "det_10g.onnx", "det_10g", "", 0, 11, "fp32", None,
                     [TensorSpec("input.1", (1, 3, "?", "?"), "float32")], [])
    warp = ModelEntry("warping_spade.fp16", "w.onnx", "warping_spade", "", 0, 20, "fp16", "5d",
                      [TensorSpec("feature_3d", ("N", 32, 16, 64, 64), "float16"),
                       TensorSpec("kp_driving", ("N", 21, 3), "float16")], [])
    assert doctor.smoke_inputs(det)["input.1"].shape == (1, 3, 640, 640)
    feeds = doctor.smoke_inputs(warp)
    assert feeds["feature_3d"].shape == (1, 32, 16, 64, 64) and feeds["feature_3d"].dtype == np.float16
    assert feeds["kp_driving"].shape == (1, 21, 3)


def test_node_placement_counts_fused_partitions_once(tmp_path: Path) -> None:
    def node(name: str, provider: str) -> dict:
        return {"cat": "Node", "name": name, "args": {"provider": provider, "op_name": "X"}}

    events = [
        {"cat": "Session", "name": "model_run", "args": {}},
        node("conv1_kernel_time", "CoreMLExecutionProvider"),
        node("CoreMLExecutionProvider_CoreML_0_0_kernel_time", "CoreMLExecutionProvider"),
        node("grid_kernel_time", "CPUExecutionProvider"),
        node("grid_kernel_time", "CPUExecutionProvider"),  # a second run of the same node
        node("grid_fence_before", "CPUExecutionProvider"),
    ]
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(events))
    assert doctor.node_placement(str(path)) == {"CoreMLExecutionProvider": 2, "CPUExecutionProvider": 1}


def test_human_report_names_share_and_fix(models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = doctor.main(["--models", str(models_dir), "--device", "cpu"])
    text = capsys.readouterr().out
    assert "CPUExecutionProvider (100%)" in text and "stitching" in text
    assert "[ERROR]" in text and "fix: export them" in text and rc == 1


def test_openvino_runtime_smoke_reports_device_and_precision(models_dir: Path) -> None:
    pytest.importorskip("openvino")
    report = doctor.collect(models_dir, smoke=True, devices=["openvino"])
    graphs = report["providers"][doctor.OPENVINO_KEY]["graphs"]
    assert sorted(graphs) == sorted(k for k, _, _ in SMALL_GRAPHS)
    for g in graphs.values():
        assert g["ms"] > 0 and g["placement"][0].startswith("OpenVINO:") and g["precision"] in ("f32", "bf16", "f16")


def test_coreml_static_check_summary_flags_5d_gridsample(tmp_path: Path) -> None:
    pytest.importorskip("runtime.coreml_check")
    graph = helper.make_graph(
        [helper.make_node("GridSample", ["x", "grid"], ["y"], mode="linear"), helper.make_node("Relu", ["y"], ["z"])],
        "gs5", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 8, 8]),
                helper.make_tensor_value_info("grid", TensorProto.FLOAT, [1, 4, 8, 8, 3])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 2, 4, 8, 8])])
    path = tmp_path / "gs5.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10), path)
    summary = doctor._coreml_static(path, {"RequireStaticInputShapes": "0"})
    assert summary["unsupported_by_op"].get("GridSample") == 1
    assert summary["coverage"] < 1.0 and summary["total_nodes"] == 2


def test_doctor_names_the_openvino_split_pair(models_with_variants: Path) -> None:
    """With warping.gs4d + spade_decoder exported, `--device openvino` loads those two, and doctor says so."""
    pytest.importorskip("openvino")
    report = doctor.collect(models_with_variants, smoke=False, devices=["openvino"])
    assert report["models"]["split"]["openvino"] == ["warping.gs4d", "spade_decoder"]
    assert "warping_spade→warping.gs4d + spade_decoder" in doctor.format_report(report)


@pytest.mark.parametrize(("flags", "split", "device", "says"), [
    ({"avx2", "avx512f", "avx512_bf16"}, True, "openvino", "runs openvino (bf16 decoder): this CPU has avx512_bf16"),
    ({"avx2", "fma"}, True, "cpu", "runs cpu (onnxruntime fp32): no bf16 dot-product instructions"),
    ({"avx2", "avx512f", "avx512_bf16"}, False, "cpu", "runs cpu (onnxruntime fp32): this CPU has avx512_bf16 and "
     "OpenVINO, but the models folder lacks warping.gs4d.onnx + spade_decoder.onnx"),
], ids=["bf16-cpu", "avx2-cpu", "bf16-without-split-pair"])
def test_doctor_names_the_auto_route_and_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str], flags: set[str], split: bool,
                                             device: str, says: str) -> None:
    from runtime import cpu_route

    folder = tmp_path / "models_onnx"
    folder.mkdir()
    graphs = SMALL_GRAPHS + ([("warping.gs4d", 8, 8), ("spade_decoder", 8, 3)] if split else [])
    Manifest(models={k: _entry(folder, k, _mlp_graph(k, a, b), a, b) for k, a, b in graphs}).write(folder)
    monkeypatch.setattr(doctor.prov.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(doctor, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(cpu_route, "openvino_has_bf16", lambda: True)
    monkeypatch.setattr(cpu_route.platform, "machine", lambda: "x86_64")
    _, report, _ = _run_json(capsys, "--models", str(folder), "--no-smoke")
    assert report["route"]["device"] == device
    assert report["route"]["bf16_flags"] == (["avx512_bf16"] if "avx512_bf16" in flags else [])
    doctor.main(["--models", str(folder), "--no-smoke"])
    text = capsys.readouterr().out
    assert f"route        --device auto {says}" in text
    warned = [p for p in report["problems"] if p["what"].startswith("--device auto runs onnxruntime fp32")]
    assert len(warned) == (0 if split or device == "openvino" or "avx512_bf16" not in flags else 1)
    if warned:
        assert "python cli.py export" in warned[0]["fix"] and "--split" in warned[0]["fix"]
