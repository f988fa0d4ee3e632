"""A real `cli.py serve` subprocess for the server tests: free port, bounded start-up wait, always stopped."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from runtime.media import VideoReader, VideoWriter

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "tests" / "assets"
PORTRAIT = ASSETS / "source_astronaut.png"
START_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_clip(path: Path, frames: int = 2, fps: int = 25) -> Path:
    """The first frames of the test driving video, re-encoded with the project's writer."""
    with VideoReader(ASSETS / "driving_carphone.mp4") as reader, VideoWriter(path, fps) as writer:
        for frame in itertools.islice(reader, frames):
            writer.write(frame)
    return path


@dataclass
class Server:
    """A running server: its URL, work folder and log; `stop()` ends it (terminate, then kill)."""

    proc: subprocess.Popen
    url: str
    work_dir: Path
    log_path: Path
    started_s: float = 0.0

    def log(self, tail: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def files(self) -> list[Path]:
        """Every file under the job folders (results of finished jobs included)."""
        return sorted(p for p in (self.work_dir / "jobs").rglob("*") if p.is_file())

    def rss_kb(self) -> dict[str, int]:
        """VmRSS / VmHWM of the server process, from /proc (Linux)."""
        return process_memory_kb(self.proc.pid)


def process_memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process in kB, from /proc/<pid>/status (Linux)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def start_server(models_dir: Path, work_dir: Path, *flags: str, env: dict[str, str] | None = None) -> Server:
    """Start `python cli.py serve` on 127.0.0.1 and a free port; wait (bounded) until /readyz says ready."""
    port = free_port()
    work_dir.mkdir(parents=True, exist_ok=True)
    log_path = work_dir.parent / f"server-{port}.log"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1", **(env or {}))
    cmd = [sys.executable, "cli.py", "serve", "--host", "127.0.0.1", "--port", str(port), "--models",
           str(models_dir), "--device", "cpu", "--work-dir", str(work_dir), *flags]
    start = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = Server(proc, f"http://127.0.0.1:{port}", work_dir, log_path)
    deadline = start + START_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()}")
            try:
                if httpx.get(server.url + "/readyz", timeout=2.0).status_code == 200:
                    server.started_s = time.monotonic() - start
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"server not ready after {START_TIMEOUT_S:.0f} s:\n{server.log()}")
    except BaseException:
        server.stop()
        raise
