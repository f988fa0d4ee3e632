"""The REST API of `cli.py serve`, over HTTP against a real server process (CPU, fixture models, tiny inputs).

One server per module: 2 workers, 1 queue slot, a 2 MiB upload limit, an API key and a short result TTL, so every
limit can be reached with two-frame jobs. Each test checks that the job folders hold only what they should and
that the server still answers afterwards.
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from runtime.media import VideoReader, load_image_rgb
from tests.server_process import PORTRAIT, Server, start_server, tiny_clip

KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
TTL_S = 40
FINAL = ("done", "failed", "cancelled")
KEPT: dict[str, tuple[str, float]] = {}  # a finished job left for the TTL test: id, finish time


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    text = folder / "notes.txt"
    text.write_text("this is not a picture\n" * 20)
    corrupt = folder / "corrupt.mp4"
    data = tiny_clip(folder / "good.mp4").read_bytes()
    corrupt.write_bytes(data[:48] + bytes(len(data) - 48))  # a real MP4 header, then zeros
    pkl = folder / "motion.pkl"
    pkl.write_bytes(pickle.dumps({"n_frames": 1}))
    big = folder / "big.png"
    big.write_bytes(PORTRAIT.read_bytes()[:64] + bytes(3 * 2**20))
    return {"clip": tiny_clip(folder / "clip.mp4"), "text": text, "corrupt": corrupt, "pickle": pkl, "big": big}


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    srv = start_server(models_dir, tmp_path_factory.mktemp("serve") / "work", "--workers", "2", "--max-queue", "1",
                       "--max-upload-mb", "2", "--result-ttl", str(TTL_S), "--no-ui", env={"LP_API_KEY": KEY})
    print(f"\nserver ready in {srv.started_s:.1f} s, idle {srv.rss_kb()}")
    try:
        yield srv
    finally:
        srv.stop()


def submit(server: Server, source: Path, driving: Path, source_name: str | None = None, **fields) -> httpx.Response:
    with source.open("rb") as s, driving.open("rb") as d:
        files = {"source": (source_name or source.name, s), "driving": (driving.name, d)}
        return httpx.post(server.url + "/v1/jobs", files=files, data={k: str(v) for k, v in fields.items()},
                          headers=AUTH, timeout=60)


def status(server: Server, job_id: str) -> dict:
    response = httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(server: Server, job_id: str, states: tuple[str, ...], timeout: float = 240.0) -> dict:
    """Poll (bounded) until the job reaches one of `states`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = status(server, job_id)
        if body["state"] in states:
            return body
        assert body["state"] not in FINAL, body
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not in {states} after {timeout} s: {status(server, job_id)}\n{server.log()}")


def events(server: Server, job_id: str, timeout: float = 300.0) -> list[dict]:
    """Read the job's Server-Sent Events until the stream ends (it ends at a final state)."""
    seen = []
    deadline = time.monotonic() + timeout
    with httpx.stream("GET", f"{server.url}/v1/jobs/{job_id}/events", headers=AUTH,
                      timeout=httpx.Timeout(10.0, read=60.0)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
            assert time.monotonic() < deadline, "events stream did not end"
    return seen


def assert_serving(server: Server) -> None:
    assert server.proc.poll() is None, server.log()
    assert httpx.get(server.url + "/healthz", timeout=5).json() == {"status": "ok"}


def job_files(server: Server, job_id: str) -> list[str]:
    folder = server.work_dir / "jobs" / job_id
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def assert_error(response: httpx.Response, status_code: int, *words: str) -> dict:
    assert response.status_code == status_code, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    for word in words:
        assert word in body["detail"], body
    return body


def test_settings_from_flags_and_environment() -> None:
    from runtime.server.settings import add_arguments, from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser, environ={"LP_MAX_QUEUE": "3", "LP_API_KEY": "k", "LP_UI": "false",
                                   "LP_CORS_ORIGIN": "http://a.example, http://b.example", "LP_JOB_TIMEOUT": "12.5"})
    settings = from_args(parser.parse_args([]))
    assert (settings.max_queue, settings.api_key, settings.ui, settings.job_timeout) == (3, "k", False, 12.5)
    assert settings.cors_origin == ("http://a.example", "http://b.example") and settings.host == "127.0.0.1"
    settings = from_args(parser.parse_args(["--max-queue", "5", "--ui", "--cors-origin", "http://c.example"]))
    assert (settings.max_queue, settings.ui, settings.cors_origin) == (5, True, ("http://c.example",))
    with pytest.raises(ValueError, match="LP_WORKERS"):
        add_arguments(argparse.ArgumentParser(), environ={"LP_WORKERS": "many"})
    with pytest.raises(ValueError, match="workers"):
        from_args(parser.parse_args(["--workers", "0"]))


