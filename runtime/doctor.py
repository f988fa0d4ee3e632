"""`python cli.py doctor`: what this machine can run, and what to do about what it cannot.

It answers the questions users otherwise ask in issues: which onnxruntime build is installed (and whether two
builds fight over one import directory), which execution providers exist, whether models_onnx/ matches its
manifest, which graph variant each device would load, and — with a short smoke run — how fast each graph is and
how many of its nodes really landed on the accelerator rather than silently on the CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from runtime import providers as prov
from runtime.cpu_route import choose_cpu_route, cpu_flags
from runtime.manifest import (
    CORE_GRAPHS,
    EXPORT_HINT,
    FACE_GRAPHS,
    MANIFEST_NAME,
    Manifest,
    ModelEntry,
    ModelsError,
    read_manifest,
    verify_entry,
)
from runtime.sessions import CPU_WARPING, SPLIT_KEYS, pick_variant

# Every PyPI distribution that installs the `onnxruntime` import package; any two of them overwrite each other.
ORT_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-silicon",
    "onnxruntime-directml",
    "onnxruntime-openvino",
)
# Devices smoke-tested unless asked otherwise; TensorRT builds engines for minutes on first use, so only on request.
SLOW_DEVICES = ("tensorrt",)
OPENVINO_KEY = "openvino-runtime"
SPATIAL_DEFAULT = {"det_10g": 640}  # symbolic H/W of a graph input → this size (else 256)
MIN_TIMING_S = 0.2  # repeat fast graphs until this much time was measured (at most MAX_RUNS calls)
MAX_RUNS = 20
SLOW_CPU_CALL_S = 1.0  # CPU graphs slower than this are timed by their first call alone


def _problem(level: str, what: str, fix: str) -> dict[str, str]:
    return {"level": level, "what": what, "fix": fix}


# ---------------------------------------------------------------------------------------------------- packages


def _installed_version(dist: str) -> str | None:
    """Version of an installed distribution, None when absent (tests monkeypatch this)."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def ort_packages() -> dict[str, str]:
    """Installed onnxruntime distributions → version."""
    found = {}
    for dist in ORT_DISTRIBUTIONS:
        version = _installed_version(dist)
        if version is not None:
            found[dist] = version
    return found


def package_problems(packages: dict[str, str], available: list[str]) -> list[dict[str, str]]:
    """Conflicting or mismatched onnxruntime installs, each with the commands that fix it."""
    problems = []
    if len(packages) > 1:
        names = sorted(packages)
        problems.append(_problem(
            "error",
            f"CONFLICTING ONNXRUNTIME PACKAGES: {', '.join(f'{n} {packages[n]}' for n in names)} are all "
            "installed. They share one `onnxruntime` import directory, so whichever was installed last silently "
            "replaced the others' files (removing one later breaks the other).",
            f"pip uninstall -y {' '.join(names)} && pip install <exactly one of them> "
            "(or: pip install -e '.[cpu]' / '.[gpu]' / '.[directml]')",
        ))
    if not packages:
        problems.append(_problem("error", "onnxruntime is importable but no onnxruntime distribution is registered "
                                 "(a source build or a broken install)", "pip install -e '.[cpu]'"))
    if "onnxruntime-gpu" in packages and "CUDAExecutionProvider" not in available:
        problems.append(_problem(
            "error", "onnxruntime-gpu is installed but CUDAExecutionProvider is not offered: the import directory "
            "holds another build's files",
            "pip uninstall -y onnxruntime onnxruntime-gpu && pip install -e '.[gpu]'"))
    if "onnxruntime-silicon" in packages:
        problems.append(_problem(
            "warning", "onnxruntime-silicon is a retired fork; the official onnxruntime arm64 wheel has the "
            "CoreML execution provider", "pip uninstall -y onnxruntime-silicon && pip install -e '.[cpu]'"))
    return problems


