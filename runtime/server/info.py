"""What /v1/info and /metrics report: device, graphs, limits, versions, and job counters as Prometheus text."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

from .jobs import JobService
from .settings import Settings

PACKAGES = ("liveportrait-onnx", "onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "openvino", "numpy",
            "av", "opencv-python-headless", "fastapi", "uvicorn", "gradio", "ray")


def package_version(name: str = "liveportrait-onnx") -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def versions() -> dict[str, str]:
    """Installed versions of the packages that decide behaviour (missing ones left out)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        version = package_version(name)
        if version != "unknown":
            out[name] = version
    return out


def graphs(service: JobService) -> dict[str, dict[str, Any]]:
    """Each loaded graph: the manifest entry chosen for this device, its precision and providers."""
    engine = service.engine
    if engine is None:
        return {}
    models = engine.models
    out = {}
    for graph, key in models.keys.items():
        entry = models.manifest.models.get(key)
        runner = models.runner(graph)  # loaded at start: this only looks it up
        placement = runner.placement() if hasattr(runner, "placement") else None
        out[graph] = {"variant": key, "precision": getattr(entry, "precision", None),
                      "grid_sample": getattr(entry, "grid_sample", None), "providers": placement}
    return out


def describe(service: JobService, settings: Settings) -> dict[str, Any]:
    """The /v1/info document."""
    engine = service.engine
    choice = engine.models.choice if engine is not None else None
    return {
        "ready": service.ready,
        "load_seconds": service.load_seconds,
        "device": engine.device if engine is not None else None,
        "providers": [name for name, _ in choice.providers] if choice is not None else [],
        "graphs": graphs(service),
        "limits": {"workers": settings.workers, "max_queue": settings.max_queue,
                   "max_upload_mb": settings.max_upload_mb, "job_timeout_s": settings.job_timeout,
                   "result_ttl_s": settings.result_ttl, "api_key_required": bool(settings.api_key)},
        "executor": service.executor.describe() if service.executor is not None else None,
        "versions": versions(),
    }


def prometheus(service: JobService) -> str:
    """Counters and gauges in the Prometheus text exposition format (no client library needed)."""
    stats = service.stats()
    lines = ["# HELP lp_jobs Jobs the server currently knows, by state.", "# TYPE lp_jobs gauge"]
    lines += [f'lp_jobs{{state="{state}"}} {count}' for state, count in sorted(stats["states"].items())]
    lines += ["# HELP lp_jobs_finished_total Jobs finished since start, by final state.",
              "# TYPE lp_jobs_finished_total counter"]
    lines += [f'lp_jobs_finished_total{{state="{s}"}} {stats[s]}' for s in ("done", "failed", "cancelled")]
    run = stats["run_seconds"]
    rate = stats["frames"] / run if run else 0.0
    lines += ["# HELP lp_queue_length Jobs waiting for a worker.", "# TYPE lp_queue_length gauge",
              f"lp_queue_length {stats['queue_length']}",
              "# HELP lp_frames_total Frames animated since start.", "# TYPE lp_frames_total counter",
              f"lp_frames_total {stats['frames']}",
              "# HELP lp_job_run_seconds_total Seconds workers spent on jobs.",
              "# TYPE lp_job_run_seconds_total counter",
              f"lp_job_run_seconds_total {run:.3f}",
              "# HELP lp_frames_per_second Frames per second of job run time since start.",
              "# TYPE lp_frames_per_second gauge", f"lp_frames_per_second {rate:.4f}",
              "# HELP lp_editor_cache_size Portrait editors kept for slider edits.",
              "# TYPE lp_editor_cache_size gauge", f"lp_editor_cache_size {len(service.editors)}",
              "# HELP lp_ready 1 once the models are loaded.", "# TYPE lp_ready gauge",
              f"lp_ready {int(service.ready)}"]
    return "\n".join(lines) + "\n"
