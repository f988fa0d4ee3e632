"""The Ray Serve engine deployment: each replica holds one LivePortrait (models loaded once) and runs one job at a
time from a JobSpec, reading inputs from and writing results to the job's folder on shared storage.

A plain class: ray_app.py wraps it with serve.deployment(...) at build time, so importing this module needs no Ray.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from runtime.api import AnimationCancelled, AnimationError, LivePortrait, Progress
from runtime.media import MediaError

from .ray_files import OUT, PROGRESS, JobSpec, cancel_requested, outcome_payload, write_json_atomic

log = logging.getLogger("liveportrait.ray.engine")
CANCEL_POLL_S = 0.2


def replica_identity() -> dict[str, Any]:
    """Who this replica is (recorded in each job it runs): Serve's replica id, process id, host and Ray node."""
    identity: dict[str, Any] = {"kind": "ray", "pid": os.getpid(), "host": socket.gethostname(), "replica": None,
                                "node": None}
    try:
        import ray
        from ray import serve

        identity["replica"] = serve.get_replica_context().replica_id.unique_id
        identity["node"] = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside a replica (unit tests) there is no context; the pid still says it
        pass
    return identity


class EngineReplica:
    """One engine per replica; `animate` is the whole-video call the ingress makes through a deployment handle."""

    def __init__(self, config: dict[str, Any]) -> None:
        start = time.perf_counter()
        self.engine = LivePortrait(Path(config["models"]), device=config["device"], precision=config["precision"],
                                   threads=int(config["threads"]))
        for graph in self.engine.models.keys:  # load every graph now: the first job pays no loading time
            self.engine.models.runner(graph)
        self.load_seconds = round(time.perf_counter() - start, 3)
        self.work_dir = Path(config["work_dir"])
        self.batch_size = int(config["batch_size"])
        self.identity = replica_identity()
        log.info("engine replica %s loaded models on %s in %.1f s (CUDA_VISIBLE_DEVICES=%s)",
                 self.identity["replica"], self.engine.device, self.load_seconds,
                 os.environ.get("CUDA_VISIBLE_DEVICES", "-"))

    def info(self) -> dict[str, Any]:
        """This replica's identity, device and model load time."""
        return {**self.identity, "device": self.engine.device, "load_seconds": self.load_seconds}

    async def animate(self, spec_data: dict[str, Any]) -> dict[str, Any]:
        """Run one job in a thread; meanwhile watch the cancel marker (and Serve's own request cancellation)."""
        spec = JobSpec.from_dict(spec_data)
        cancel = threading.Event()
        task = asyncio.ensure_future(asyncio.to_thread(self._run, spec, cancel))
        folder = Path(spec.folder)
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=CANCEL_POLL_S)
                if cancel_requested(folder):
                    cancel.set()
        except asyncio.CancelledError:
            cancel.set()  # the thread stops at the next frame; its writers delete their temporary files
            raise
        return task.result()

    def _runner(self, spec: JobSpec) -> dict[str, Any]:
        return {**self.identity, "attempt": spec.attempt}

    def _report(self, folder: Path, spec: JobSpec, stage: str, done: int = 0, total: int | None = None) -> None:
        write_json_atomic(folder / PROGRESS, {"runner": self._runner(spec), "stage": stage, "done": done,
                                               "total": total, "time": time.time()})

    def _run(self, spec: JobSpec, cancel: threading.Event) -> dict[str, Any]:
        runner = self._runner(spec)
        try:
            folder = spec.checked_folder(self.work_dir)
            self._report(folder, spec, "starting")
            if cancel_requested(folder):
                raise AnimationCancelled("cancelled before it started")

            def on_progress(progress: Progress) -> None:
                self._report(folder, spec, progress.stage, progress.done, progress.total)

            result = self.engine.animate(
                Path(spec.source), Path(spec.driving), options=spec.animation_options(), output_dir=folder / OUT,
                face_index=spec.face_index, batch_size=self.batch_size, write_concat=spec.write_concat,
                progress=False, on_progress=on_progress, cancel=cancel)
        except AnimationCancelled:
            return outcome_payload("cancelled", runner)
        except (AnimationError, MediaError, ValueError, OSError) as exc:
            return outcome_payload("failed", runner, error=str(exc))
        return outcome_payload("done", runner, paths=[str(p) for p in result.paths], frames=result.frames,
                               fps=result.fps, warnings=list(result.warnings))
