"""The job service's executor under Ray Serve: each job goes to the engine deployment through a handle.

The call carries the JobSpec (paths and options); the thread that made it polls the job folder's progress.json for
the service's progress events, turns a cancel (client DELETE, time limit, shutdown) into the cancel marker, and runs
a job once more when its replica died (ray_config.should_retry), else reports it failed with the reason.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from runtime.api import AnimationCancelled, AnimationError, Progress

from .executors import Outcome, ProgressCallback, StartCallback
from .jobs import Job
from .ray_config import APP_NAME, ENGINE, MAX_ATTEMPTS, replica_lost, should_retry
from .ray_files import JobSpec, read_progress, request_cancel, reset_attempt
from .settings import Settings

log = logging.getLogger("liveportrait.ray")
POLL_S = 0.25


def to_outcome(payload: dict[str, Any], folder: Path) -> Outcome:
    """A replica's answer as the service's Outcome; failed/cancelled become the engine's exceptions."""
    status = payload.get("status")
    if status == "cancelled":
        raise AnimationCancelled("cancelled")
    if status != "done":
        raise AnimationError(str(payload.get("error") or f"the replica answered {status!r}"))
    paths = [Path(p) for p in payload["paths"]]
    root = folder.resolve()
    for path in paths:
        if not path.resolve().is_relative_to(root):
            raise AnimationError("the replica wrote outside the job folder")
    return Outcome(paths, int(payload["frames"]), float(payload["fps"]), list(payload.get("warnings", [])))


class RayExecutor:
    """Hands jobs to an engine DeploymentHandle; Ray Serve picks the replica, queues and autoscales."""

    remote = True

    def __init__(self, handle: Any, describe: dict[str, Any] | None = None, poll_s: float = POLL_S,
                 max_attempts: int = MAX_ATTEMPTS, app_name: str = APP_NAME, engine_name: str = ENGINE) -> None:
        self.handle = handle
        self.poll_s = poll_s
        self.max_attempts = max_attempts
        self._describe = dict(describe or {})
        self.app_name, self.engine_name = app_name, engine_name
        self._ready, self._next_check = False, 0.0

    def threads(self, settings: Settings) -> int:
        """One thread per job Ray may hold (running or in its queue), so every accepted job reaches Serve's queue
        at once: that queue length is what autoscaling reads."""
        return settings.workers + settings.max_queue

    def describe(self) -> dict[str, Any]:
        return {"kind": "ray-serve", "max_attempts": self.max_attempts, **self._describe}

    def ready(self) -> bool:
        """True once the engine deployment has a running replica (asked of Serve at most once a second; once
        true it stays true: later replica restarts are Serve's to handle, jobs wait in its queue meanwhile)."""
        now = time.monotonic()
        if self._ready or now < self._next_check:
            return self._ready
        self._next_check = now + 1.0
        try:
            from ray import serve

            app = serve.status().applications.get(self.app_name)
            deployment = app.deployments.get(self.engine_name) if app else None
            self._ready = bool(deployment and deployment.replica_states.get("RUNNING", 0) > 0)
        except Exception as exc:  # noqa: BLE001 - not ready yet; /readyz says so
            log.debug("serve.status() failed: %s", exc)
        return self._ready

    def run(self, job: Job, on_progress: ProgressCallback, on_start: StartCallback) -> Outcome:
        attempt, retried = 1, None
        while True:
            spec = JobSpec.of(job.id, job.folder, job.source, job.driving, job.options, job.face_index,
                              job.write_concat, attempt)
            try:
                payload = self._call(spec, job, on_progress, on_start, retried)
            except AnimationError:
                raise
            except Exception as exc:  # noqa: BLE001 - sorted below: a lost replica, or an error to report
                reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}".rstrip(": ")
                if should_retry(exc, attempt, job.cancel.is_set(), self.max_attempts):
                    log.warning("job %s: its replica was lost (%s); running it again (attempt %d of %d)",
                                job.id, reason, attempt + 1, self.max_attempts)
                    reset_attempt(job.folder)
                    attempt, retried = attempt + 1, reason
                    continue
                if job.cancel.is_set():
                    raise AnimationCancelled("cancelled") from exc
                if replica_lost(exc):
                    raise AnimationError(f"the engine replica running this job stopped ({reason}) on attempt "
                                         f"{attempt} of {self.max_attempts}") from exc
                raise AnimationError(f"engine replica error: {reason}") from exc
            return to_outcome(payload, job.folder)

    def _call(self, spec: JobSpec, job: Job, on_progress: ProgressCallback, on_start: StartCallback,
              retried: str | None) -> dict[str, Any]:
        """One handle call, polled until it answers: progress forwarded, cancel turned into the marker."""
        response = self.handle.animate.remote(spec.to_dict())
        seen: tuple | None = None
        marked = started = False
        while True:
            if job.cancel.is_set() and not marked:
                request_cancel(job.folder)
                marked = True
                if not started:  # still in Serve's queue: drop the request there instead of waiting for a replica
                    response.cancel()
            try:
                return response.result(timeout_s=self.poll_s)
            except TimeoutError:
                pass
            except Exception as exc:
                if marked and type(exc).__name__ in ("RequestCancelledError", "TaskCancelledError"):
                    raise AnimationCancelled("cancelled while waiting for a replica") from exc
                raise
            report = read_progress(job.folder)
            if not report or report.get("runner", {}).get("attempt") != spec.attempt:
                continue
            if not started:
                started = True
                on_start({**report["runner"], **({"retried_after": retried} if retried else {})})
            key = (report.get("stage"), report.get("done"), report.get("total"))
            if key != seen and report.get("stage") in ("source", "driving", "animating"):
                seen = key
                on_progress(Progress(str(key[0]), int(key[1] or 0), key[2]))