def platform_problems(available: list[str]) -> list[dict[str, str]]:
    """Host problems: an x86 Python on an Apple Silicon Mac, a Mac without the CoreML EP."""
    problems = []
    if platform.system() == "Darwin":
        if platform.machine() == "x86_64" and _is_rosetta():
            problems.append(_problem(
                "error", "this Python is an x86_64 build running under Rosetta on an Apple Silicon Mac: no CoreML "
                "acceleration and emulated CPU code", "install an arm64 Python (python.org universal2 installer, "
                "Homebrew in /opt/homebrew, or `uv python install`) and reinstall: pip install -e '.[cpu]'"))
        elif "CoreMLExecutionProvider" not in available:
            problems.append(_problem(
                "warning", "CoreMLExecutionProvider is not offered by this onnxruntime build",
                "pip uninstall -y onnxruntime onnxruntime-silicon && pip install -e '.[cpu]' (the official arm64 "
                "wheel ships the CoreML EP)"))
    return problems


def _is_rosetta() -> bool:
    try:
        import subprocess

        out = subprocess.run(["sysctl", "-n", "sysctl.proc_translated"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() == "1"
    except (OSError, ValueError, subprocess.SubprocessError):
        return False


def _has_openvino() -> str | None:
    try:
        import openvino
    except ImportError:
        return None
    return str(getattr(openvino, "__version__", None) or _installed_version("openvino") or "unknown")


def _preload_cuda_dlls(available: list[str]) -> str | None:
    """Let onnxruntime-gpu ≥ 1.21 load CUDA/cuDNN from pip's nvidia-* wheels or torch before sessions exist."""
    if "CUDAExecutionProvider" not in available or not hasattr(ort, "preload_dlls"):
        return None
    try:
        ort.preload_dlls()
    except Exception as exc:  # noqa: BLE001 - a failed preload only means the system libraries are used
        return f"preload_dlls failed: {str(exc).splitlines()[0][:200]}"
    return "ok"


# ------------------------------------------------------------------------------------------------------ models


def check_models(models_dir: Path, devices: list[str]) -> tuple[dict[str, Any], list[dict[str, str]], Manifest | None]:
    """Files vs manifest, missing contract graphs, and the variant every usable device would load."""
    info: dict[str, Any] = {"dir": str(models_dir), "manifest": False, "entries": {}, "missing_graphs": [],
                            "unlisted_files": [], "variants": {}}
    try:
        manifest = read_manifest(models_dir)
    except ModelsError as exc:
        return info, [_problem("error", str(exc).split(". ")[0], EXPORT_HINT)], None
    info["manifest"] = True
    info["exporter"] = dict(manifest.exporter)
    info["created"] = manifest.created
    problems: list[dict[str, str]] = []
    for key, entry in sorted(manifest.models.items()):
        issues = verify_entry(models_dir, entry, check_hash=True)
        info["entries"][key] = {"file": entry.file, "graph": entry.graph, "precision": entry.precision,
                                "grid_sample": entry.grid_sample, "bytes": entry.bytes, "ok": not issues,
                                "problem": issues[0] if issues else None}
        if issues:
            problems.append(_problem("error", f"{models_dir / entry.file} does not match {MANIFEST_NAME}: "
                                     f"{issues[0]}", f"re-export it: {EXPORT_HINT}"))
    listed = {e.file for e in manifest.models.values()}
    info["unlisted_files"] = sorted(p.name for p in models_dir.glob("*.onnx") if p.name not in listed)
    for name in info["unlisted_files"]:
        problems.append(_problem("warning", f"{models_dir / name} is not in {MANIFEST_NAME}; it will never be "
                                 "loaded", f"delete it, or re-export so the manifest lists it: {EXPORT_HINT}"))
    info["missing_graphs"] = [g for g in CORE_GRAPHS + FACE_GRAPHS if g not in manifest.models]
    if info["missing_graphs"]:
        problems.append(_problem("error", f"{MANIFEST_NAME} lists no {', '.join(info['missing_graphs'])}",
                                 f"export them: {EXPORT_HINT}"))
    auto = prov.resolve_device("auto").device
    for device in devices:
        picks: dict[str, str | None] = {}
        preferred = prov.provider_settings(device).get("graph_variant", {})
        for graph in CORE_GRAPHS:
            if graph not in manifest.models and not any(e.graph == graph for e in manifest.models.values()):
                picks[graph] = None
                continue
            try:
                picks[graph] = pick_variant(manifest, graph, device, "auto", preferred)
            except ModelsError as exc:
                picks[graph] = None
                hint = str(exc).split("Export it with: ")[-1]
                problems.append(_problem("error" if device in ("cpu", auto) else "warning",
                                         f"device {device!r}: {str(exc).split('. Export')[0]}", hint))
        info["variants"][device] = picks
        if device == "cpu" == auto and picks.get("warping_spade") not in (None, CPU_WARPING):
            problems.append(_problem("warning", f"device 'cpu' runs {picks['warping_spade']}.onnx: {CPU_WARPING}"
                                     ".onnx (Winograd convolutions, ~1.5× faster on the CPU) is not exported",
                                     f"{EXPORT_HINT} (it is written unless --skip-winograd)"))
        if device == "openvino" and all(k in manifest.models for k in SPLIT_KEYS.values()):
            # the OpenVINO runtime loads warping_spade as its two halves (decoder in bf16 where the CPU has it)
            info.setdefault("split", {})[device] = list(SPLIT_KEYS.values())
    return info, problems, manifest


# ------------------------------------------------------------------------------------------------------- route


def route_report(manifest: Manifest | None) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The device `--device auto` picks with this models folder, and why (on a CPU: runtime/cpu_route's rule)."""
    auto = prov.resolve_device("auto").device
    if auto != "cpu":
        return {"device": auto, "label": auto, "reason": f"auto takes the accelerator first ({auto})",
                "bf16_flags": []}, []
    route = choose_cpu_route(cpu_flags(), manifest.models if manifest is not None else (), "auto")
    info = {"device": route.device, "label": route.label, "reason": route.reason,
            "bf16_flags": list(route.bf16_flags)}
    problems = []
    if route.fix and manifest is not None:  # the CPU could run the faster bf16 route
        problems.append(_problem("warning", f"--device auto runs onnxruntime fp32: {route.reason}", route.fix))
    return info, problems


# ------------------------------------------------------------------------------------------------------- smoke


def smoke_inputs(entry: ModelEntry) -> dict[str, np.ndarray]:
    """Zero tensors of the manifest's shapes: N=1, symbolic image sides at a realistic size."""
    feeds = {}
    for spec in entry.inputs:
        shape = []
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
            elif axis == 0:
                shape.append(1)
            else:
                shape.append(SPATIAL_DEFAULT.get(entry.graph, 256))
        feeds[spec.name] = np.zeros(shape, dtype=np.dtype(spec.dtype))
    return feeds


def node_placement(profile_path: str) -> dict[str, int]:
    """Distinct executed nodes per provider, from an onnxruntime profile ("Node" events carry args.provider).

    A partition compiled by CoreML / TensorRT / OpenVINO shows up as one fused node.
    """
    events = json.loads(Path(profile_path).read_text())
    where: dict[str, str] = {}
    for event in events:
        if event.get("cat") != "Node":
            continue
        provider = event.get("args", {}).get("provider")
        if provider:
            name = event.get("name", "")
            for suffix in ("_kernel_time", "_fence_before", "_fence_after"):
                name = name.removesuffix(suffix)
            where[name] = provider
    counts: dict[str, int] = {}
    for provider in where.values():
        counts[provider] = counts.get(provider, 0) + 1
    return counts


def _session_providers(choice: prov.DeviceChoice, cache_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """The choice's providers with the same cache folders the runtime uses (so doctor warms those caches)."""
    out = []
    for name, options in choice.providers:
        options = dict(options)
        if name == "CoreMLExecutionProvider":
            options.setdefault("ModelCacheDirectory", str(cache_dir / "coreml"))
        if name == "TensorrtExecutionProvider":
            options.setdefault("trt_engine_cache_enable", "True")
            options.setdefault("trt_engine_cache_path", str(cache_dir / "tensorrt"))
        out.append((name, options))
    return out


def smoke_graph(path: Path, entry: ModelEntry, choice: prov.DeviceChoice, cache_dir: Path) -> dict[str, Any]:
    """Load one graph with profiling on, run it (one warm-up call), time it, count where its nodes ran."""
    target = choice.providers[0][0]
    feeds = smoke_inputs(entry)
    with tempfile.TemporaryDirectory(prefix="lp-doctor-") as tmp:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "profile")
        if target == "DmlExecutionProvider":
            opts.enable_mem_pattern = False
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        start = time.perf_counter()
        session = ort.InferenceSession(str(path), opts, providers=_session_providers(choice, cache_dir))
        load_s = time.perf_counter() - start
        t0 = time.perf_counter()
        session.run(None, feeds)  # warm-up: cuDNN algorithm search, CoreML compilation, arena growth
        first_s = time.perf_counter() - t0
        # on the CPU EP a first call that already took seconds is a fair timing: don't pay for a second one
        times: list[float] = [first_s] if target == "CPUExecutionProvider" and first_s > SLOW_CPU_CALL_S else []
        while len(times) < MAX_RUNS and (not times or sum(times) < MIN_TIMING_S):
            t0 = time.perf_counter()
            session.run(None, feeds)
            times.append(time.perf_counter() - t0)
        counts = node_placement(session.end_profiling())
    nodes = sum(counts.values())
    placed = counts.get(target, 0)
    return {
        "ms": round(1000 * float(np.median(times)), 3),
        "runs": len(times),
        "first_call_ms": round(1000 * first_s, 3),
        "load_s": round(load_s, 3),
        "nodes": nodes,
        "placed": placed,
        "share": round(placed / nodes, 4) if nodes else 0.0,
        "by_provider": counts,
        "session_providers": list(session.get_providers()),
    }


def _coreml_static(path: Path, options: dict[str, Any]) -> dict[str, Any] | None:
    """The coreml_check prediction (partitions, coverage, unsupported ops) when that module is present."""
    try:
        from runtime.coreml_check import check_coreml_compat
    except ImportError:
        return None
    try:
        report = check_coreml_compat(path, require_static_shapes=options.get("RequireStaticInputShapes") == "1")
    except Exception as exc:  # noqa: BLE001 - the static check is advisory
        return {"error": str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}
    summary = {name: _jsonable(getattr(report, name)) for name in ("partitions", "coverage", "total_nodes",
                                                                   "supported_nodes") if hasattr(report, name)}
    if hasattr(report, "unsupported_by_op"):
        summary["unsupported_by_op"] = _jsonable(report.unsupported_by_op())
    return summary or _jsonable(report)


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    for attr in ("to_json", "to_dict", "as_dict"):
        if hasattr(obj, attr):
            return _jsonable(getattr(obj, attr)())
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


def smoke_device(device: str, manifest: Manifest, models: dict[str, Any], models_dir: Path,
                 cache_dir: Path) -> tuple[str, dict[str, Any], list[dict[str, str]]]:
    """Smoke-run every healthy manifest file on one onnxruntime device."""
    choice = prov.resolve_device(device)
    target = choice.providers[0][0]
    result: dict[str, Any] = {"device": device, "options": dict(choice.providers[0][1]), "graphs": {}}
    problems: list[dict[str, str]] = []
    for key, entry in sorted(manifest.models.items()):
        if not models["entries"].get(key, {}).get("ok"):
            continue
        path = models_dir / entry.file
        try:
            graph = smoke_graph(path, entry, choice, cache_dir)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a reported problem
            message = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            result["graphs"][key] = {"error": message}
            problems.append(_problem("error" if device == "cpu" else "warning", f"{key} failed on {target}: "
                                     f"{message}", _failure_fix(device, entry)))
            continue
        if device == "coreml":
            graph["coreml_check"] = _coreml_static(path, choice.providers[0][1])
        result["graphs"][key] = graph
        if target not in graph["session_providers"]:
            problems.append(_problem("error", f"{target} is listed by onnxruntime but could not be created for "
                                     f"{key}; everything ran on {graph['session_providers'][0]}",
                                     prov.INSTALL_HINT.get(device, "") + _cuda_fix(device)))
    return target, result, problems


def _cuda_fix(device: str) -> str:
    if device not in ("cuda", "tensorrt"):
        return ""
    return ("; the CUDA 12 / cuDNN 9 libraries can come from pip: pip install 'onnxruntime-gpu[cuda,cudnn]' "
            "(onnxruntime.preload_dlls() then finds them), or put the system CUDA/cuDNN lib folders on "
            "LD_LIBRARY_PATH (Linux) / PATH (Windows)")


def _failure_fix(device: str, entry: ModelEntry) -> str:
    if entry.grid_sample == "5d" and device in ("coreml", "openvino", "directml", "tensorrt"):
        return f"this device needs the 4-D grid-sample graph: {EXPORT_HINT} --grid-sample 4d"
    if entry.precision == "fp16" and device == "cpu":
        return "fp16 graphs are meant for GPUs; the CPU runs the fp32 files"
    return f"re-export: {EXPORT_HINT}; if it persists, report it with this doctor output"


def smoke_openvino(manifest: Manifest, models: dict[str, Any], models_dir: Path) -> tuple[dict[str, Any],
                                                                                          list[dict[str, str]]]:
    """Compile and time the files `--device openvino` would load (OpenVINO runtime, not an ORT provider)."""
    from runtime.openvino_backend import OpenVinoRunner

    result: dict[str, Any] = {"device": "openvino", "graphs": {}}
    problems = []
    picks = dict(models["variants"].get("openvino", {}))
    split = models.get("split", {}).get("openvino")
    if split:
        picks.pop("warping_spade", None)
    keys = [k for k in picks.values() if k] + list(split or []) + [g for g in FACE_GRAPHS if g in manifest.models]
    for key in keys:
        entry = manifest.models[key]
        if not models["entries"].get(key, {}).get("ok"):
            continue
        try:
            start = time.perf_counter()
            precision = "bf16" if key == SPLIT_KEYS["spade_decoder"] and OpenVinoRunner.supports_bf16() else "f32"
            runner = OpenVinoRunner(key, models_dir / entry.file, output_names=[t.name for t in entry.outputs],
                                    inference_precision=precision)
            load_s = time.perf_counter() - start
            feeds = smoke_inputs(entry)
            runner.run(feeds)
            times: list[float] = []
            while len(times) < MAX_RUNS and (not times or sum(times) < MIN_TIMING_S):
                t0 = time.perf_counter()
                runner.run(feeds)
                times.append(time.perf_counter() - t0)
            result["graphs"][key] = {"ms": round(1000 * float(np.median(times)), 3), "runs": len(times),
                                     "load_s": round(load_s, 3), "placement": runner.placement(),
                                     "precision": _ov_precision(runner)}
        except Exception as exc:  # noqa: BLE001
            message = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            result["graphs"][key] = {"error": message}
            problems.append(_problem("warning", f"{key} failed on OpenVINO: {message}",
                                     _failure_fix("openvino", entry)))
    return result, problems


def _ov_precision(runner: Any) -> str | None:
    """OpenVINO's compute precision: bf16 by default on CPUs with AMX/AVX512-BF16, which changes numerics."""
    try:
        value = runner.compiled.get_property("INFERENCE_PRECISION_HINT")
        return value.get_type_name() if hasattr(value, "get_type_name") else str(value)
    except Exception:  # noqa: BLE001 - property absent on some devices
        return None


# ----------------------------------------------------------------------------------------------------- collect


def collect(models_dir: str | Path = "models_onnx", smoke: bool = True,
            devices: list[str] | None = None) -> dict[str, Any]:
    """Everything doctor knows, as one JSON-able dict (`devices` limits the smoke run; default: all usable)."""
    models_dir = Path(models_dir)
    available = list(ort.get_available_providers())
    usable = prov.available_devices()
    packages = ort_packages()
    report: dict[str, Any] = {
        "platform": {"system": platform.system(), "machine": platform.machine(), "release": platform.release(),
                     "settings": prov.platform_name()},
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "onnxruntime": {"packages": packages, "version": ort.__version__, "providers": available,
                        "device": ort.get_device(), "cuda_preload": _preload_cuda_dlls(available)},
        "openvino": _has_openvino(),
        "devices": usable,
        "models": {},
        "providers": {},
        "problems": [],
    }
    problems = package_problems(packages, available) + platform_problems(available)
    models, model_problems, manifest = check_models(models_dir, usable)
    report["models"] = models
    problems += model_problems
    report["route"], route_problems = route_report(manifest)
    problems += route_problems
    if smoke and manifest is not None:
        wanted = devices if devices is not None else [d for d in usable if d not in SLOW_DEVICES]
        cache_dir = Path(os.environ.get("LIVEPORTRAIT_CACHE", Path.home() / ".cache" / "liveportrait-onnx"))
        for device in wanted:
            if device not in usable:
                problems.append(_problem("warning", f"device {device!r} is not available here",
                                         prov.INSTALL_HINT.get(device, "")))
                continue
            if device == "openvino" and prov.PROVIDER_OF["openvino"] not in available:
                result, device_problems = smoke_openvino(manifest, models, models_dir)
                report["providers"][OPENVINO_KEY] = result
            else:
                target, result, device_problems = smoke_device(device, manifest, models, models_dir, cache_dir)
                report["providers"][target] = result
            problems += device_problems
    report["problems"] = problems
    return report


# ------------------------------------------------------------------------------------------------------ output


def format_report(report: dict[str, Any]) -> str:
    """Human-readable summary; problems last, loudest first."""
    ortinfo = report["onnxruntime"]
    lines = [
        f"platform     {report['platform']['system']} {report['platform']['machine']} "
        f"(settings: platforms/{report['platform']['settings']})",
        f"python       {report['python']['version']} ({report['python']['executable']})",
        f"onnxruntime  {ortinfo['version']} from "
        + (", ".join(f"{k} {v}" for k, v in ortinfo["packages"].items()) or "no registered distribution"),
        f"providers    {', '.join(ortinfo['providers'])}",
        f"openvino     {report['openvino'] or 'not installed'}",
        f"devices      {', '.join(report['devices'])}",
    ]
    models = report["models"]
    lines.append(f"models       {models['dir']}: " + ("manifest found" if models["manifest"] else "no manifest"))
    for key, e in models.get("entries", {}).items():
        status = "ok" if e["ok"] else e["problem"]
        lines.append(f"  {key:<34} {e['precision']:<5} grid={e['grid_sample'] or '-':<4} {status}")
    for device, picks in models.get("variants", {}).items():
        split = models.get("split", {}).get(device)
        chosen = ", ".join(f"{g}→{' + '.join(split) if split and g == 'warping_spade' else k or 'MISSING'}"
                           for g, k in picks.items() if g == "warping_spade" or not k)
        lines.append(f"  {device:<10} loads {chosen or 'the plain graphs'}")
    route = report.get("route")
    if route:
        lines.append(f"route        --device auto runs {route['label']}: {route['reason']}")
    for name, result in report["providers"].items():
        lines.append(f"smoke        {name}")
        for key, g in result["graphs"].items():
            if "error" in g:
                lines.append(f"  {key:<34} FAILED: {g['error']}")
            elif "share" in g:
                lines.append(f"  {key:<34} {g['ms']:>10.2f} ms  {g['placed']}/{g['nodes']} nodes on {name} "
                             f"({100 * g['share']:.0f}%)")
            else:
                lines.append(f"  {key:<34} {g['ms']:>10.2f} ms  {', '.join(g.get('placement', []))} "
                             f"({g.get('precision') or '?'})")
            static = g.get("coreml_check")
            if isinstance(static, dict):
                lines.append(f"  {'':<34} coreml_check: " + ", ".join(f"{k}={v}" for k, v in static.items()
                                                                       if not isinstance(v, (list, dict))))
    problems = sorted(report["problems"], key=lambda p: p["level"] != "error")
    lines.append("problems     " + ("none" if not problems else str(len(problems))))
    for p in problems:
        lines.append(f"  [{p['level'].upper()}] {p['what']}\n      fix: {p['fix']}")
    return "\n".join(lines)


def _loud_banner(report: dict[str, Any]) -> str | None:
    conflict = [p for p in report["problems"] if p["what"].startswith("CONFLICTING ONNXRUNTIME")]
    if not conflict:
        return None
    bar = "!" * 100
    return f"{bar}\n!! {conflict[0]['what']}\n!! fix: {conflict[0]['fix']}\n{bar}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `cli.py doctor`."""
    parser.add_argument("--models", default="models_onnx", help="models folder to check (default: models_onnx)")
    parser.add_argument("--json", action="store_true", help="print one machine-readable JSON object")
    parser.add_argument("--no-smoke", dest="smoke", action="store_false",
                        help="skip loading and timing the graphs (fast)")
    parser.add_argument("--device", action="append", choices=[d for d in prov.DEVICES if d != "auto"],
                        help="smoke-test only this device (repeatable; default: every usable one but tensorrt)")


def run(args: argparse.Namespace) -> int:
    """Print the report; exit status 1 when any problem is an error."""
    report = collect(args.models, smoke=args.smoke, devices=args.device)
    banner = _loud_banner(report)
    if banner:
        print(banner, file=sys.stderr)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 1 if any(p["level"] == "error" for p in report["problems"]) else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for `python -m runtime.doctor`."""
    parser = argparse.ArgumentParser(prog="doctor", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
