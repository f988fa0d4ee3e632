"""The Ray Serve application (`cli.py serve --ray`): the same REST API with jobs on engine replicas.

Fast tests check the deployment logic without a cluster (settings → deployment options, the config files, the job
folder's file protocol, the retry rule). The cluster tests start one real local Ray (2 CPUs, no dashboard) with two
CPU engine replicas through `cli.py serve --ray`, run tiny jobs over HTTP, cancel one and kill a replica mid-job.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from runtime.api import AnimationCancelled, AnimationError
from runtime.media import VideoReader
from runtime.options import AnimationOptions
from runtime.server import ray_config as rc
from runtime.server.ray_executor import to_outcome
from runtime.server.ray_files import (
    JobSpec,
    cancel_requested,
    partial_files,
    read_progress,
    request_cancel,
    reset_attempt,
    write_json_atomic,
)
from runtime.server.settings import Settings
from tests.server_process import PORTRAIT, ROOT, Server, process_memory_kb, start_server, tiny_clip

try:
    import ray  # noqa: F401 - only whether it imports
except ImportError:
    HAVE_RAY = False
else:
    HAVE_RAY = True
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="Ray Serve is not installed (pip install -e '.[ray]')")
FINAL = ("done", "failed", "cancelled")


# ------------------------------------------------------------------ no cluster needed
def test_deployment_options_from_settings() -> None:
    fixed = rc.engine_options(Settings(replicas=3, cpus_per_replica=2, device="cpu"))
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    assert fixed["max_ongoing_requests"] == 1
    assert fixed["ray_actor_options"] == {"num_cpus": 2.0, "num_gpus": 0.0}
    scaled = rc.engine_options(Settings(replicas=1, max_replicas=4, device="cuda"))
    assert "num_replicas" not in scaled and scaled["ray_actor_options"]["num_gpus"] == 1.0
    auto = scaled["autoscaling_config"]
    assert (auto["min_replicas"], auto["max_replicas"], auto["target_ongoing_requests"]) == (1, 4, 1)
    assert rc.engine_options(Settings(gpus_per_replica=0.25, device="cuda"))["ray_actor_options"]["num_gpus"] == 0.25
    assert rc.gpus_per_replica(Settings(device="auto")) == 0.0 and rc.gpus_per_replica(Settings(device="tensorrt")) == 1
    # CPU replicas get as many onnxruntime threads as CPUs they reserve; GPU replicas keep onnxruntime's choice
    assert rc.replica_threads(Settings(cpus_per_replica=1.5, device="cpu")) == 2
    assert rc.replica_threads(Settings(device="cuda")) == 0
    front = rc.ingress_settings(Settings(replicas=2, max_replicas=5, max_queue=3, ui=True))
    assert (front.workers, front.ui, front.max_queue) == (5, False, 3)
    config = rc.engine_config(Settings(models=Path("models_onnx")), Path("work"))
    assert Path(config["models"]).is_absolute() and Path(config["work_dir"]).is_absolute()
    with pytest.raises(ValueError, match="max_replicas"):
        Settings(replicas=3, max_replicas=2)


def test_settings_from_serve_config_args() -> None:
    settings = rc.settings_from_args({"work_dir": "/mnt/shared/lp", "replicas": 2, "gpus_per_replica": "0.5",
                                      "max-queue": "4", "cors_origin": ["http://a.example"]},
                                     environ={"LP_DEVICE": "cuda", "LP_MAX_QUEUE": "9", "LP_JOB_TIMEOUT": "60"})
    assert settings.work_dir == Path("/mnt/shared/lp") and settings.replicas == 2
    assert (settings.gpus_per_replica, settings.max_queue, settings.device) == (0.5, 4, "cuda")
    assert settings.job_timeout == 60
    assert settings.cors_origin == ("http://a.example",)
    with pytest.raises(ValueError, match="unknown setting"):
        rc.settings_from_args({"replica": 2}, environ={})


def test_shipped_config_files() -> None:
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "platforms/ray/serve_config.yaml").read_text())
    manifest = yaml.safe_load((ROOT / "platforms/ray/rayservice.yaml").read_text())
    service_config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    assert manifest["kind"] == "RayService"
    for conf in (config, service_config):
        (app,) = conf["applications"]
        module, _, name = app["import_path"].partition(":")
        assert getattr(importlib.import_module(module), name).__name__ == "build_app"
        assert "runtime_env" not in app  # the image holds code and models: nothing is fetched at start
        settings = rc.settings_from_args(app["args"], environ={})
        assert settings.work_dir is not None and settings.models.is_absolute()
        deployments = {d["name"]: d for d in app["deployments"]}
        assert set(deployments) == {rc.ENGINE, rc.INGRESS}
        engine = deployments[rc.ENGINE]
        assert engine["max_ongoing_requests"] == 1 and engine["ray_actor_options"]["num_gpus"] >= 0
        assert deployments[rc.INGRESS]["num_replicas"] == 1
    if HAVE_RAY:  # Serve's own schema accepts both (field names, option names, autoscaling keys)
        from ray.serve.schema import ServeDeploySchema

        for conf in (config, service_config):
            ServeDeploySchema.model_validate(conf)


def test_job_folder_file_protocol(tmp_path: Path) -> None:
    work = tmp_path / "work"
    folder = work / "jobs" / "abc"
    (folder / "out").mkdir(parents=True)
    source, driving = folder / "source.png", folder / "driving.mp4"
    assert read_progress(folder) is None and not cancel_requested(folder)
    write_json_atomic(folder / "progress.json", {"stage": "animating", "done": 1, "total": 2})
    assert read_progress(folder) == {"stage": "animating", "done": 1, "total": 2}
    assert [p.name for p in folder.iterdir() if p.is_file()] == ["progress.json"]  # no temp file left
    request_cancel(folder)
    assert cancel_requested(folder)
    request_cancel(tmp_path / "gone")  # a folder that went: no error
    (folder / "out" / ".result.abc.part.mp4").write_bytes(b"half")
    assert [p.name for p in partial_files(folder)] == [".result.abc.part.mp4"]
    reset_attempt(folder)
    assert read_progress(folder) is None and not (folder / "out").exists() and partial_files(folder) == []

    options = AnimationOptions(driving_multiplier=1.5, flag_pasteback=False)
    spec = JobSpec.of("abc", folder, source, driving, options, 0, False, attempt=2)
    again = JobSpec.from_dict(spec.to_dict())
    assert again == spec and again.animation_options() == options
    assert again.checked_folder(work) == folder.resolve()
    outside = JobSpec.of("abc", folder, Path("/etc/passwd"), driving, options, None, True)
    with pytest.raises(ValueError, match="outside the work folder"):
        outside.checked_folder(work)


def test_replica_answers_become_outcomes(tmp_path: Path) -> None:
    result = tmp_path / "out" / "a.mp4"
    outcome = to_outcome({"status": "done", "paths": [str(result)], "frames": 2, "fps": 25.0, "warnings": ["w"],
                          "runner": {}}, tmp_path)
    assert (outcome.paths, outcome.frames, outcome.fps, outcome.warnings) == ([result], 2, 25.0, ["w"])
    with pytest.raises(AnimationCancelled):
        to_outcome({"status": "cancelled"}, tmp_path)
    with pytest.raises(AnimationError, match="no face"):
        to_outcome({"status": "failed", "error": "no face found"}, tmp_path)
    with pytest.raises(AnimationError, match="outside the job folder"):
        to_outcome({"status": "done", "paths": ["/tmp/elsewhere.mp4"], "frames": 1, "fps": 1.0}, tmp_path)


@needs_ray
def test_retry_decision() -> None:
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError
    from ray.serve.exceptions import ReplicaUnavailableError

    died = ActorDiedError()
    assert rc.replica_lost(died) and rc.replica_lost(ReplicaUnavailableError("r1"))
    # "may still be running": a second run would share the job folder, so it is reported failed instead
    assert not rc.replica_lost(ActorUnavailableError("network", None))
    assert rc.should_retry(died, attempt=1, cancelled=False)
    assert not rc.should_retry(died, attempt=2, cancelled=False)  # once only
    assert not rc.should_retry(died, attempt=1, cancelled=True)  # the client gave it up
    for error in (AnimationError("no face"), ValueError("bad option"), RayTaskError("animate", "tb", ValueError())):
        assert not rc.replica_lost(error) and not rc.should_retry(error, attempt=1, cancelled=False)


# ------------------------------------------------------------------ a real local Ray, two CPU replicas
@pytest.fixture(scope="module")
def ray_server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    if not HAVE_RAY:
        pytest.skip("Ray Serve is not installed (pip install -e '.[ray]')")
    clips = tmp_path_factory.mktemp("clips")
    srv = start_server(models_dir, tmp_path_factory.mktemp("ray") / "work", "--ray", "--replicas", "2",
                       "--cpus-per-replica", "1", "--ray-cpus", "2", "--no-ui",
                       env={"RAY_USAGE_STATS_ENABLED": "0", "LP_MAX_QUEUE": "4"})
    deadline = time.monotonic() + 15  # the timings line follows serve.run, which can return after /readyz is 200
    while not (timings := [ln for ln in srv.log(50000).splitlines() if "RAY_TIMINGS" in ln]) and \
            time.monotonic() < deadline and srv.proc.poll() is None:
        time.sleep(0.5)
    print(f"\nray server ready in {srv.started_s:.1f} s ({timings[-1] if timings else 'no timings'})")
    srv.clips = {n: tiny_clip(clips / f"clip{n}.mp4", frames=n) for n in (1, 2)}  # type: ignore[attr-defined]
    try:
        yield srv
    finally:
        stop_gracefully(srv)


def stop_gracefully(srv: Server) -> None:
    """SIGTERM: the server shuts Serve and its local Ray down itself (bounded), then it is killed if still there."""
    if srv.proc.poll() is None:
        srv.proc.send_signal(signal.SIGTERM)
        try:
            srv.proc.wait(timeout=60)
        except Exception:  # noqa: BLE001 - past the bound: kill
            srv.proc.kill()
            srv.proc.wait(timeout=10)
    assert srv.proc.returncode == 0, srv.log()


def submit(srv: Server, frames: int) -> str:
    with PORTRAIT.open("rb") as s, srv.clips[frames].open("rb") as d:  # type: ignore[attr-defined]
        response = httpx.post(srv.url + "/v1/jobs", files={"source": ("p.png", s), "driving": ("d.mp4", d)},
                              data={"write_concat": "false"}, timeout=60)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def status(srv: Server, job_id: str) -> dict:
    response = httpx.get(f"{srv.url}/v1/jobs/{job_id}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(srv: Server, job_id: str, check, timeout: float = 180.0) -> dict:
    """Poll (bounded) until check(status) holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = status(srv, job_id)
        if check(body):
            return body
        time.sleep(0.2)
    raise AssertionError(f"job {job_id}: condition not met after {timeout} s: {status(srv, job_id)}\n{srv.log()}")