def test_health_docs_info_metrics(server: Server) -> None:
    assert_serving(server)
    assert httpx.get(server.url + "/readyz", timeout=5).json()["status"] == "ready"
    assert "swagger" in httpx.get(server.url + "/docs", timeout=5).text.lower()
    spec = httpx.get(server.url + "/openapi.json", timeout=5).json()
    form = spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    fields = spec["components"]["schemas"][form.rsplit("/", 1)[1]]["properties"]
    assert fields["scale"]["default"] == 2.3 and fields["vy_ratio"]["default"] == -0.125
    assert fields["flag_crop_driving_video"]["default"] is False and fields["animation_region"]["default"] == "all"
    info = httpx.get(server.url + "/v1/info", headers=AUTH, timeout=10).json()
    assert info["device"] == "cpu" and "CPUExecutionProvider" in info["providers"]
    assert info["graphs"]["warping_spade"]["precision"] == "fp32"
    assert info["limits"]["max_queue"] == 1 and info["limits"]["api_key_required"] is True
    assert "onnxruntime" in info["versions"] and "fastapi" in info["versions"]
    cors = httpx.get(server.url + "/healthz", headers={"Origin": "http://elsewhere.example"}, timeout=5)
    assert "access-control-allow-origin" not in cors.headers  # CORS is off without --cors-origin
    metrics = httpx.get(server.url + "/metrics", timeout=5).text
    assert "lp_queue_length 0" in metrics and 'lp_jobs{state="running"}' in metrics and "lp_ready 1" in metrics


def test_api_key_is_required_on_v1(server: Server, inputs: dict[str, Path]) -> None:
    assert_error(httpx.get(server.url + "/v1/info", timeout=5), 401, "Bearer")
    assert httpx.get(server.url + "/v1/info", headers={"X-API-Key": "wrong"}, timeout=5).status_code == 401
    assert httpx.get(server.url + "/v1/info", headers={"X-API-Key": KEY}, timeout=5).status_code == 200
    with PORTRAIT.open("rb") as s, inputs["clip"].open("rb") as d:
        response = httpx.post(server.url + "/v1/jobs", files={"source": s, "driving": d}, timeout=30)
    assert_error(response, 401)
    assert server.files() == []
    assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200  # health stays open


def test_unknown_job_is_404(server: Server) -> None:
    for method, suffix in (("GET", ""), ("GET", "/events"), ("GET", "/result"), ("GET", "/concat"), ("DELETE", "")):
        response = httpx.request(method, f"{server.url}/v1/jobs/no-such-job{suffix}", headers=AUTH, timeout=5)
        assert_error(response, 404)
    assert_serving(server)


def test_refusals_leave_nothing_behind(server: Server, inputs: dict[str, Path]) -> None:
    assert_error(submit(server, inputs["big"], inputs["clip"]), 413, "2 MiB")
    assert_error(submit(server, inputs["text"], inputs["clip"]), 415, "source", "expected an image")
    assert_error(submit(server, PORTRAIT, inputs["text"]), 415, "driving", "expected a video")
    assert_error(submit(server, PORTRAIT, inputs["pickle"]), 415, "pickle")
    assert_error(submit(server, PORTRAIT, inputs["clip"], animation_region="everything"), 422, "animation_region")
    assert_error(submit(server, PORTRAIT, inputs["clip"], scale="big"), 422, "scale")
    assert server.files() == []
    assert_serving(server)


