"""The job service: a bounded queue, N worker threads, job state, time limits and cleanup.

Both front ends (the REST API and the web page) go through this class, so they share the queue, the limits and the
models. Where the animation itself runs is an executor (executors.py): by default one in-process LivePortrait shared
by every worker (onnxruntime sessions accept concurrent runs); under Ray Serve, engine replicas (ray_executor.py).
"""

from __future__ import annotations

import logging
import secrets
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from runtime.api import AnimationCancelled, AnimationError, LivePortrait, Progress
from runtime.editing import EditParams, PortraitEditor
from runtime.media import MediaError, load_image_rgb
from runtime.options import AnimationOptions

from .editors import EditorCache, content_hash
from .errors import ServiceError
from .executors import JobExecutor, LocalExecutor
from .settings import Settings
from .uploads import store_upload

log = logging.getLogger("liveportrait.server")

FINAL_STATES = ("done", "failed", "cancelled")
HANDED_OFF = "waiting for a replica"  # stage of a queued job the executor holds (remote executors only)


@dataclass
class Job:
    """One animation request and everything a client may ask about it."""

    id: str
    folder: Path
    options: AnimationOptions
    face_index: int | None
    write_concat: bool
    source: Path | None = None
    driving: Path | None = None
    state: str = "queued"
    stage: str | None = None
    frames_done: int = 0
    frames_total: int | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    fps: float | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    timed_out: bool = False
    version: int = 0
    runner: dict[str, Any] | None = None  # where it ran: pid, replica id, attempt (set when it starts)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def result(self) -> Path | None:
        return self.paths[0] if self.paths else None

    @property
    def concat(self) -> Path | None:
        return self.paths[1] if len(self.paths) > 1 else None

    def timings(self) -> dict[str, float | None]:
        """Seconds spent waiting and running (so far, for a job still going)."""
        now = time.time()
        wait = (self.started or (self.finished if self.final else now)) - self.created
        run = ((self.finished or now) - self.started) if self.started else None
        return {"created_at": self.created, "started_at": self.started, "finished_at": self.finished,
                "wait_s": round(wait, 3), "run_s": None if run is None else round(run, 3)}


