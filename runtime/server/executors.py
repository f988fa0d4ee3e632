"""Where a job's animation runs: in this process (threads over one engine) or elsewhere (Ray Serve replicas).

The job service owns the queue, states, limits and files; an executor only turns one queued job into an outcome.
Keeping that seam narrow is what lets `cli.py serve` and the Ray Serve application share every route and rule.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from runtime.api import LivePortrait, Progress

if TYPE_CHECKING:
    from .jobs import Job
    from .settings import Settings

StartCallback = Callable[[dict[str, Any]], None]
ProgressCallback = Callable[[Progress], None]


@dataclass
class Outcome:
    """What a finished animation produced (the fields of runtime.api.AnimationResult the service uses)."""

    paths: list[Path]
    frames: int
    fps: float
    warnings: list[str] = field(default_factory=list)


class JobExecutor(Protocol):
    """Runs one job to an Outcome; raises AnimationCancelled / AnimationError like LivePortrait.animate does."""

    remote: bool  # True: the job waits elsewhere after hand-off, and `on_start` marks when it really starts

    def threads(self, settings: Settings) -> int:
        """How many service threads hand jobs to this executor at once."""
        ...

    def run(self, job: Job, on_progress: ProgressCallback, on_start: StartCallback) -> Outcome:
        ...

    def describe(self) -> dict[str, Any]:
        """What /v1/info says about where jobs run."""
        ...

    def ready(self) -> bool:
        """Whether jobs can start now (remote engines may still be loading their models)."""
        ...


class LocalExecutor:
    """The in-process engine: `settings.workers` threads call animate() on one shared LivePortrait."""

    remote = False

    def __init__(self, engine: LivePortrait, batch_size: int = 0) -> None:
        self.engine = engine
        self.batch_size = batch_size

    def threads(self, settings: Settings) -> int:
        return settings.workers

    def run(self, job: Job, on_progress: ProgressCallback, on_start: StartCallback) -> Outcome:
        on_start({"kind": "local", "pid": os.getpid(), "thread": threading.current_thread().name})
        result = self.engine.animate(
            job.source, job.driving, options=job.options, output_dir=job.folder / "out", face_index=job.face_index,
            batch_size=self.batch_size, write_concat=job.write_concat, progress=False, on_progress=on_progress,
            cancel=job.cancel)
        return Outcome(list(result.paths), result.frames, result.fps, list(result.warnings))

    def describe(self) -> dict[str, Any]:
        return {"kind": "local", "device": self.engine.device}

    def ready(self) -> bool:
        return True
