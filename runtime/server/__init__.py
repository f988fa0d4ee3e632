"""`cli.py serve`: the REST API and the web page over one job service, in one process.

This package uses only the engine's public API (runtime.api, runtime.editing, runtime.options, runtime.media);
nothing in the engine imports it. Heavy imports (FastAPI, Gradio) happen in `run`, not at import time.
"""

from __future__ import annotations

import argparse

from .settings import add_arguments as _add_settings
from .settings import from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The serve flags (each also an LP_* environment variable)."""
    _add_settings(parser)


def run(args: argparse.Namespace) -> int:
    """Parse settings, make sure models exist, then serve until interrupted."""
    try:
        settings = from_args(args)
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    if settings.ray:
        try:
            import ray  # noqa: F401
        except ImportError:
            print('error: --ray needs Ray Serve: pip install -e ".[ray]"')
            return 2
        from .ray_app import serve_ray

        return serve_ray(settings)
    from .main import serve

    return serve(settings)


__all__ = ["add_arguments", "run"]