def test_corrupt_video_fails_with_reason(server: Server, inputs: dict[str, Path]) -> None:
    response = submit(server, PORTRAIT, inputs["corrupt"])
    assert response.status_code == 202, response.text
    body = wait_for(server, response.json()["id"], FINAL, timeout=60)
    assert body["state"] == "failed" and "driving" in body["error"], body
    assert str(server.work_dir) not in body["error"]  # no server paths in messages
    assert job_files(server, body["id"]) == []
    assert_serving(server)


def test_two_jobs_queue_limit_results_and_ranges(server: Server, inputs: dict[str, Path],
                                                 tmp_path: Path) -> None:
    a = submit(server, PORTRAIT, inputs["clip"], source_name="../../x.png")
    assert a.status_code == 202, a.text
    a = a.json()
    assert set(a) >= {"id", "status_url", "events_url", "result_url", "concat_url"} and len(a["id"]) >= 20
    b = submit(server, PORTRAIT, PORTRAIT, source_name="../../../etc/passwd")  # image -> image: one frame
    assert b.status_code == 202, b.text
    b = b.json()
    wait_for(server, a["id"], ("running",), timeout=30)
    wait_for(server, b["id"], ("running",), timeout=30)  # two workers: both run at once
    c = submit(server, PORTRAIT, inputs["clip"])
    assert c.status_code == 202, c.text
    queued = status(server, c.json()["id"])
    assert queued["state"] == "queued" and queued["queue_position"] == 1
    full = submit(server, PORTRAIT, inputs["clip"])
    assert_error(full, 429, "retry")
    assert int(full.headers["Retry-After"]) >= 1
    assert "lp_queue_length 1" in httpx.get(server.url + "/metrics", timeout=5).text
    gone = httpx.delete(f"{server.url}/v1/jobs/{c.json()['id']}", headers=AUTH, timeout=10)
    assert gone.status_code == 200 and gone.json()["state"] == "cancelled"
    assert job_files(server, c.json()["id"]) == []

    seen = events(server, a["id"])
    assert seen[-1]["state"] == "done", seen[-1]
    assert [e["frames_done"] for e in seen] == sorted(e["frames_done"] for e in seen)
    assert seen[-1]["frames_done"] == seen[-1]["frames_total"] == 2
    done_b = wait_for(server, b["id"], ("done",), timeout=240)
    done_a = status(server, a["id"])
    ta, tb = done_a["timings"], done_b["timings"]
    assert ta["started_at"] < tb["finished_at"] and tb["started_at"] < ta["finished_at"]  # they overlapped

    full_video = httpx.get(a["result_url"], headers=AUTH, timeout=30)
    assert full_video.status_code == 200 and full_video.headers["content-type"] == "video/mp4"
    assert full_video.headers["accept-ranges"] == "bytes"
    part = httpx.get(a["result_url"], headers=AUTH | {"Range": "bytes=0-99"}, timeout=30)
    assert part.status_code == 206 and part.content == full_video.content[:100]
    assert part.headers["content-range"] == f"bytes 0-99/{len(full_video.content)}"
    (tmp_path / "a.mp4").write_bytes(full_video.content)
    with VideoReader(tmp_path / "a.mp4") as reader:
        frames = list(reader)
        assert len(frames) == 2 and round(reader.fps) == 25
    concat = httpx.get(a["concat_url"], headers=AUTH, timeout=30)
    (tmp_path / "c.mp4").write_bytes(concat.content)
    with VideoReader(tmp_path / "c.mp4") as reader:
        assert reader.width == 3 * reader.height and len(list(reader)) == 2
    still = httpx.get(b["result_url"], headers=AUTH, timeout=30)
    assert still.headers["content-type"] == "image/jpeg"
    (tmp_path / "b.jpg").write_bytes(still.content)
    assert load_image_rgb(tmp_path / "b.jpg").ndim == 3

    # client names chose nothing: only the results, under the random job folders
    assert job_files(server, a["id"]) == ["out/source--driving.mp4", "out/source--driving_concat.mp4"]
    assert job_files(server, b["id"]) == ["out/source--driving.jpg", "out/source--driving_concat.jpg"]
    assert not list(server.work_dir.parent.rglob("x.png")) and not list(server.work_dir.parent.rglob("passwd"))
    assert httpx.delete(f"{server.url}/v1/jobs/{a['id']}", headers=AUTH, timeout=10).status_code == 204
    assert job_files(server, a["id"]) == []
    assert_error(httpx.get(a["status_url"], headers=AUTH, timeout=5), 404)
    KEPT["ttl"] = (b["id"], time.time())  # for the TTL test below
    metrics = httpx.get(server.url + "/metrics", timeout=5).text
    assert 'lp_jobs_finished_total{state="done"} 2' in metrics and "lp_frames_total 3" in metrics
    assert_serving(server)


