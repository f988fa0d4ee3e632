"""OpenVINO (CPU plugin) on the grid-sample graphs: the 4-D route runs, the native 5-D graph is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_gridsample4d import export_module, export_native, realistic_grid, reference

ov = pytest.importorskip("openvino")
ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize(("batch", "channels"), [(2, 32), (44, 4)], ids=["warping-n2", "dense-motion-n2"])
def test_gs4d_graph_runs_on_openvino_cpu_like_ort(tmp_path: Path, batch: int, channels: int) -> None:
    path = export_module(tmp_path / "gs4d.onnx", channels=channels)
    compiled = ov.Core().compile_model(ov.Core().read_model(str(path)), "CPU")
    torch.manual_seed(batch)
    volume = torch.randn(batch, channels, 16, 64, 64).numpy()
    grid = realistic_grid(batch, 16, 64, 64, seed=batch).numpy()
    got = compiled([volume, grid])[compiled.output(0)]
    (ort_out,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input": volume, "grid": grid}
    )
    assert got.shape == ort_out.shape == (batch, channels, 16, 64, 64)
    scale = np.abs(ort_out).max()
    assert np.abs(got - ort_out).max() <= 1e-3 * scale
    truth = reference(torch.from_numpy(volume), torch.from_numpy(grid)).numpy()
    assert np.abs(got - truth).max() <= 1e-3 * scale


def test_native_5d_grid_sample_is_refused_by_openvino(tmp_path: Path) -> None:
    # Recorded behaviour (OpenVINO 2026.4): the ONNX frontend rejects 5-D GridSample when reading the model,
    # "GridSample is only supported for 4D input tensors. Got rank: 5". This is why the gs4d variant exists.
    path = export_native(tmp_path / "gs5d.onnx", channels=4)
    with pytest.raises(RuntimeError, match="GridSample"):
        ov.Core().compile_model(ov.Core().read_model(str(path)), "CPU")


def test_runner_gives_each_thread_its_own_infer_request(tmp_path: Path) -> None:
    """`cli.py serve --workers 2` calls one engine from two threads; auto may now pick OpenVINO on bf16 CPUs."""
    import threading

    from onnx import TensorProto, helper, save

    from runtime.openvino_backend import OpenVinoRunner

    graph = helper.make_graph([helper.make_node("Mul", ["x", "x"], ["y"])], "square",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), tmp_path / "sq.onnx")
    runner = OpenVinoRunner("square", tmp_path / "sq.onnx", output_names=["y"])
    results: dict[int, list[bool]] = {}

    def work(seed: int) -> None:
        x = np.random.default_rng(seed).standard_normal((8, 64)).astype(np.float32)
        results[seed] = [bool(np.allclose(runner.run({"x": x + i})["y"], (x + i) ** 2, rtol=1e-5)) for i in range(50)]

    threads = [threading.Thread(target=work, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 1, 2] and all(all(r) for r in results.values())
    requests = []
    for _ in range(2):
        t = threading.Thread(target=lambda: requests.append(runner.request))
        t.start()
        t.join()
    assert requests[0] is not requests[1] and runner.request is runner.request
