"""The Ray Serve application: the same job service and REST routes as `cli.py serve`, with jobs run by engine
replicas (ray_engine.py) that Serve places on GPUs/CPUs across the cluster, queues and autoscales.

    python cli.py serve --ray --replicas 2              # one machine: starts a local Ray, no dashboard
    serve run platforms/ray/serve_config.yaml           # an existing cluster: `build_app` below is the import path

The ingress is one replica (job records live in its memory, as in `cli.py serve`); the web page is not served here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline: no usage report
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from .ray_config import (  # noqa: E402
    APP_NAME,
    ENGINE,
    INGRESS,
    capacity,
    engine_config,
    engine_options,
    gpus_per_replica,
    ingress_options,
    ingress_settings,
    settings_from_args,
)
from .settings import Settings  # noqa: E402

log = logging.getLogger("liveportrait.ray")


class JobsIngress:
    """The HTTP front replica: a JobService whose executor calls the engine deployment (Serve builds the app after
    the constructor through `__serve_build_asgi_app__`, so nothing but settings is pickled)."""

    def __init__(self, engine: Any, settings: Settings, work_dir: str) -> None:
        from .jobs import JobService
        from .ray_executor import RayExecutor

        self.settings = settings
        described = {"replicas": settings.replicas, "max_replicas": capacity(settings),
                     "gpus_per_replica": gpus_per_replica(settings), "cpus_per_replica": settings.cpus_per_replica,
                     "work_dir": work_dir}
        from ray import serve

        app_name = serve.get_replica_context().app_name  # `serve run` configs may name the application anything
        executor = RayExecutor(engine, described, app_name=app_name)
        self.service = JobService(settings, Path(work_dir), executor=executor)
        self.service.load_seconds = 0.0  # replicas load their own models; Serve routes here once they are up
        self.service.start()

    def __serve_build_asgi_app__(self) -> Any:
        from fastapi import FastAPI

        from .app import create_app

        @contextlib.asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            yield
            self.service.close()

        return create_app(self.settings, self.service, lifespan)


def application(settings: Settings, work_dir: Path) -> Any:
    """The bound Serve application: ingress → engine handle, options from the settings (a config file may
    override num_replicas / ray_actor_options / autoscaling_config per deployment by name)."""
    from ray import serve

    from .ray_engine import EngineReplica

    engine = serve.deployment(EngineReplica, name=ENGINE, **engine_options(settings))
    ingress = serve.deployment(serve.ingress()(JobsIngress), name=INGRESS, **ingress_options())
    return ingress.bind(engine.bind(engine_config(settings, work_dir)), ingress_settings(settings),
                        str(Path(work_dir).absolute()))


def build_app(args: dict[str, Any]) -> Any:
    """Application builder for `serve run` / a RayService: `args` are Settings fields (LP_* env underneath);
    `work_dir` is required and must be storage every node mounts at the same path."""
    settings = settings_from_args(args)
    if settings.work_dir is None:
        raise ValueError("work_dir is required on a cluster: a folder on shared storage (NFS/EFS/...) mounted at the "
                         "same path on every node")
    return application(settings, Path(settings.work_dir))


def _local_runtime_env() -> dict[str, Any]:
    """Replicas of a local Ray import the same `runtime` package as this process (no code is shipped or fetched)."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {"PYTHONPATH": path, "RAY_USAGE_STATS_ENABLED": "0"}}


def serve_ray(settings: Settings) -> int:
    """`cli.py serve --ray`: start (or join) Ray, deploy, serve until Ctrl-C / SIGTERM, then shut everything down."""
    import ray
    from ray import serve

    from .main import start_process

    work_dir, owned = start_process(settings, "lp-ray-")
    if settings.ui:
        log.info("the web page is not served under --ray (use `cli.py serve` for it); the REST API is")
    stop = threading.Event()
    t0 = time.perf_counter()
    try:
        if settings.ray_address:
            ray.init(address=settings.ray_address, include_dashboard=False, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=settings.ray_cpus or None, include_dashboard=False, logging_level=logging.WARNING,
                     runtime_env=_local_runtime_env())
        t1 = time.perf_counter()
        serve.start(http_options={"host": settings.host, "port": settings.port})
        serve.run(application(settings, work_dir), name=APP_NAME, route_prefix="/")
        t2 = time.perf_counter()
        log.info("ray started in %.1f s, application deployed in %.1f s (%d engine replica(s), %g GPU / %g CPU "
                 "each); serving on http://%s:%d, work folder %s", t1 - t0, t2 - t1, settings.replicas,
                 gpus_per_replica(settings), settings.cpus_per_replica, settings.host, settings.port, work_dir)
        for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which installs its own handlers
            signal.signal(sig, lambda *_: stop.set())
        print(f"RAY_TIMINGS ray_init_s={t1 - t0:.2f} deploy_s={t2 - t1:.2f}", file=sys.stderr, flush=True)
        while not stop.wait(1.0):
            pass
        log.info("stopping")
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
        for folder in ([work_dir] if owned else [work_dir / name for name in ("jobs", "edit")]):
            shutil.rmtree(folder, ignore_errors=True)
    return 0
