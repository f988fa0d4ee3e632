"""Device resolution from platforms/*/providers.json, and which graph variant each device loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from runtime import providers as prov
from runtime.manifest import Manifest, ModelEntry, ModelsError
from runtime.sessions import pick_variant, variant_candidates

PLATFORMS = Path(__file__).resolve().parent.parent / "platforms"
# Provider option names documented for onnxruntime 1.31 (CUDA / TensorRT / CoreML / DirectML / OpenVINO EP pages).
KNOWN_OPTIONS = {
    "CUDAExecutionProvider": {"device_id", "cudnn_conv_algo_search", "cudnn_conv_use_max_workspace",
                              "do_copy_in_default_stream", "prefer_nhwc", "enable_cuda_graph", "gpu_mem_limit",
                              "arena_extend_strategy", "use_tf32"},
    "TensorrtExecutionProvider": {"device_id", "trt_fp16_enable", "trt_engine_cache_enable", "trt_engine_cache_path",
                                  "trt_timing_cache_enable", "trt_timing_cache_path",
                                  "trt_builder_optimization_level", "trt_max_workspace_size"},
    "CoreMLExecutionProvider": {"ModelFormat", "MLComputeUnits", "RequireStaticInputShapes", "EnableOnSubgraphs",
                                "ModelCacheDirectory", "SpecializationStrategy", "ProfileComputePlan",
                                "AllowLowPrecisionAccumulationOnGPU"},
    "DmlExecutionProvider": {"device_id", "performance_preference", "device_filter"},
    "OpenVINOExecutionProvider": {"device_type", "precision", "num_of_threads", "cache_dir"},
    "CPUExecutionProvider": set(),
}


def _only(monkeypatch: pytest.MonkeyPatch, providers: list[str], openvino: bool = False) -> None:
    """Pretend this onnxruntime build offers exactly `providers`."""
    monkeypatch.setattr(prov.ort, "get_available_providers", lambda: list(providers))
    monkeypatch.setattr(prov, "_has_openvino_runtime", lambda: openvino)


def _manifest(*keys: str) -> Manifest:
    def entry(key: str) -> ModelEntry:
        return ModelEntry(key, f"{key}.onnx", key.split(".")[0], "", 0, 20,
                          "fp16" if key.endswith(".fp16") else "fp32", "4d" if ".gs4d" in key else "5d", [], [])

    return Manifest(models={k: entry(k) for k in keys})


def test_every_platform_file_is_valid_and_uses_known_option_names() -> None:
    files = sorted(PLATFORMS.glob("*/providers.json"))
    assert {f.parent.name for f in files} == {"macos-arm64", "linux-cuda", "linux-cpu", "windows", "intel-openvino"}
    for path in files:
        devices = json.loads(path.read_text())["devices"]
        assert (path.parent / "README.md").is_file(), path.parent
        for device, settings in devices.items():
            provider = prov.PROVIDER_OF[device]
            options = settings.get("provider_options", {})
            unknown = set(options) - KNOWN_OPTIONS[provider]
            assert not unknown, f"{path}: {device} has unknown {provider} options {unknown}"
            assert all(isinstance(v, str) for v in options.values()), f"{path}: option values must be strings"
            for graph, keys in settings.get("graph_variant", {}).items():
                assert keys and all(k.startswith(graph) for k in keys), (path, graph)


def test_cpu_settings_are_accepted_by_a_real_session(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, save

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), tmp_path / "m.onnx")
    choice = prov.resolve_device("cpu")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=choice.providers)
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_unavailable_device_errors_with_install_advice(monkeypatch: pytest.MonkeyPatch) -> None:
    _only(monkeypatch, ["CPUExecutionProvider"])
    with pytest.raises(prov.DeviceError) as err:
        prov.resolve_device("cuda")
    msg = str(err.value)
    assert "'cuda' is not available" in msg and "CPUExecutionProvider" in msg
    assert "onnxruntime-gpu" not in msg or "pip install" in msg
    assert "platforms/linux-cuda/README.md" in msg
    with pytest.raises(prov.DeviceError, match="platforms/macos-arm64/README.md"):
        prov.resolve_device("coreml")
    with pytest.raises(prov.DeviceError, match="pip install openvino"):
        prov.resolve_device("openvino")
    with pytest.raises(prov.DeviceError, match="unknown device 'gpu'"):
        prov.resolve_device("gpu")


def test_auto_prefers_cuda_then_coreml_then_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _only(monkeypatch, ["CPUExecutionProvider"])
    assert prov.resolve_device("auto").providers == [("CPUExecutionProvider", {})]
    _only(monkeypatch, ["CoreMLExecutionProvider", "CPUExecutionProvider"])
    coreml = prov.resolve_device("auto")
    assert coreml.device == "coreml"
    name, options = coreml.providers[0]
    assert name == "CoreMLExecutionProvider" and options["ModelFormat"] == "MLProgram"
    assert options["MLComputeUnits"] == "ALL" and "ModelCacheDirectory" not in options  # the runtime sets it
    assert coreml.providers[-1] == ("CPUExecutionProvider", {})
    _only(monkeypatch, ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    cuda = prov.resolve_device("auto")
    assert cuda.device == "cuda" and cuda.providers[0][1]["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    assert cuda.providers[0][1]["enable_cuda_graph"] == "0"


def test_tensorrt_falls_back_to_cuda_then_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _only(monkeypatch, ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    choice = prov.resolve_device("tensorrt")
    assert [n for n, _ in choice.providers] == ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                                "CPUExecutionProvider"]
    assert choice.providers[0][1]["trt_fp16_enable"] == "True"
    assert choice.graph_variant["warping_spade"][0] == "warping_spade.gs4d.fp16"


def test_openvino_through_the_runtime_needs_no_ort_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    _only(monkeypatch, ["CPUExecutionProvider"], openvino=True)
    choice = prov.resolve_device("openvino")
    assert choice.device == "openvino" and choice.providers == [("CPUExecutionProvider", {})]
    assert choice.graph_variant == {"warping_spade": ["warping_spade.gs4d"]}


@pytest.mark.parametrize(("device", "precision", "expected"), [
    ("cpu", "auto", ["warping_spade.wino", "warping_spade"]),
    ("cpu", "fp32", ["warping_spade.wino", "warping_spade"]),
    ("cpu", "fp16", ["warping_spade.fp16"]),
    ("cuda", "auto", ["warping_spade.fp16", "warping_spade"]),
    ("cuda", "fp32", ["warping_spade"]),
    ("coreml", "auto", ["warping_spade.gs4d.fp16", "warping_spade.gs4d"]),
    ("openvino", "auto", ["warping_spade.gs4d"]),
    ("directml", "auto", ["warping_spade.gs4d.fp16", "warping_spade.gs4d"]),
    # no TensorRT package here, so a TensorRT ≤ 10 is assumed: 4-D grid-sample graphs first
    ("tensorrt", "auto", ["warping_spade.gs4d.fp16", "warping_spade.gs4d", "warping_spade.fp16", "warping_spade"]),
])
def test_default_variant_candidates(device: str, precision: str, expected: list[str]) -> None:
    assert variant_candidates("warping_spade", device, precision) == expected


def test_small_graphs_never_use_gs4d() -> None:
    assert variant_candidates("stitching", "coreml") == ["stitching.fp16", "stitching"]
    assert variant_candidates("motion_extractor", "openvino") == ["motion_extractor"]


def test_platform_order_is_used_and_precision_still_filters_it() -> None:
    trt = prov.provider_settings("tensorrt")["graph_variant"]
    both = _manifest("warping_spade", "warping_spade.fp16", "warping_spade.gs4d", "warping_spade.gs4d.fp16")
    assert pick_variant(both, "warping_spade", "tensorrt", "auto", trt) == "warping_spade.gs4d.fp16"
    assert pick_variant(both, "warping_spade", "tensorrt", "fp32", trt) == "warping_spade.gs4d"
    five_d_only = _manifest("warping_spade")
    assert pick_variant(five_d_only, "warping_spade", "tensorrt", "auto", trt) == "warping_spade"
    coreml = prov.provider_settings("coreml")["graph_variant"]
    assert pick_variant(both, "warping_spade", "coreml", "fp32", coreml) == "warping_spade.gs4d"


def test_mac_without_gs4d_graph_names_the_export_flag() -> None:
    manifest = _manifest("warping_spade", "warping_spade.fp16")
    with pytest.raises(ModelsError) as err:
        pick_variant(manifest, "warping_spade", "coreml", "auto", prov.provider_settings("coreml")["graph_variant"])
    msg = str(err.value)
    assert "warping_spade.gs4d.onnx" in msg and "'coreml'" in msg
    assert "python cli.py export" in msg and "--grid-sample 4d" in msg
    with pytest.raises(ModelsError, match="--grid-sample 4d"):
        pick_variant(manifest, "warping_spade", "openvino")
    assert pick_variant(manifest, "warping_spade", "cuda") == "warping_spade.fp16"


def test_tensorrt_picks_native_warping_only_from_11_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorRT ≥ 11.2 has a native 5-D GridSample: native first; older TensorRT (or unknown) gets gs4d first."""
    from runtime import sessions

    preferred = {"warping_spade": ["warping_spade.gs4d.fp16", "warping_spade.gs4d", "warping_spade.fp16",
                                   "warping_spade"]}
    monkeypatch.setattr(sessions, "tensorrt_version", lambda: (10, 9, 0))
    assert sessions.variant_candidates("warping_spade", "tensorrt", "auto", preferred)[0] == "warping_spade.gs4d.fp16"
    monkeypatch.setattr(sessions, "tensorrt_version", lambda: None)
    assert sessions.variant_candidates("warping_spade", "tensorrt", "fp32")[0] == "warping_spade.gs4d"
    monkeypatch.setattr(sessions, "tensorrt_version", lambda: (11, 2, 1))
    keys = sessions.variant_candidates("warping_spade", "tensorrt", "auto", preferred)
    assert keys[:2] == ["warping_spade.fp16", "warping_spade"] and keys[2:] == preferred["warping_spade"][:2]


