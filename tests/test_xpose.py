"""xpose.onnx exported from the fixture xpose.pth: dynamic-size parity with our module, OpenVINO, manifest, text.

The graph is traced at 192×240 (about the smallest valid size: the two-stage selection needs ≥ 900 encoder
tokens) and checked at other sizes and aspect ratios, which proves H and W are not baked in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from export.checkpoints import ANIMAL_FAMILY
from export.xpose_export import XPOSE_INPUTS, XPOSE_OUTPUTS, probe_feeds
from runtime.manifest import ANIMAL_GRAPHS, XPOSE_GRAPH, XPOSE_TEXT, read_manifest, verify_models

TRACE = (192, 240)
CHECK = (200, 256)


@pytest.fixture(scope="module")
def xpose_export(xpose_weights: Path, tmp_path_factory: pytest.TempPathFactory):
    """xpose.onnx + xpose_text.npz + manifest written by the exporter (the same code path as cli.py export)."""
    from export.export_all import Exporter

    out = tmp_path_factory.mktemp("animals")
    exporter = Exporter(xpose_weights, out, family=ANIMAL_FAMILY)
    exporter.export_xpose(trace_size=TRACE, check_size=CHECK, slim=False)  # onnxslim: minutes, same numbers
    exporter.write_xpose_text()
    exporter.write_manifest()
    return out, exporter


@pytest.fixture(scope="module")
def module(xpose_weights: Path):
    from export.networks.xpose.loading import load_xpose

    return load_xpose(xpose_weights / ANIMAL_FAMILY / "xpose.pth")


def _run_module(model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        return [o.numpy() for o in model(*(torch.from_numpy(feeds[n]) for n, _ in XPOSE_INPUTS))]


def test_loader_reads_the_official_layout(xpose_weights: Path, module) -> None:
    model, skipped = module
    assert sorted(skipped) == ["clip_model.ln_final.weight", "clip_model.logit_scale",
                               "clip_model.positional_embedding", "clip_model.text_projection"]
    raw = torch.load(xpose_weights / ANIMAL_FAMILY / "xpose.pth", weights_only=True)["model"]
    assert all(k.startswith("module.") for k in raw)
    assert torch.equal(model.transformer.level_embed, raw["module.transformer.level_embed"])
    tied = raw["module.transformer.decoder.pose_embed.4.layers.0.weight"]
    assert torch.equal(model.pose_embed[2].layers[0].weight, tied)


def test_export_parity_is_recorded_at_another_size(xpose_export) -> None:
    out, exporter = xpose_export
    entry = read_manifest(out).models[XPOSE_GRAPH]
    assert (entry.parity["check_h"], entry.parity["check_w"]) == CHECK != TRACE
    assert entry.parity["relative"] <= 1e-3
    assert exporter.skipped_keys and all(k.startswith("clip_model.") for k in exporter.skipped_keys)
    assert [t.name for t in entry.inputs] == [n for n, _ in XPOSE_INPUTS]
    assert [t.name for t in entry.outputs] == [n for n, _ in XPOSE_OUTPUTS]
    image = entry.inputs[0]
    assert image.shape[:2] == (1, 3) and all(isinstance(d, str) for d in image.shape[2:])  # H, W dynamic
    assert [tuple(t.shape) for t in entry.outputs] == [(1, 50), (1, 50, 4), (1, 50, 68, 2)]
    assert entry.grid_sample == "4d"  # one graph for every execution provider, CoreML/OpenVINO included
    assert read_manifest(out).exporter["family"] == ANIMAL_FAMILY


@pytest.mark.parametrize(("size", "n"), [((256, 208), 68)], ids=["portrait-68pts"])
def test_graph_matches_module_at_new_size(xpose_export, module, size, n) -> None:
    from export.onnx_export import cpu_session

    out, _ = xpose_export
    feeds = probe_feeds(*size, n=n, seed=5)
    ref = _run_module(module[0], feeds)
    got = cpu_session(out / "xpose.onnx").run(None, feeds)
    for (name, shape), g, r in zip(XPOSE_OUTPUTS, got, ref, strict=True):
        assert g.shape == r.shape == shape, name
        assert np.abs(g - r).max() <= 1e-3 * np.abs(r).max(), name
    logits, boxes, keypoints = ref
    assert np.isfinite(logits).all() and logits.std() > 0.1  # a spread of scores, not all equal
    assert 0 <= boxes.min() and boxes.max() <= 1 and 0 <= keypoints.min() and keypoints.max() <= 1
    assert keypoints[0, :, :n].std() > 0.01


def test_openvino_runs_the_graph_like_ort(xpose_export) -> None:
    pytest.importorskip("openvino")
    from export.onnx_export import cpu_session
    from runtime.openvino_backend import OpenVinoRunner

    out, _ = xpose_export
    feeds = probe_feeds(*CHECK, n=9, seed=2)
    ref = cpu_session(out / "xpose.onnx").run(None, feeds)
    runner = OpenVinoRunner(XPOSE_GRAPH, out / "xpose.onnx", output_names=[n for n, _ in XPOSE_OUTPUTS])
    result = runner.compiled(feeds)
    got = [result[runner.compiled.output(i)] for i in range(len(XPOSE_OUTPUTS))]
    for (name, _), g, r in zip(XPOSE_OUTPUTS, got, ref, strict=True):
        assert np.abs(g - r).max() <= 1e-3 * np.abs(r).max(), name


def test_text_features_are_converted_from_the_official_pickles(xpose_export) -> None:
    from export.xpose_text import SHIPPED_TEXT, TEXT_KEYS

    out, _ = xpose_export
    entry = read_manifest(out).models[XPOSE_TEXT]
    assert entry.checkpoints["source"].startswith("converted from")
    with np.load(out / "xpose_text.npz") as got, np.load(SHIPPED_TEXT) as shipped:
        assert sorted(got.files) == sorted(TEXT_KEYS)
        for key in TEXT_KEYS:
            assert got[key].dtype == np.float32
            np.testing.assert_array_equal(got[key], shipped[key].astype(np.float32))
    verify_models(out, [XPOSE_GRAPH, XPOSE_TEXT])


def test_text_falls_back_to_the_shipped_copy_and_refuses_code(tmp_path: Path) -> None:
    import pickle

    from export.xpose_text import TextError, read_clip_pickle, text_arrays

    arrays, source = text_arrays(tmp_path)  # no pickles anywhere
    assert source.startswith("shipped copy") and arrays["kpt_text_embeddings_68"].shape == (68, 512)
    evil = tmp_path / "clip_embedding_9.pkl"
    evil.write_bytes(pickle.dumps({"x": print}))
    with pytest.raises(TextError, match="refusing to unpickle builtins.print"):
        read_clip_pickle(evil, 9)
    with pytest.raises(TextError, match="lacks clip_embedding_68.pkl"):
        text_arrays(tmp_path, xpose_text=tmp_path)


def test_animal_family_layout_and_required_graphs() -> None:
    from export.checkpoints import relative_checkpoint
    from export.export_all import default_out

    warping = "liveportrait_animals/base_models_v1.1/warping_module.pth"
    assert relative_checkpoint("warping_module", ANIMAL_FAMILY) == warping
    stitching = "liveportrait/retargeting_models/stitching_retargeting_module.pth"
    assert relative_checkpoint("stitching", ANIMAL_FAMILY) == stitching
    assert "eye_retargeting" not in ANIMAL_GRAPHS and "lip_retargeting" not in ANIMAL_GRAPHS
    assert default_out(ANIMAL_FAMILY) == Path("models_onnx/liveportrait_animals")
    assert default_out("liveportrait") == Path("models_onnx")


def test_bench_xpose_stage_times_both_engines(xpose_export, xpose_weights: Path) -> None:
    import argparse
    import types

    from runtime import bench

    out, _ = xpose_export
    args = argparse.Namespace(xpose_size="192x240", xpose_models=out, threads=0, no_torch=False,
                              weights=xpose_weights, warmup=0, repeats=1)
    notes: list[str] = []
    (row,) = bench._xpose_rows(types.SimpleNamespace(device="cpu"), args, notes)
    assert notes == [] and row.stage == "xpose" and "192x240" in row.note
    assert len(row.ours) == len(row.torch) == 1 and row.ours[0] > 0 and row.torch[0] > 0
    missing = argparse.Namespace(**(vars(args) | {"xpose_models": out / "nowhere"}))
    assert bench._xpose_rows(types.SimpleNamespace(device="cpu"), missing, notes) == []
    assert notes and notes[0].startswith("xpose skipped")
