"""Fixed-batch runs from fixed buffers (the CUDA-graph path), exercised on the CPU EP with the exported graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from runtime.providers import resolve_device
from runtime.sessions import GraphRunner, ModelSet
from runtime.stages import SourceFeature, Stages
from runtime.static_batch import StaticBatchRunner


def _stitching(models_dir: Path) -> GraphRunner:
    return GraphRunner("stitching", models_dir / "stitching.onnx", resolve_device("cpu"))


def test_full_and_padded_batches_match_the_plain_runner(models_dir: Path) -> None:
    plain = _stitching(models_dir)
    static = StaticBatchRunner(_stitching(models_dir), batch=4)
    rng = np.random.default_rng(0)
    for n in (4, 3, 1, 4):
        feat = rng.standard_normal((n, 126)).astype(np.float32)
        got = static.run({"feat": feat})["delta"]
        assert got.shape == (n, 65)
        np.testing.assert_allclose(got, plain.run({"feat": feat})["delta"], rtol=1e-6, atol=1e-7)


def test_kept_output_is_the_fixed_buffer_only_for_full_batches(models_dir: Path) -> None:
    static = StaticBatchRunner(_stitching(models_dir), batch=2)
    feat = np.ones((2, 126), np.float32)
    first = static.run({"feat": feat}, keep_on_device=("delta",))["delta"]
    assert first is static.output_buffer("delta")
    partial = static.run({"feat": feat[:1]}, keep_on_device=("delta",))["delta"]
    assert isinstance(partial, np.ndarray) and partial.shape == (1, 65)


def test_a_device_feed_seen_before_is_not_copied_again(models_dir: Path) -> None:
    """The source feature is uploaded once: the same OrtValue object is trusted to hold the same data."""
    static = StaticBatchRunner(_stitching(models_dir), batch=2)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 2, 126)).astype(np.float32)
    value = ort.OrtValue.ortvalue_from_numpy(a)
    out_a = static.run({"feat": value})["delta"]
    value.update_inplace(b)  # same object, new contents: not reloaded
    np.testing.assert_array_equal(static.run({"feat": value})["delta"], out_a)
    out_b = static.run({"feat": ort.OrtValue.ortvalue_from_numpy(b)})["delta"]  # a new object is loaded
    assert not np.allclose(out_b, out_a)


def test_batches_that_do_not_fit_are_refused(models_dir: Path) -> None:
    static = StaticBatchRunner(_stitching(models_dir), batch=2)
    with pytest.raises(ValueError, match="static batch of 2"):
        static.run({"feat": np.zeros((3, 126), np.float32)})
    with pytest.raises(ValueError, match="missing inputs"):
        static.run({})
    with pytest.raises(ValueError, match="at least 1"):
        StaticBatchRunner(_stitching(models_dir), batch=0)


def test_warping_through_static_buffers_matches_the_plain_path(models_dir: Path) -> None:
    """The real warping + decoder graph through ModelSet(static_batch=1): fixed buffers, same image (padding is
    covered on the small graph above; a padded warping batch would cost another 10 s frame on this CPU)."""
    rng = np.random.default_rng(2)
    feature = SourceFeature(rng.standard_normal((1, 32, 16, 64, 64)).astype(np.float32) * 0.5)
    kp_source = (rng.random((1, 21, 3)).astype(np.float32) - 0.5) * 0.6
    kp_driving = kp_source + rng.standard_normal((1, 21, 3)).astype(np.float32) * 0.02
    static_models = ModelSet(models_dir, device="cpu", check_hash=False, static_batch=1)
    assert isinstance(static_models.runner("warping_spade"), StaticBatchRunner)
    got = Stages(static_models).warp_decode(feature, kp_source, kp_driving)
    want = Stages(ModelSet(models_dir, device="cpu", check_hash=False)).warp_decode(feature, kp_source, kp_driving)
    assert got.shape == want.shape == (1, 512, 512, 3)
    assert int(np.abs(got.astype(int) - want.astype(int)).max()) <= 1


def test_cuda_graphs_need_the_cuda_device(models_dir: Path) -> None:
    from runtime.api import LivePortrait

    with pytest.raises(ValueError, match="CUDA graphs need the CUDA device"):
        LivePortrait(models_dir, device="cpu", cuda_graph_batch=4)