def _relu_model(folder: Path, size: int) -> Path:
    """A one-Relu ONNX file (input x, output y, `size` floats) to open real sessions on."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size])])
    path = folder / "relu.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                       ir_version=9).SerializeToString())
    return path


def test_strict_device_disables_cpu_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """strict_device sets session.disable_cpu_ep_fallback for non-CPU devices (GPU tests use it)."""
    import onnxruntime as ort

    from runtime import sessions
    from runtime.providers import DeviceChoice

    path = _relu_model(tmp_path, 1)
    seen = {}
    real = ort.InferenceSession

    def spy(model, opts, providers):
        try:
            seen["fallback"] = opts.get_session_config_entry("session.disable_cpu_ep_fallback")
        except RuntimeError:  # never set
            seen["fallback"] = ""
        seen["providers"] = [name for name, _ in providers]
        return real(model, providers=["CPUExecutionProvider"])  # no GPU here: build a plain CPU session

    monkeypatch.setattr(sessions.ort, "InferenceSession", spy)
    choice = DeviceChoice(device="cuda", providers=[("CUDAExecutionProvider", {}), ("CPUExecutionProvider", {})])
    sessions.GraphRunner("relu", path, choice, strict_device=True)
    assert seen == {"fallback": "1", "providers": ["CUDAExecutionProvider"]}
    sessions.GraphRunner("relu", path, choice, strict_device=False)
    assert seen["fallback"] in ("", "0") and seen["providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_cpu_sessions_run_without_the_memory_pattern(tmp_path: Path) -> None:
    """The CPU EP's memory pattern pre-plans a block per run shape (warping_spade.wino: 3.1 vs 2.1 GB peak at batch
    1, same speed); CPU sessions turn it off and keep the arena (off, it cost 20-60 % speed)."""

    from runtime import sessions
    from runtime.providers import resolve_device

    path = _relu_model(tmp_path, 2)
    runner = sessions.GraphRunner("relu", path, resolve_device("cpu"))
    options = runner.session.get_session_options()
    assert options.enable_mem_pattern is False and options.enable_cpu_mem_arena is True
    np.testing.assert_array_equal(runner.run({"x": np.array([-1.0, 2.0], np.float32)})["y"], [0.0, 2.0])


def test_cpu_sessions_share_one_arena_that_grows_by_what_is_asked(tmp_path: Path) -> None:
    """CPU sessions allocate from one process-wide arena (kSameAsRequested) instead of each session's own doubling
    one (warping_spade.wino at batch 2: 3.91 instead of 4.61 GB peak); two sessions in one process both run."""
    from runtime import sessions
    from runtime.providers import resolve_device

    first = sessions.GraphRunner("relu", _relu_model(tmp_path, 2), resolve_device("cpu"))
    (tmp_path / "second").mkdir()
    second = sessions.GraphRunner("relu", _relu_model(tmp_path / "second", 3), resolve_device("cpu"))
    for runner, x in ((first, [-1.0, 2.0]), (second, [3.0, -4.0, 5.0]), (first, [7.0, -8.0])):
        assert runner.session.get_session_options().get_session_config_entry("session.use_env_allocators") == "1"
        np.testing.assert_array_equal(runner.run({"x": np.array(x, np.float32)})["y"], np.maximum(x, 0))
    assert sessions._shared_arena_registered


def test_cpu_session_pool_threads_flush_subnormals(tmp_path: Path) -> None:
    """CPU sessions set flush-to-zero on their pool threads (subnormal operands cost Intel cores ~100+ cycles an
    instruction): 2 × 1e-39 comes back as 0 from the share of the work the pool threads run. The thread calling run
    is not covered by the option, so the exported warping graphs also flush their own subnormals (test_denormals)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from runtime import sessions
    from runtime.providers import resolve_device

    size = 4_000_000
    graph = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["y"])], "double",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size])],
                              [numpy_helper.from_array(np.array([2.0], np.float32), "two")])
    path = tmp_path / "double.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                       ir_version=9).SerializeToString())
    runner = sessions.GraphRunner("double", path, resolve_device("cpu"), threads=4)
    assert runner.session.get_session_options().get_session_config_entry("session.set_denormal_as_zero") == "1"
    x = np.full(size, 1e-39, np.float32)
    y = runner.run({"x": x})["y"]
    assert (y == 0).mean() > 0 and np.all(y[y != 0] == np.float32(2e-39))  # the caller's share may stay subnormal
    plain = ort.SessionOptions()
    plain.intra_op_num_threads = 4
    unflushed = ort.InferenceSession(str(path), plain, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.all(unflushed == np.float32(2e-39))  # without the option nothing is flushed
