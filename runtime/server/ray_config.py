"""Settings → Ray Serve deployment options, and the retry rule; Ray is imported lazily (pure logic, unit-tested)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from .settings import Settings, _parse, env_defaults

APP_NAME = "liveportrait"
ENGINE = "LivePortraitEngine"
INGRESS = "LivePortraitIngress"
GPU_DEVICES = ("cuda", "tensorrt")
MAX_ATTEMPTS = 2  # a job whose replica died is run once more on another replica, then reported failed


def gpus_per_replica(settings: Settings) -> float:
    """The configured share of a GPU, or by device when left at -1: 1 for cuda/tensorrt, else 0."""
    if settings.gpus_per_replica >= 0:
        return float(settings.gpus_per_replica)
    return 1.0 if settings.device in GPU_DEVICES else 0.0


def capacity(settings: Settings) -> int:
    """Jobs that can run at once: one per replica, at the most replicas autoscaling may start."""
    return max(settings.replicas, settings.max_replicas)


def engine_options(settings: Settings) -> dict[str, Any]:
    """serve.deployment(...) options of the engine: one whole-video job per replica, resources per replica."""
    options: dict[str, Any] = {
        "max_ongoing_requests": 1,  # a replica animates one video at a time; more wait in Serve's queue
        "ray_actor_options": {"num_cpus": float(settings.cpus_per_replica), "num_gpus": gpus_per_replica(settings)},
        "health_check_period_s": 10.0,
        "graceful_shutdown_timeout_s": 30.0,
    }
    if settings.max_replicas > settings.replicas:
        options["autoscaling_config"] = {
            "min_replicas": settings.replicas, "initial_replicas": settings.replicas,
            "max_replicas": settings.max_replicas,
            "target_ongoing_requests": 1,  # queued jobs beyond one per replica ask for more replicas
            "upscale_delay_s": 5.0, "downscale_delay_s": 300.0}
    else:
        options["num_replicas"] = settings.replicas
    return options


def ingress_options() -> dict[str, Any]:
    """The HTTP front: a single replica (job records live in its memory), no CPU reserved (it mostly waits)."""
    return {"num_replicas": 1, "max_ongoing_requests": 256, "ray_actor_options": {"num_cpus": 0}}


def replica_threads(settings: Settings) -> int:
    """onnxruntime threads per CPU replica: its CPU share, so replicas on one node do not oversubscribe it."""
    if settings.threads or gpus_per_replica(settings) > 0:
        return settings.threads
    return max(1, math.ceil(settings.cpus_per_replica))


def engine_config(settings: Settings, work_dir: Path) -> dict[str, Any]:
    """The replica constructor's argument (plain values; paths absolute, as every node sees them)."""
    return {"models": str(Path(settings.models).absolute()), "device": settings.device,
            "precision": settings.precision, "threads": replica_threads(settings),
            "batch_size": settings.batch_size, "work_dir": str(Path(work_dir).absolute())}


def ingress_settings(settings: Settings) -> Settings:
    """The job service's settings under Ray: as many workers as replicas can run jobs, no web page."""
    return settings.replace(workers=capacity(settings), ui=False, ray=True)


def settings_from_args(args: dict[str, Any], environ: dict[str, str] | None = None) -> Settings:
    """Settings for `serve run` (the config file's `args:`): LP_* environment first, then the args on top."""
    values = env_defaults(environ)
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    for key, value in (args or {}).items():
        name = key.replace("-", "_")
        if name not in fields:
            raise ValueError(f"unknown setting {key!r} (known: {', '.join(sorted(fields))})")
        if isinstance(value, str):
            value = _parse(fields[name], value)
        elif isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return Settings(**values)


def replica_lost(exc: BaseException) -> bool:
    """True when the call failed because the replica (its process or node) went away, not because of the job.

    ActorUnavailableError is left out on purpose: Ray says the replica may still be running the call, and a second
    run would write into the same job folder.
    """
    from ray.exceptions import ActorUnavailableError, RayActorError
    from ray.serve.exceptions import ReplicaUnavailableError

    if isinstance(exc, ActorUnavailableError):
        return False
    return isinstance(exc, (RayActorError, ReplicaUnavailableError))


def should_retry(exc: BaseException, attempt: int, cancelled: bool, max_attempts: int = MAX_ATTEMPTS) -> bool:
    """Retry only a lost replica, only while attempts remain, never a job its client cancelled."""
    return not cancelled and attempt < max_attempts and replica_lost(exc)