def job_files(srv: Server, job_id: str) -> list[str]:
    folder = srv.work_dir / "jobs" / job_id
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@needs_ray
def test_four_jobs_spread_over_two_replicas(ray_server: Server, tmp_path: Path) -> None:
    srv = ray_server
    assert httpx.get(srv.url + "/readyz", timeout=5).status_code == 200
    info = httpx.get(srv.url + "/v1/info", timeout=5).json()
    assert info["executor"]["kind"] == "ray-serve" and info["executor"]["replicas"] == 2
    frames = [1, 2, 1, 2]
    start = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(lambda n: submit(srv, n), frames))
    done = [wait_for(srv, job_id, lambda b: b["state"] in FINAL, timeout=200) for job_id in ids]
    elapsed = time.monotonic() - start
    assert [d["state"] for d in done] == ["done"] * 4, done
    pids = {d["runner"]["pid"] for d in done}
    assert len(pids) == 2 and len({d["runner"]["replica"] for d in done}) == 2, done  # both replicas worked
    assert all(d["runner"]["attempt"] == 1 and d["runner"]["pid"] != srv.proc.pid for d in done)
    for job_id, n, body in zip(ids, frames, done, strict=True):
        assert body["frames_done"] == body["frames_total"] == n
        response = httpx.get(f"{srv.url}/v1/jobs/{job_id}/result", timeout=30)
        assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
        path = tmp_path / f"{job_id}.mp4"
        path.write_bytes(response.content)
        with VideoReader(path) as reader:
            assert sum(1 for _ in reader) == n
        assert job_files(srv, job_id) == ["out/source--driving.mp4", "progress.json"]
    rss = {pid: process_memory_kb(pid) for pid in pids}
    print(f"\n4 jobs on 2 replicas in {elapsed:.1f} s ({4 / elapsed * 60:.1f} jobs/min); replica memory kB {rss}")