def test_cancel_running_job(server: Server, inputs: dict[str, Path]) -> None:
    job = submit(server, PORTRAIT, inputs["clip"]).json()
    wait_for(server, job["id"], ("running",), timeout=30)
    response = httpx.delete(job["status_url"], headers=AUTH, timeout=10)
    assert response.status_code in (200, 202) and response.json()["cancel_requested"] is True
    body = wait_for(server, job["id"], ("cancelled",), timeout=120)
    assert body["error"] is None
    assert job_files(server, job["id"]) == []
    assert_error(httpx.get(job["result_url"], headers=AUTH, timeout=5), 409, "cancelled")
    assert_serving(server)


def test_edit_renders_and_caches_the_editor(server: Server, inputs: dict[str, Path]) -> None:
    def edit(path: Path, **fields) -> httpx.Response:
        with path.open("rb") as fh:
            return httpx.post(server.url + "/v1/edit", files={"source": ("p.png", fh)}, headers=AUTH,
                              data={k: str(v) for k, v in fields.items()}, timeout=180)

    response = edit(PORTRAIT, smile=0.8, format="jpeg")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg", response.text
    import cv2

    image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == load_image_rgb(PORTRAIT).shape  # pasted back into the full photo
    assert "lp_editor_cache_size 1" in httpx.get(server.url + "/metrics", timeout=5).text
    assert_error(edit(inputs["clip"]), 415, "source", "expected an image")
    assert_error(edit(PORTRAIT, format="gif"), 422, "format")
    assert not list((server.work_dir / "edit").iterdir())
    assert_serving(server)


def test_results_expire_after_ttl(server: Server) -> None:
    kept = KEPT.get("ttl")
    if kept is None:
        pytest.skip("needs the finished job of test_two_jobs_queue_limit_results_and_ranges")
    job_id, finished = kept
    deadline = finished + TTL_S + 60
    while time.time() < deadline:
        if httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=AUTH, timeout=5).status_code == 404:
            break
        time.sleep(1.0)
    assert_error(httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=AUTH, timeout=5), 404)
    assert job_files(server, job_id) == []
    assert server.files() == []  # every job of this module is gone
    assert_serving(server)


def test_job_time_limit(engine, tmp_path: Path, inputs: dict[str, Path]) -> None:
    """In process, real engine: a job running past --job-timeout fails as timed out and leaves nothing."""
    from runtime.options import AnimationOptions
    from runtime.server.jobs import JobService
    from runtime.server.settings import Settings

    service = JobService(Settings(job_timeout=0.5, result_ttl=60), tmp_path)
    service.load(lambda: engine)
    service.start()
    try:
        with PORTRAIT.open("rb") as s, inputs["clip"].open("rb") as d:
            job = service.submit(s, d, AnimationOptions())
        version = -1
        deadline = time.monotonic() + 120
        while not job.final and time.monotonic() < deadline:
            version = service.wait_change(job, version, 1.0)
        assert job.state == "failed" and job.error.startswith("timed out"), (job.state, job.error)
        assert not job.folder.exists()
        assert service.expire(now=time.time() + 61) == 1
    finally:
        service.close()
