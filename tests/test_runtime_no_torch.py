"""The runtime and the animate CLI work on an install without PyTorch: nothing under runtime/ imports torch, even
lazily on the animation path. A child process makes `import torch` fail, imports every runtime module, prints the
CLI help, animates an image (warp graph swapped for a numpy stand-in to keep it fast) and builds the server
(runtime.server: REST API + Gradio page) and answers a request with it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import cv2

from tests.test_pipeline import SOURCE, driving_frames

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import importlib, pkgutil, sys
    sys.modules["torch"] = None  # any `import torch` now raises ImportError
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("torch could still be imported")
    import runtime
    names = sorted(m.name for m in pkgutil.walk_packages(runtime.__path__, "runtime."))
    for name in names:
        importlib.import_module(name)
    import cli
    assert cli.main(["--help"]) == 0
    for command in ("animate", "serve"):
        try:
            cli.main([command, "--help"])
        except SystemExit as exc:
            assert exc.code == 0
    import numpy as np
    from runtime.stages import Stages
    Stages.warp_decode = lambda self, f, s, d: np.full((len(d), 512, 512, 3), 90, np.uint8)
    models, source, driving, out = sys.argv[1:5]
    code = cli.main(["-s", source, "-d", driving, "-o", out, "--models", models, "--device", "cpu", "--quiet"])
    assert code == 0, code
    import pathlib, tempfile
    from runtime.server.main import build
    from runtime.server.settings import Settings
    from starlette.testclient import TestClient
    app, service = build(Settings(models=pathlib.Path(models), device="cpu"), pathlib.Path(tempfile.mkdtemp()))
    client = TestClient(app)  # no lifespan: models are not loaded, the routes answer
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 503
    assert "/v1/jobs" in client.get("/openapi.json").json()["paths"]
    assert client.get("/").status_code == 200  # the Gradio page
    assert sys.modules["torch"] is None
    loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    print("MODULES", len(names), "TORCH", loaded)
""")


def test_runtime_and_cli_run_without_torch(models_dir: Path, tmp_path: Path) -> None:
    driving = tmp_path / "pose.png"
    cv2.imwrite(str(driving), cv2.cvtColor(driving_frames()[0], cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(models_dir), str(SOURCE), str(driving), str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    count = int(last.split()[1])
    assert count >= 20, last  # every module of the package was imported (media/, faces/ included)
    assert last.endswith("TORCH ['torch']"), last  # only our None placeholder, no torch submodule
    assert sorted(p.name for p in out.iterdir()) == ["source_astronaut--pose.jpg", "source_astronaut--pose_concat.jpg"]