class JobService:
    """Queue, workers and state of every job; thread-safe, used from request threads and the web page."""

    def __init__(self, settings: Settings, work_dir: Path, executor: JobExecutor | None = None) -> None:
        self.settings = settings
        self.jobs_dir = work_dir / "jobs"
        self.edit_dir = work_dir / "edit"
        for folder in (self.jobs_dir, self.edit_dir):
            shutil.rmtree(folder, ignore_errors=True)  # leftovers of a killed server are not anyone's results
            folder.mkdir(parents=True)
        self.engine: LivePortrait | None = None
        self.executor: JobExecutor | None = executor  # None until load() built the local engine
        self.load_error: str | None = None
        self.load_seconds: float | None = None
        self.editors = EditorCache(self.require_engine, settings.editor_cache)
        self._jobs: dict[str, Job] = {}
        self._queue: deque[Job] = deque()
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.counters = {"done": 0, "failed": 0, "cancelled": 0, "frames": 0, "run_seconds": 0.0}

    # ----------------------------------------------------------- lifecycle
    def load(self, factory: Callable[[], LivePortrait]) -> None:
        """Build the engine and load every graph now, so the first job pays no loading time."""
        start = time.perf_counter()
        try:
            engine = factory()
            for graph in engine.models.keys:
                engine.models.runner(graph)
        except Exception as exc:  # noqa: BLE001 - the reason is reported by /readyz and the log
            self.load_error = str(exc)
            log.error("models could not be loaded: %s", exc)
            return
        self.load_seconds = time.perf_counter() - start
        self.engine = engine
        self.executor = LocalExecutor(engine, self.settings.batch_size)
        log.info("models loaded on %s in %.1f s", engine.device, self.load_seconds)

    def start(self) -> None:
        """Start the workers and the janitor (idempotent)."""
        if self._threads or self.executor is None:
            return
        for i in range(self.executor.threads(self.settings)):
            thread = threading.Thread(target=self._worker, name=f"lp-worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        janitor = threading.Thread(target=self._janitor, name="lp-janitor", daemon=True)
        janitor.start()
        self._threads.append(janitor)

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking jobs, cancel what runs, wait (bounded) for the workers."""
        self._stop.set()
        with self._lock:
            for job in list(self._queue):
                self._finish_cancelled(job)
            self._queue.clear()
            for job in self._jobs.values():
                job.cancel.set()
            self._lock.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def ready(self) -> bool:
        return self.executor is not None and self.executor.ready()

    def require_ready(self) -> None:
        if not self.ready:
            detail = f"models failed to load: {self.load_error}" if self.load_error else "models are still loading"
            raise ServiceError(503, "not ready", detail, {"Retry-After": "5"})

    def require_engine(self) -> LivePortrait:
        """The in-process engine (portrait editing needs one; jobs go through the executor)."""
        if self.engine is None and self.executor is not None:
            raise ServiceError(501, "not available", "portrait editing needs the engine in the server process; it "
                               "is not offered while animation jobs run on Ray Serve replicas")
        if self.engine is None:
            detail = f"models failed to load: {self.load_error}" if self.load_error else "models are still loading"
            raise ServiceError(503, "not ready", detail, {"Retry-After": "5"})
        return self.engine

    # ------------------------------------------------------------ submit
    def _check_capacity(self) -> None:
        """Refuse when every worker is busy and `max_queue` jobs already wait (caller holds the lock)."""
        active = sum(1 for j in self._jobs.values() if not j.final)  # waiting here or at the executor, or running
        if active >= self.settings.workers + self.settings.max_queue:
            waiting = sum(1 for j in self._jobs.values() if j.state == "queued")
            raise ServiceError(429, "queue full", f"{waiting} jobs are waiting (limit "
                               f"{self.settings.max_queue}); retry later", {"Retry-After": str(self.retry_after())})

    def retry_after(self) -> int:
        """Seconds until a queue slot is likely free: the mean job time so far, at least 1."""
        finished = self.counters["done"] + self.counters["failed"]
        mean = self.counters["run_seconds"] / finished if finished else 10.0
        return max(1, round(mean / self.settings.workers))

    def submit(self, source: BinaryIO, driving: BinaryIO, options: AnimationOptions, face_index: int | None = 0,
               write_concat: bool = True) -> Job:
        """Store both uploads in a fresh job folder and queue the job; 429/413/415/503 as ServiceError."""
        self.require_ready()
        with self._lock:
            self._check_capacity()
        job_id = secrets.token_urlsafe(16)
        job = Job(job_id, self.jobs_dir / job_id, options, face_index, write_concat)
        limit = self.settings.max_upload_bytes
        try:
            job.source = store_upload(source, job.folder, "source", limit)
            job.driving = store_upload(driving, job.folder, "driving", limit)
            with self._lock:
                self._check_capacity()
                self._jobs[job.id] = job
                self._queue.append(job)
                self._lock.notify_all()
        except BaseException:
            shutil.rmtree(job.folder, ignore_errors=True)
            raise
        return job

    def edit(self, source: BinaryIO, params: EditParams, paste_back: bool = True) -> np.ndarray:
        """Render an edited portrait (RGB array); the editor for this photo is cached by its content hash."""
        editor = self.editor_for(source)
        try:
            return self.editors.render(editor, params, paste_back, timeout=self.settings.job_timeout)
        except AnimationError as exc:
            raise ServiceError(422, "cannot edit this photo", str(exc)) from exc

    def editor_for(self, source: BinaryIO) -> PortraitEditor:
        """The cached editor for a photo (built once: face crop and features), keyed by the photo's bytes."""
        self.require_engine()
        folder = self.edit_dir / secrets.token_urlsafe(12)
        try:
            path = store_upload(source, folder, "edit", self.settings.max_upload_bytes)
            return self.editors.get(content_hash(path), lambda: load_image_rgb(path))
        except MediaError as exc:
            raise ServiceError(415, "unsupported media type", str(exc).replace(f"{folder}/", "")) from exc
        except AnimationError as exc:
            raise ServiceError(422, "cannot edit this photo", str(exc).replace(f"{folder}/", "")) from exc
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    # ------------------------------------------------------------- query
    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise ServiceError(404, "not found", "no such job (unknown id, deleted, or expired)")
        return job

    def position(self, job: Job) -> int | None:
        """1 = next to run; None once it left the queue."""
        with self._lock:
            try:
                return self._queue.index(job) + 1
            except ValueError:
                return None

    def describe(self, job: Job) -> dict[str, Any]:
        """The public status of a job (what GET /v1/jobs/{id} and the events stream say)."""
        return {"id": job.id, "state": job.state, "queue_position": self.position(job), "stage": job.stage,
                "frames_done": job.frames_done, "frames_total": job.frames_total, "error": job.error,
                "warnings": list(job.warnings), "fps": job.fps, "cancel_requested": job.cancel.is_set(),
                "timings": job.timings(), "runner": job.runner}

    def wait_change(self, job: Job, version: int, timeout: float) -> int:
        """Block until the job's version passes `version` or `timeout` elapses; returns the current version."""
        with self._lock:
            self._lock.wait_for(lambda: job.version != version or self._stop.is_set(), timeout=timeout)
            return job.version

    def stats(self) -> dict[str, Any]:
        """Counts for /metrics."""
        with self._lock:
            states: dict[str, int] = {"queued": 0, "running": 0, "done": 0, "failed": 0, "cancelled": 0}
            for job in self._jobs.values():
                states[job.state] = states.get(job.state, 0) + 1
            return {"states": states, "queue_length": states["queued"], **self.counters}

    # ------------------------------------------------------------ delete
    def delete(self, job_id: str) -> Job | None:
        """Cancel a queued or running job, or forget a finished one; its files go. None = gone entirely."""
        job = self.get(job_id)
        with self._lock:
            if job in self._queue:
                self._queue.remove(job)
                self._finish_cancelled(job)
                return job
            if job.state == "running" or (job.state == "queued" and job.stage == HANDED_OFF):
                job.cancel.set()
                self._touch(job)
                return job
            self._jobs.pop(job.id, None)
        shutil.rmtree(job.folder, ignore_errors=True)
        return None

    def _finish_cancelled(self, job: Job) -> None:
        job.state, job.finished = "cancelled", time.time()
        job.paths = []
        self.counters["cancelled"] += 1
        shutil.rmtree(job.folder, ignore_errors=True)
        self._touch(job)
        self._log(job)

    def _touch(self, job: Job) -> None:
        job.version += 1
        self._lock.notify_all()

    # ------------------------------------------------------------ workers
    def _worker(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                self._lock.wait_for(lambda: self._queue or self._stop.is_set(), timeout=1.0)
                if self._stop.is_set() or not self._queue:
                    continue
                job = self._queue.popleft()
                if self.executor is not None and self.executor.remote:
                    job.stage = HANDED_OFF  # still queued, now in the executor's queue (Ray Serve's router)
                else:
                    job.state, job.started = "running", time.time()
                self._touch(job)
            self._run(job)

    def _started(self, job: Job) -> Callable[[dict[str, Any]], None]:
        def started(runner: dict[str, Any]) -> None:
            with self._lock:
                job.runner = runner
                if job.state == "queued":
                    job.state, job.started, job.stage = "running", time.time(), None
                self._touch(job)
        return started

    def _progress(self, job: Job) -> Callable[[Progress], None]:
        def update(progress: Progress) -> None:
            with self._lock:
                job.stage = progress.stage
                if progress.stage == "animating":
                    job.frames_done, job.frames_total = progress.done, progress.total
                self._touch(job)
        return update

    def _time_out(self, job: Job) -> None:
        job.timed_out = True
        job.cancel.set()

    def _run(self, job: Job) -> None:
        timer = threading.Timer(self.settings.job_timeout, self._time_out, (job,))
        timer.daemon = True
        timer.start()
        state, error, result = "failed", None, None
        try:
            if job.cancel.is_set():
                raise AnimationCancelled("cancelled before it started")
            if self.executor is None:
                raise ServiceError(503, "not ready", "no executor")
            result = self.executor.run(job, self._progress(job), self._started(job))
            state = "done"
        except AnimationCancelled:
            if job.timed_out:
                error = f"timed out: the job ran longer than the limit of {self.settings.job_timeout:g} s"
            else:
                state = "cancelled"
        except (AnimationError, MediaError, ValueError, OSError, ServiceError) as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - the server keeps serving; the job says what broke
            log.exception("job %s crashed", job.id)
            error = f"internal error: {type(exc).__name__}: {exc}"
        finally:
            timer.cancel()
        if error:
            error = error.replace(f"{job.folder}/", "").replace(str(job.folder), "")  # no server paths in messages
        with self._lock:
            job.finished = time.time()
            job.state, job.error = state, error
            if result is not None:
                job.paths, job.fps, job.warnings = list(result.paths), result.fps, list(result.warnings)
                job.frames_done = job.frames_total = result.frames
                self.counters["frames"] += result.frames
            if state != "done":
                job.paths = []
                shutil.rmtree(job.folder, ignore_errors=True)
            else:  # the uploads are not needed any more; only the results are served
                for path in (job.source, job.driving):
                    path.unlink(missing_ok=True)
            self.counters[state] += 1
            if state != "cancelled":
                self.counters["run_seconds"] += job.finished - (job.started or job.finished)
            self._touch(job)
        self._log(job)

    def _log(self, job: Job) -> None:
        t = job.timings()
        run = f"{t['run_s']:.2f}s" if t["run_s"] is not None else "-"
        rate = f" ({job.frames_done / t['run_s']:.2f} frames/s)" if job.state == "done" and t["run_s"] else ""
        why = f": {job.error}" if job.error else ""
        log.info("job %s %s: %d frames, waited %.2fs, ran %s%s%s", job.id, job.state, job.frames_done,
                 t["wait_s"], run, rate, why)

    # ------------------------------------------------------------ cleanup
    def expire(self, now: float | None = None) -> int:
        """Forget finished jobs older than the TTL and delete their files; returns how many went."""
        now = time.time() if now is None else now
        ttl = self.settings.result_ttl
        with self._lock:
            old = [j for j in self._jobs.values() if j.final and j.finished and now - j.finished > ttl]
            for job in old:
                del self._jobs[job.id]
        for job in old:
            shutil.rmtree(job.folder, ignore_errors=True)
        return len(old)

    def _janitor(self) -> None:
        interval = min(30.0, max(0.2, self.settings.result_ttl / 4))
        while not self._stop.wait(interval):
            self.expire()