@needs_ray
def test_cancel_reaches_the_replica(ray_server: Server) -> None:
    srv = ray_server
    job_id = submit(srv, 2)
    wait_for(srv, job_id, lambda b: b["state"] == "running" and b["stage"] == "animating")
    response = httpx.delete(f"{srv.url}/v1/jobs/{job_id}", timeout=10)
    assert response.status_code == 202 and response.json()["cancel_requested"] is True
    body = wait_for(srv, job_id, lambda b: b["state"] in FINAL, timeout=60)
    assert body["state"] == "cancelled" and body["error"] is None, body
    assert job_files(srv, job_id) == []  # a cancelled job keeps nothing


@needs_ray
def test_killed_replica_job_is_retried_once(ray_server: Server) -> None:
    srv = ray_server
    job_id = submit(srv, 2)
    running = wait_for(srv, job_id, lambda b: b["state"] == "running" and b["stage"] == "animating")
    killed = running["runner"]["pid"]
    os.kill(killed, signal.SIGKILL)
    body = wait_for(srv, job_id, lambda b: b["state"] in FINAL, timeout=180)
    # the decision (README): a job whose replica died runs once more on another replica
    assert body["state"] == "done", body
    runner = body["runner"]
    assert runner["attempt"] == 2 and runner["pid"] != killed and "ActorDiedError" in runner["retried_after"]
    assert body["frames_done"] == 2
    assert job_files(srv, job_id) == ["out/source--driving.mp4", "progress.json"]  # nothing half-written
    assert list((srv.work_dir / "jobs").rglob("*.part*")) == []
    assert httpx.get(srv.url + "/healthz", timeout=5).json() == {"status": "ok"}
    after = submit(srv, 1)
    assert wait_for(srv, after, lambda b: b["state"] in FINAL, timeout=180)["state"] == "done"
