"""Load the graphs of models_onnx/ once, checked against the manifest, on the chosen device.

One place decides which variant of each contract graph a device runs (fp16 on GPUs, the 4-D grid-sample form on
CoreML / OpenVINO / TensorRT ≤ 10) and keeps tensors on the GPU between graphs with IO binding on CUDA.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from runtime.cpu_route import SPLIT_PAIR, CpuRoute, choose_cpu_route, cpu_flags
from runtime.manifest import (
    ANIMAL_EXPORT_HINT,
    ANIMAL_FAMILY,
    ANIMAL_GRAPHS,
    CORE_GRAPHS,
    EXPORT_HINT,
    FACE_GRAPHS,
    Manifest,
    ModelsError,
    verify_models,
)
from runtime.providers import DeviceChoice, resolve_device

PRECISIONS = ("auto", "fp32", "fp16")
GPU_DEVICES = ("cuda", "tensorrt", "coreml", "directml")
FOUR_D_DEVICES = ("coreml", "openvino", "directml")
COREML_REWRITTEN = ("appearance_feature_extractor", "motion_extractor")
SPLIT_KEYS = dict(zip(("warping", "spade_decoder"), SPLIT_PAIR, strict=True))  # contract name -> manifest key
CPU_WARPING = "warping_spade.wino"  # the CPU EP's fastest warping graph (Winograd convs), from the default export


def variant_candidates(graph: str, device: str, precision: str = "auto",
                       preferred: Mapping[str, list[str]] | None = None) -> list[str]:
    """Manifest keys to try for `graph` on `device`, best first (platform settings may override the order)."""
    keys: list[str] = []
    if preferred and graph in preferred:
        # platform settings order the variants; an explicit --precision still filters them
        keys = [k for k in preferred[graph] if precision == "auto" or k.endswith(".fp16") == (precision == "fp16")]
    if not keys:
        four_d = graph == "warping_spade" and device in FOUR_D_DEVICES
        base = f"{graph}.gs4d" if four_d else graph
        want_fp16 = precision == "fp16" or (precision == "auto" and device in GPU_DEVICES)
        keys = [f"{base}.fp16", base] if want_fp16 else [base]
        if precision == "fp16":
            keys = [f"{base}.fp16"]
        if graph == "warping_spade" and device == "cpu" and precision != "fp16":
            keys = [CPU_WARPING, "warping_spade"]  # Winograd 3×3 convs: fewer multiplications
        if graph == "warping_spade" and device == "tensorrt":  # TensorRT ≤ 10: 4-D GridSample only
            keys = [k.replace("warping_spade", "warping_spade.gs4d") for k in keys] + keys
    if graph == "warping_spade" and device == "tensorrt" and tensorrt_has_5d_gridsample():
        keys.sort(key=lambda k: ".gs4d" in k)  # native 5-D first, gs4d kept as the fallback
    if device == "coreml" and graph in COREML_REWRITTEN and precision != "fp16":
        keys.insert(0, f"{graph}.coreml")  # 3-D ops rewritten so CoreML takes the whole graph
    return keys


TRT_NATIVE_5D = (11, 2)  # first TensorRT with a native 5-D GridSample


def tensorrt_version() -> tuple[int, ...] | None:
    """Version of the TensorRT python package beside onnxruntime-gpu, or None when it is not installed."""
    try:
        import tensorrt
    except ImportError:
        return None
    parts = []
    for piece in str(getattr(tensorrt, "__version__", "")).split(".")[:3]:
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts) or None


def tensorrt_has_5d_gridsample() -> bool:
    """TensorRT ≥ 11.2 runs the native warping graph; older ones need the 4-D grid-sample form."""
    version = tensorrt_version()
    return version is not None and version[:2] >= TRT_NATIVE_5D


def pick_variant(manifest: Manifest, graph: str, device: str, precision: str = "auto",
                 preferred: Mapping[str, list[str]] | None = None, hint: str = EXPORT_HINT) -> str:
    """The first candidate the manifest lists, or a ModelsError naming the export command that makes one."""
    candidates = variant_candidates(graph, device, precision, preferred)
    for key in candidates:
        if key in manifest.models:
            return key
    flags = []
    if any(".gs4d" in k for k in candidates):
        flags.append("--grid-sample 4d")
    if all(k.endswith(".fp16") for k in candidates):
        flags.append("--precision fp16")
    hint = hint + (" " + " ".join(flags) if flags else "")
    raise ModelsError(f"no {' or '.join(c + '.onnx' for c in candidates)} for device {device!r} in the models "
                      f"folder. Export it with: {hint}")


_SHARED_ARENA_LOCK = threading.Lock()
_shared_arena_registered = False


def use_shared_cpu_arena(opts: ort.SessionOptions) -> None:
    """Make a CPU session allocate from one process-wide arena that grows by exactly what is asked.

    The CPU EP's own arena grows by doubling its last extension, so a session that once needs a 1 GB tensor more
    can reserve 2 GB more; the shared arena (onnxruntime's env allocator, `arena_extend_strategy` kSameAsRequested)
    asks for what the run needs, and every CPU session of the process reuses the same free blocks. Measured on the
    2-core AMD EPYC: `warping_spade.wino` at batch 2 peaks at 3.91 instead of 4.61 GB, at the same speed.
    Registered once per process, under a lock: one arena for all sessions, whichever thread opens them.
    """
    global _shared_arena_registered
    with _SHARED_ARENA_LOCK:
        if not _shared_arena_registered:
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            # max_mem 0 = no limit, strategy 1 = kSameAsRequested, chunk sizes left at onnxruntime's defaults
            ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))
            _shared_arena_registered = True
    opts.add_session_config_entry("session.use_env_allocators", "1")


class GraphRunner:
    """One loaded graph: run(feeds) → dict of outputs; on CUDA, named outputs can stay on the GPU."""

    def __init__(self, key: str, path: Path, choice: DeviceChoice, cache_dir: Path | None = None,
                 threads: int = 0, strict_device: bool = False,
                 provider_options: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.key, self.path, self.device = key, Path(path), choice.device
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        if strict_device and choice.device != "cpu":
            # a node the device cannot run fails session creation instead of silently falling back to the CPU
            opts.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        if choice.device == "cpu":
            # the CPU EP's memory pattern pre-plans one block per run shape; off, warping_spade.wino peaks at 2.1
            # instead of 3.1 GB at batch 1 (3.1 vs 4.9 at batch 2) for the same speed at batch 1 and ~4 % at batch 2
            # (measured on the 2-core AMD EPYC, benchmarks/cpu-ort-session-memory-amd-2026-12-02.json)
            opts.enable_mem_pattern = False
            # flush-to-zero on the pool threads: Intel cores take ~100+ cycles per instruction with a subnormal
            # operand (the exporters also keep the heatmaps' subnormals out of the warping graphs, see
            # export/denormals.py: this option does not cover the thread that calls run)
            opts.add_session_config_entry("session.set_denormal_as_zero", "1")
            use_shared_cpu_arena(opts)
        if any(name == "DmlExecutionProvider" for name, _ in choice.providers):
            opts.enable_mem_pattern = False  # DirectML requires both (onnxruntime DirectML EP docs)
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        providers = []
        for name, options in choice.providers:
            if strict_device and choice.device != "cpu" and name == "CPUExecutionProvider":
                continue  # onnxruntime refuses an explicit CPU EP together with disabled fallback
            options = dict(options) | dict((provider_options or {}).get(name, {}))
            if name == "CoreMLExecutionProvider" and cache_dir is not None:
                options.setdefault("ModelCacheDirectory", str(cache_dir / "coreml"))
            if name == "TensorrtExecutionProvider" and cache_dir is not None:
                options.setdefault("trt_engine_cache_enable", "True")
                options.setdefault("trt_engine_cache_path", str(cache_dir / "tensorrt"))
            providers.append((name, options))
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as exc:  # noqa: BLE001 - corrupt files surface here
            raise ModelsError(f"{self.path} could not be loaded ({str(exc).splitlines()[0][:200]}). "
                              f"Re-export with: {EXPORT_HINT}") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_types = {i.name: i.type for i in self.session.get_inputs()}
        self.on_cuda = self.session.get_providers()[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")

    def run(self, feeds: Mapping[str, Any], keep_on_device: Iterable[str] = ()) -> dict[str, Any]:
        """Run with numpy or OrtValue inputs; outputs are numpy except `keep_on_device` ones on CUDA (OrtValue)."""
        keep = set(keep_on_device)
        if self.on_cuda:
            return self._run_bound(feeds, keep)
        plain = {k: (v.numpy() if isinstance(v, ort.OrtValue) else _as_input(v)) for k, v in feeds.items()}
        outs = self.session.run(self.output_names, plain)
        return dict(zip(self.output_names, outs, strict=True))

    def _run_bound(self, feeds: Mapping[str, Any], keep: set[str]) -> dict[str, Any]:
        binding = self.session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, _as_input(value))
        for name in self.output_names:
            binding.bind_output(name, "cuda" if name in keep else "cpu")
        self.session.run_with_iobinding(binding)
        values = binding.get_outputs()
        return {n: (v if n in keep else v.numpy()) for n, v in zip(self.output_names, values, strict=True)}

    def placement(self) -> list[str]:
        """Providers actually assigned to this session (best first)."""
        return list(self.session.get_providers())


def preload_gpu_libraries() -> None:
    """Load CUDA/cuDNN from the nvidia-* wheels or a torch install when present (onnxruntime-gpu ≥ 1.21)."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception:  # noqa: BLE001 - system libraries may still be found by the loader
            pass


def _as_input(value: Any) -> np.ndarray:
    arr = np.asarray(value)
    return np.ascontiguousarray(arr.astype(np.float32) if arr.dtype == np.float64 else arr)


FAMILY_GRAPHS = {"liveportrait": (CORE_GRAPHS, EXPORT_HINT), ANIMAL_FAMILY: (ANIMAL_GRAPHS, ANIMAL_EXPORT_HINT)}


class ModelSet:
    """All graphs the pipeline needs, loaded lazily once and reused across calls.

    ``family`` "liveportrait" (humans) or "liveportrait_animals" (pets: animal weights + X-Pose) picks which graphs
    the folder must hold and which export command a missing one names.
    """

    def __init__(self, models_dir: str | Path = "models_onnx", device: str = "auto", precision: str = "auto",
                 check_hash: bool = True, threads: int = 0, coreml_units: str | None = None,
                 strict_device: bool = False, static_batch: int = 0, family: str = "liveportrait") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.dir = Path(models_dir)
        self.choice = resolve_device(device, coreml_units=coreml_units)
        if family not in FAMILY_GRAPHS:
            raise ValueError(f"family must be one of {tuple(FAMILY_GRAPHS)}, got {family!r}")
        self.family = family
        graphs, hint = FAMILY_GRAPHS[family]
        self.manifest = verify_models(self.dir, graphs + FACE_GRAPHS, check_hash=False, hint=hint)
        declared = self.manifest.exporter.get("family")
        if declared and declared != family:  # e.g. human graphs where the animal weights belong
            raise ModelsError(f"{self.dir} holds the {declared} export, not {family}. Export it with: {hint}")
        # auto on a CPU: onnxruntime fp32, or OpenVINO with a bf16 decoder where the CPU has bf16 (runtime/cpu_route)
        self.route: CpuRoute | None = None
        if device == "auto" and self.choice.device == "cpu":
            self.route = choose_cpu_route(cpu_flags(), self.manifest.models, precision)
            if self.route.device != "cpu":
                self.choice = resolve_device(self.route.device)
        if self.choice.device in ("cuda", "tensorrt"):
            preload_gpu_libraries()
        self.precision = precision
        self.threads = threads
        self.strict_device = strict_device
        # > 0: warping_spade runs at this fixed batch from fixed buffers, captured as a CUDA graph on CUDA
        self.static_batch = static_batch
        # OpenVINO runs warping_spade as two halves when exported: the decoder may then use bf16 (an export that
        # wrote only the pair, as the default export does on a bf16 CPU, needs no warping_spade.gs4d)
        self.split = self.choice.device == "openvino" and all(k in self.manifest.models for k in SPLIT_KEYS.values())
        self.keys = {g: pick_variant(self.manifest, g, self.choice.device, precision, self.choice.graph_variant,
                                     hint=hint)
                     for g in graphs if not (self.split and g == "warping_spade")}
        self.keys.update({g: g for g in FACE_GRAPHS})
        if self.split:
            self.keys.update(SPLIT_KEYS)
        verify_models(self.dir, list(self.keys.values()), check_hash=check_hash, hint=hint)
        self._runners: dict[str, Any] = {}
        self.cache_dir = Path(os.environ.get("LIVEPORTRAIT_CACHE", Path.home() / ".cache" / "liveportrait-onnx"))

    @property
    def device(self) -> str:
        return self.choice.device

    def runner(self, graph: str) -> Any:
        """The loaded runner for a contract or face graph (created on first use)."""
        if graph not in self._runners:
            key = self.keys[graph]
            path = self.dir / self.manifest.models[key].file
            if self.choice.device == "openvino" and graph not in FACE_GRAPHS:
                from runtime.openvino_backend import OpenVinoRunner

                names = [t.name for t in self.manifest.models[key].outputs]
                self._runners[graph] = OpenVinoRunner(key, path, output_names=names,
                                                      inference_precision=self.openvino_precision(graph))
            elif self.choice.device == "openvino":  # face graphs feed onnxruntime-style sessions: CPU EP
                self._runners[graph] = GraphRunner(key, path, resolve_device("cpu"), self.cache_dir, self.threads)
            else:
                from runtime.static_batch import StaticBatchRunner, cuda_graph_options

                strict = self.strict_device and graph not in FACE_GRAPHS
                static = graph == "warping_spade" and self.static_batch > 0
                options = cuda_graph_options() if static and self.choice.device == "cuda" else None
                runner = GraphRunner(key, path, self.choice, self.cache_dir, self.threads, strict,
                                     provider_options=options)
                self._runners[graph] = StaticBatchRunner(runner, self.static_batch) if static else runner
        return self._runners[graph]

    def openvino_precision(self, graph: str) -> str:
        """f32 everywhere, except the split SPADE decoder in bf16 where the CPU has it (precision auto/fp16)."""
        from runtime.openvino_backend import OpenVinoRunner

        if graph == "spade_decoder" and self.precision != "fp32" and OpenVinoRunner.supports_bf16():
            return "bf16"
        return "f32"

    def run(self, graph: str, feeds: Mapping[str, Any], keep_on_device: Iterable[str] = ()) -> dict[str, Any]:
        """Run a graph by contract name."""
        return self.runner(graph).run(feeds, keep_on_device)
