"""Progress reports and cancellation of LivePortrait.animate(): what a server's job status and cancel button rely on.

The warp graph is the cheap recorder of test_pipeline (pixels are checked there); detection, motion, writers and
paste-back run for real.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import pytest

from runtime.api import AnimationCancelled, AnimationError, LivePortrait, Progress
from runtime.media import load_image_rgb
from runtime.options import AnimationOptions
from tests.test_pipeline import SOURCE, WarpSpy, driving_frames, write_clip


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("progress")


@pytest.fixture(scope="module")
def clip(work: Path) -> Path:
    return write_clip(work / "three.mp4", driving_frames())


@pytest.fixture(scope="module")
def template(engine: LivePortrait, work: Path, clip: Path) -> Path:
    """A 3-frame motion template saved by an uncancelled run."""
    with pytest.MonkeyPatch.context() as mp:
        WarpSpy().install(mp)
        engine.animate(SOURCE, clip, output_dir=work / "for_template", batch_size=1, progress=False,
                       save_template=work / "three.npz")
    return work / "three.npz"


def test_progress_reports_every_stage_and_frame(engine: LivePortrait, work: Path, clip: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    WarpSpy().install(monkeypatch)
    events: list[Progress] = []
    options = AnimationOptions(flag_eye_retargeting=True)  # needs the driving landmark pre-pass
    result = engine.animate(SOURCE, clip, options=options, output_dir=work / "reported", batch_size=2,
                            progress=False, on_progress=events.append)
    assert result.frames == 3
    stages = [e.stage for e in events]
    first = {s: stages.index(s) for s in ("source", "driving", "animating")}
    assert first["source"] < first["driving"] < first["animating"], stages
    assert events[first["source"]] == Progress("source", 0, 1) and Progress("source", 1, 1) in events
    driving = [e for e in events if e.stage == "driving"]
    assert [e.done for e in driving] == [0, 1, 2, 3] and {e.total for e in driving} == {3}
    animating = [e for e in events if e.stage == "animating"]
    done = [e.done for e in animating]
    assert done == sorted(done) and done[0] == 0 and set(done) == {0, 1, 2, 3}, done
    assert animating[-1] == Progress("animating", 3, 3)
    assert stages[-1] == "animating"  # nothing reported after the final frame count


def _cancel_at(event: threading.Event, stage: str, done: int):
    """A callback that sets `event` when `stage` reaches `done` (and records what it saw)."""
    seen: list[Progress] = []

    def callback(progress: Progress) -> None:
        seen.append(progress)
        if progress.stage == stage and progress.done >= done:
            event.set()

    callback.seen = seen
    return callback


@pytest.mark.parametrize("mode", ["image->video", "template->video", "image->image", "video->video",
                                  "driving pre-pass"])
def test_cancel_stops_the_run_and_leaves_no_file(mode: str, engine: LivePortrait, work: Path, clip: Path,
                                                 template: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = WarpSpy().install(monkeypatch)
    out = work / f"cancelled_{mode.replace('>', '').replace(' ', '_')}"
    cancel = threading.Event()
    driving, options, stage, at = clip, AnimationOptions(), "animating", 1
    if mode == "template->video":
        driving = template
    elif mode == "image->image":
        driving = work / "still.png"
        cv2.imwrite(str(driving), cv2.cvtColor(driving_frames()[0], cv2.COLOR_RGB2BGR))
        stage, at = "animating", 0  # one frame only: cancel while it renders
    elif mode == "driving pre-pass":
        options, stage = AnimationOptions(flag_eye_retargeting=True), "driving"
    source = SOURCE
    if mode == "video->video":
        source = write_clip(work / "astronaut.mp4", [load_image_rgb(SOURCE)] * 3)
    callback = _cancel_at(cancel, stage, at)
    with pytest.raises(AnimationCancelled, match="cancelled"):
        engine.animate(source, driving, options=options, output_dir=out, batch_size=1, progress=False,
                       save_template=out / "motion.npz" if mode == "image->video" else None,
                       on_progress=callback, cancel=cancel)
    assert isinstance(AnimationCancelled("x"), AnimationError)
    left = sorted(p.name for p in out.rglob("*")) if out.exists() else []
    assert left == [], f"a cancelled run left files behind: {left}"
    frames_done = max((p.done for p in callback.seen if p.stage == "animating"), default=0)
    assert frames_done <= max(at, 1), callback.seen  # stopped at the next frame, not at the end
    if mode == "driving pre-pass":
        assert spy.kp_driving == [] and not any(p.stage == "animating" for p in callback.seen)
    else:
        assert len(spy.kp_driving) <= 2  # within one driving batch (batch_size=1) of the cancel


def test_cancel_set_before_the_call_runs_nothing(engine: LivePortrait, work: Path, clip: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    spy = WarpSpy().install(monkeypatch)
    cancel = threading.Event()
    cancel.set()
    events: list[Progress] = []
    with pytest.raises(AnimationCancelled):
        engine.animate(SOURCE, clip, output_dir=work / "never", progress=False, on_progress=events.append,
                       cancel=cancel)
    assert events == [] and spy.kp_driving == []
    assert not (work / "never").exists() or list((work / "never").iterdir()) == []
