"""GPU checks (skipped without onnxruntime-gpu and a CUDA device): no node on the CPU, fp16 numerics at batch 8,
the source feature kept on the GPU, and CUDA-graph replay equal to plain runs.

On the GPU machine, `benchmarks/gpu_session.sh` exports the models once and points LIVEPORTRAIT_GPU_MODELS at them;
otherwise the session fixtures export them here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from export.fp16 import psnr
from runtime.manifest import read_manifest
from runtime.providers import resolve_device
from runtime.sessions import GraphRunner, ModelSet
from runtime.stages import SourceFeature, Stages

pytestmark = pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(),
                                reason="needs onnxruntime-gpu and an NVIDIA GPU")


@pytest.fixture(scope="module")
def gpu_models(request: pytest.FixtureRequest) -> Path:
    folder = os.environ.get("LIVEPORTRAIT_GPU_MODELS")
    return Path(folder) if folder else request.getfixturevalue("models_with_variants")


def _warp_inputs(batch: int, seed: int = 0) -> tuple[SourceFeature, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    feature = SourceFeature(rng.standard_normal((1, 32, 16, 64, 64)).astype(np.float32) * 0.5)
    kp_source = (rng.random((1, 21, 3)).astype(np.float32) - 0.5) * 0.6
    kp_driving = kp_source + rng.standard_normal((batch, 21, 3)).astype(np.float32) * 0.03
    return feature, kp_source, kp_driving


@pytest.mark.parametrize("key", ["appearance_feature_extractor.fp16", "motion_extractor.fp16", "warping_spade.fp16",
                                 "warping_spade", "stitching", "eye_retargeting", "lip_retargeting", "paste_back"])
def test_every_node_runs_on_cuda(gpu_models: Path, key: str) -> None:
    """CPU fallback disabled: a node CUDA cannot run fails session creation instead of hiding on the CPU."""
    entry = read_manifest(gpu_models).models[key]
    runner = GraphRunner(key, gpu_models / entry.file, resolve_device("cuda"), strict_device=True)
    assert runner.placement()[0] == "CUDAExecutionProvider"
    assert "CPUExecutionProvider" not in runner.placement()


def test_fp16_warping_at_batch_8_stays_close_to_fp32(gpu_models: Path) -> None:
    """A plain fp16 export diverged from torch at batch 8; ours keeps GridSample and its grid in fp32."""
    feature, kp_source, kp_driving = _warp_inputs(8)
    feeds = {"feature_3d": feature.batch(8), "kp_driving": kp_driving, "kp_source": np.repeat(kp_source, 8, axis=0)}
    ref = ModelSet(gpu_models, device="cuda", precision="fp32", check_hash=False).run("warping_spade", feeds)["image"]
    got = ModelSet(gpu_models, device="cuda", precision="fp16", check_hash=False).run("warping_spade", feeds)["image"]
    for i in range(8):
        assert psnr(ref[i], got[i].astype(np.float32)) >= 35.0, f"frame {i}"


def test_source_feature_stays_on_the_gpu(gpu_models: Path) -> None:
    stages = Stages(ModelSet(gpu_models, device="cuda", check_hash=False))
    feature = stages.appearance(np.zeros((256, 256, 3), np.uint8))
    assert feature.on_device and feature.value.device_name().lower() == "cuda"


def test_cuda_graph_replays_match_plain_runs(gpu_models: Path) -> None:
    plain = Stages(ModelSet(gpu_models, device="cuda", precision="fp16", check_hash=False))
    captured = Stages(ModelSet(gpu_models, device="cuda", precision="fp16", check_hash=False, static_batch=4))
    for seed, batch in ((1, 4), (2, 4), (3, 3)):  # replays with new keypoints, then a padded batch
        feature, kp_source, kp_driving = _warp_inputs(batch, seed)
        want = plain.warp_decode(feature, kp_source, kp_driving)
        got = captured.warp_decode(feature, kp_source, kp_driving)
        assert int(np.abs(got.astype(int) - want.astype(int)).max()) <= 1
