"""Jobs/minute of `cli.py serve --ray` with N replicas on the same job set; Ray start and replica memory too.

    python benchmarks/ray_serve_throughput.py --models models_onnx --jobs 4 --frames 2 \\
        --config 1x2 --config 2x1 --out benchmarks/ray-serve-2core.json

Each --config is REPLICASxCPUS_PER_REPLICA; 0xW is the baseline, plain `cli.py serve --workers W`. Run from the
repository root; binds 127.0.0.1 only, and the server (with its local Ray) is stopped by SIGTERM, then killed,
whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.server_process import PORTRAIT, process_memory_kb, start_server, tiny_clip  # noqa: E402


def run_config(models: Path, replicas: int, cpus: float, jobs: int, frames: int, folder: Path) -> dict:
    clip = tiny_clip(folder / f"clip{frames}.mp4", frames=frames)
    if replicas:
        flags = ["--ray", "--replicas", str(replicas), "--cpus-per-replica", str(cpus), "--ray-cpus",
                 str(os.cpu_count())]
    else:  # baseline: plain `cli.py serve`, `cpus` worker threads over one in-process engine
        flags = ["--workers", str(int(cpus))]
    srv = start_server(models, folder / f"work-{replicas}x{cpus:g}", *flags, "--no-ui", "--max-queue", str(jobs),
                       env={"RAY_USAGE_STATS_ENABLED": "0"})
    try:
        found = re.search(r"RAY_TIMINGS ray_init_s=([\d.]+) deploy_s=([\d.]+)", srv.log_path.read_text())
        for _ in range(20 if replicas else 0):  # the line follows serve.run, which may return after /readyz is 200
            if found:
                break
            time.sleep(0.5)
            found = re.search(r"RAY_TIMINGS ray_init_s=([\d.]+) deploy_s=([\d.]+)", srv.log_path.read_text())

        def submit(_: int) -> str:
            with PORTRAIT.open("rb") as s, clip.open("rb") as d:
                response = httpx.post(srv.url + "/v1/jobs", files={"source": ("p.png", s), "driving": ("d.mp4", d)},
                                      data={"write_concat": "false"}, timeout=60)
            response.raise_for_status()
            return response.json()["id"]

        start = time.monotonic()
        with ThreadPoolExecutor(jobs) as pool:
            ids = list(pool.map(submit, range(jobs)))
        bodies: dict[str, dict] = {}
        deadline = start + 900
        while len(bodies) < jobs and time.monotonic() < deadline:
            for job_id in ids:
                if job_id not in bodies:
                    body = httpx.get(f"{srv.url}/v1/jobs/{job_id}", timeout=10).json()
                    if body["state"] in ("done", "failed", "cancelled"):
                        bodies[job_id] = body
            time.sleep(0.5)
        elapsed = time.monotonic() - start
        pids = sorted({b["runner"]["pid"] for b in bodies.values() if b.get("runner")} - {srv.proc.pid})
        return {"replicas": replicas, "cpus_per_replica": cpus, "jobs": jobs, "frames_per_job": frames,
                "states": sorted(b["state"] for b in bodies.values()), "seconds": round(elapsed, 1),
                "jobs_per_minute": round(jobs / elapsed * 60, 2), "server_ready_s": round(srv.started_s, 1),
                "ray_init_s": float(found.group(1)) if found else None,
                "deploy_s": float(found.group(2)) if found else None,
                "replica_memory_kb": {str(pid): process_memory_kb(pid) for pid in pids},
                "ingress_driver_memory_kb": process_memory_kb(srv.proc.pid),
                "jobs_per_replica": {str(pid): sum(b["runner"]["pid"] == pid for b in bodies.values()) for pid in pids},
                "load_average": os.getloadavg()}
    finally:
        if srv.proc.poll() is None:
            srv.proc.send_signal(signal.SIGTERM)
            try:
                srv.proc.wait(timeout=60)
            except Exception:  # noqa: BLE001 - past the bound: kill
                srv.proc.kill()
                srv.proc.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models_onnx"))
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--config", action="append", default=None, help="REPLICASxCPUS, e.g. 2x1 (repeatable)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="lp-ray-bench-") as tmp:
        for config in args.config or ["1x2", "2x1"]:
            replicas, cpus = config.split("x")
            result = run_config(args.models.absolute(), int(replicas), float(cpus), args.jobs, args.frames, Path(tmp))
            print(json.dumps(result), flush=True)
            results.append(result)
    if args.out:
        args.out.write_text(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
