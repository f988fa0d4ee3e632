"""Process wiring: work folder, job service, FastAPI app, web page, uvicorn, orderly shutdown."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no telemetry, no version check

from .settings import Settings  # noqa: E402

log = logging.getLogger("liveportrait.server")


def build(settings: Settings, work_dir: Path):
    """The ASGI app and its job service; models load in the background so /healthz answers at once."""
    from fastapi import FastAPI

    from runtime.api import LivePortrait

    from .app import create_app
    from .jobs import JobService

    service = JobService(settings, work_dir)

    def load() -> None:
        service.load(lambda: LivePortrait(settings.models, device=settings.device, precision=settings.precision,
                                          threads=settings.threads))
        service.start()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loader = threading.Thread(target=load, name="lp-load", daemon=True)
        loader.start()
        yield
        service.close()

    app = create_app(settings, service, lifespan)
    if settings.ui:
        from .ui import mount_ui

        app = mount_ui(app, service, settings, work_dir)
    return app, service


def start_process(settings: Settings, prefix: str) -> tuple[Path, bool]:
    """Log to stderr and make the work folder: (folder, True when it is a temporary one this process owns)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    owned = settings.work_dir is None
    work_dir = Path(tempfile.mkdtemp(prefix=prefix)) if owned else Path(settings.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    return work_dir, owned


def serve(settings: Settings) -> int:
    """Run uvicorn in this process until Ctrl-C / SIGTERM; the temporary work folder goes with it."""
    import uvicorn

    work_dir, owned = start_process(settings, "lp-serve-")
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        log.warning("listening on %s without an API key: anyone who can reach it can run jobs", settings.host)
    try:
        app, _ = build(settings, work_dir)
        log.info("serving on http://%s:%d (API docs at /docs), work folder %s", settings.host, settings.port, work_dir)
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", timeout_graceful_shutdown=10)
    finally:  # job records live in memory: their files are unreachable once the process ends
        for folder in ([work_dir] if owned else [work_dir / name for name in ("jobs", "edit", "ui")]):
            shutil.rmtree(folder, ignore_errors=True)
    return 0
