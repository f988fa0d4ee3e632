"""Server configuration: one table of settings, each a `--flag` and an `LP_<NAME>` environment variable.

A flag beats its environment variable, which beats the default, so a deployment can be configured entirely from the
environment (containers) while a developer overrides one value on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "LP_"
DEVICES = ("auto", "cuda", "tensorrt", "coreml", "openvino", "directml", "cpu")


@dataclass(frozen=True)
class Settings:
    """Everything `cli.py serve` can be told; the field names are the flag names with dashes."""

    host: str = field(default="127.0.0.1", metadata={"help": "interface to bind (127.0.0.1 = this machine only)"})
    port: int = field(default=8890, metadata={"help": "TCP port"})
    models: Path = field(default=Path("models_onnx"), metadata={"help": "folder of exported graphs"})
    weights: Path = field(default=Path("pretrained_weights"),
                          metadata={"help": "checkpoints to export from on the first run (no manifest in --models)"})
    auto_export: bool = field(default=True, metadata={"help": "export on the first run when the weights are there"})
    device: str = field(default="auto", metadata={"help": "execution device", "choices": DEVICES})
    precision: str = field(default="auto", metadata={"help": "graph precision", "choices": ("auto", "fp32", "fp16")})
    threads: int = field(default=0, metadata={"help": "CPU threads per graph (0 = onnxruntime's choice)"})
    workers: int = field(default=1, metadata={"help": "animation jobs running at once on the device"})
    batch_size: int = field(default=0, metadata={"help": "driving frames per graph call (0 = per-device default)"})
    max_queue: int = field(default=8, metadata={"help": "jobs allowed to wait; more are refused with 429"})
    max_upload_mb: float = field(default=200.0, metadata={"help": "largest request body in MiB (413 above)"})
    job_timeout: float = field(default=900.0, metadata={"help": "seconds a job may run before it fails as timed out"})
    result_ttl: float = field(default=3600.0, metadata={"help": "seconds finished jobs and their files are kept"})
    editor_cache: int = field(default=4, metadata={"help": "portrait editors kept (one per uploaded photo)"})
    work_dir: Path | None = field(default=None,
                                  metadata={"help": "folder for uploads and results (default: a fresh temp folder)"})
    api_key: str | None = field(default=None, metadata={"help": "require this key on /v1 (Bearer or X-API-Key)"})
    cors_origin: tuple[str, ...] = field(default=(), metadata={"help": "allow this browser origin (repeatable)"})
    ui: bool = field(default=True, metadata={"help": "serve the web page at / (not under --ray)"})
    ray: bool = field(default=False, metadata={"help": "run jobs on Ray Serve engine replicas (pip extra [ray])"})
    replicas: int = field(default=1, metadata={"help": "--ray: engine replicas (each loads the models once)"})
    max_replicas: int = field(default=0, metadata={
        "help": "--ray: autoscale between --replicas and this on queue length (0 = fixed --replicas)"})
    gpus_per_replica: float = field(default=-1.0, metadata={
        "help": "--ray: GPUs per replica (1, a fraction to pack a GPU, 0 = CPU; -1 = 1 for cuda/tensorrt, else 0)"})
    cpus_per_replica: float = field(default=1.0, metadata={"help": "--ray: CPUs reserved per replica"})
    ray_address: str | None = field(default=None, metadata={
        "help": "--ray: join this running cluster (e.g. auto) instead of starting a local Ray"})
    ray_cpus: int = field(default=0, metadata={"help": "--ray local start: CPUs Ray may schedule (0 = all)"})

    def __post_init__(self) -> None:
        if self.max_replicas and self.max_replicas < self.replicas:
            raise ValueError(f"max_replicas must be 0 or >= replicas ({self.replicas}), got {self.max_replicas!r}")
        if float(self.cpus_per_replica) < 0 or float(self.gpus_per_replica) < -1:
            raise ValueError("cpus_per_replica must be >= 0 and gpus_per_replica >= 0 (or -1 = by device)")
        for name in ("workers", "max_queue", "editor_cache", "replicas"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("max_upload_mb", "job_timeout", "result_ttl"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _kind(f: dataclasses.Field) -> type:
    """The scalar type a field's text is parsed into (Path | None → Path, tuple[str, ...] → str)."""
    text = str(f.type)
    for kind in (bool, int, float):
        if text == kind.__name__:
            return kind
    if text.startswith("Path"):
        return Path
    return str


def _parse(f: dataclasses.Field, text: str) -> Any:
    kind = _kind(f)
    if kind is bool:
        lowered = text.strip().lower()
        if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError(f"{env_name(f.name)}={text!r}: expected true or false")
        return lowered in ("1", "true", "yes", "on")
    if f.name == "cors_origin":
        return tuple(part.strip() for part in text.split(",") if part.strip())
    try:
        return kind(text)
    except ValueError as exc:
        raise ValueError(f"{env_name(f.name)}={text!r}: expected {kind.__name__}") from exc


def env_defaults(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Field values given by LP_* environment variables."""
    environ = dict(os.environ if environ is None else environ)
    return {f.name: _parse(f, environ[env_name(f.name)])
            for f in dataclasses.fields(Settings) if env_name(f.name) in environ}


def add_arguments(parser: argparse.ArgumentParser, environ: dict[str, str] | None = None) -> None:
    """One flag per Settings field; its default is the environment's value when LP_<NAME> is set."""
    from_env = env_defaults(environ)
    for f in dataclasses.fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        default = from_env.get(f.name, f.default)
        text = f"{f.metadata['help']} (env {env_name(f.name)}"
        if f.name == "api_key":
            text += "; prefer the environment: flags show in the process list)"
        else:
            text += f"; default: {default if default not in (None, ()) else 'none'})"
        kind = _kind(f)
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default, help=text)
        elif f.name == "cors_origin":
            parser.add_argument(flag, dest=f.name, action="append", default=None, help=text)
        else:
            parser.add_argument(flag, dest=f.name, type=kind, default=default, choices=f.metadata.get("choices"),
                                help=text)
    parser.set_defaults(_cors_env=from_env.get("cors_origin", ()))


def from_args(args: argparse.Namespace) -> Settings:
    """Settings from parsed flags (validated: a bad value raises ValueError naming it)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Settings)}
    values["cors_origin"] = tuple(values["cors_origin"] or getattr(args, "_cors_env", ()))
    if values["api_key"] == "":
        values["api_key"] = None
    return Settings(**values)
