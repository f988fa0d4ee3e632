"""The Mac/Intel path on the exported graphs: CoreML takes each graph whole; OpenVINO runs them with parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export.graphs import GRAPH_SPECS
from runtime.coreml_check import check_coreml_compat, format_report
from runtime.manifest import read_manifest
from runtime.sessions import pick_variant

MAC_PATH = {
    "appearance_feature_extractor.coreml": "appearance_feature_extractor",
    "motion_extractor.coreml": "motion_extractor",
    "warping_spade.gs4d": "warping_spade",
    "stitching": "stitching",
    "eye_retargeting": "eye_retargeting",
    "lip_retargeting": "lip_retargeting",
}


@pytest.mark.parametrize("key", list(MAC_PATH))
def test_coreml_takes_every_mac_graph_whole(models_with_variants: Path, key: str) -> None:
    report = check_coreml_compat(models_with_variants / f"{key}.onnx")
    assert report.partitions == 1 and report.coverage == 1.0, format_report(report)


def test_coreml_check_rejects_native_warping(models_with_variants: Path) -> None:
    """The native graph's 5-D GridSample (and 3-D convs) must be reported: the check can fail."""
    report = check_coreml_compat(models_with_variants / "warping_spade.onnx")
    assert not report.fully_supported and report.partitions > 1
    assert "GridSample" in report.unsupported_by_op()


def test_coreml_device_picks_mac_path(models_with_variants: Path) -> None:
    manifest = read_manifest(models_with_variants)
    chosen = {g: pick_variant(manifest, g, "coreml", "fp32") for g in set(MAC_PATH.values())}
    assert chosen == {g: k for k, g in MAC_PATH.items()}


@pytest.mark.parametrize("key", list(MAC_PATH))
def test_openvino_runs_mac_graphs_with_parity(models_with_variants: Path, exported, key: str) -> None:
    """OpenVINO (4-D GridSample only, like CoreML) loads each Mac-path graph and matches onnxruntime CPU."""
    from runtime.openvino_backend import OpenVinoRunner

    _, exporter = exported
    graph = MAC_PATH[key]
    spec = GRAPH_SPECS[graph]
    # the fp32 graph's onnxruntime outputs, kept by the exporter from its parity check, and their inputs
    feeds, reference = exporter.reference_feeds(graph), exporter.reference(graph)
    names = [n for n, _ in spec.outputs]
    got = OpenVinoRunner(key, models_with_variants / f"{key}.onnx", output_names=names).run(feeds)
    for (name, _), ref in zip(spec.outputs, reference, strict=True):
        scale = max(float(np.abs(ref).max()), 1e-6)
        assert float(np.abs(got[name] - ref).max()) <= 1e-3 * scale, name


def test_doctor_places_every_exported_graph_on_cpu(models_dir: Path) -> None:
    """`cli.py doctor --json` on the real exported folder: CPUExecutionProvider runs 100 % of every graph."""
    from runtime import doctor

    report = doctor.collect(models_dir, devices=["cpu"])
    graphs = report["providers"]["CPUExecutionProvider"]["graphs"]
    manifest = read_manifest(models_dir)
    assert set(graphs) == set(manifest.models)
    for key, result in graphs.items():
        assert result["share"] == 1.0 and result["placed"] == result["nodes"] > 0, key
        assert result["ms"] > 0
    assert all(entry["ok"] for entry in report["models"]["entries"].values())
    assert not [p for p in report["problems"] if p["level"] == "error"]


def test_openvino_device_runs_split_warping_with_bf16_decoder(models_with_variants: Path, exported) -> None:
    """--device openvino (what auto runs on bf16 CPUs): warping (fp32 coordinates) + SPADE decoder (bf16 where the
    CPU has it) ≥ 45 dB PSNR from the native fp32 graph (48.9 dB measured on AVX512-BF16); face graphs still run
    through onnxruntime sessions."""
    from export.fp16 import psnr
    from runtime.cpu_route import BF16_PSNR_DB
    from runtime.openvino_backend import OpenVinoRunner
    from runtime.sessions import ModelSet
    from runtime.stages import SourceFeature, Stages, to_uint8_images

    _, exporter = exported
    models = ModelSet(models_with_variants, device="openvino")
    assert models.split and models.keys["warping"] == "warping.gs4d"
    expected = "bf16" if OpenVinoRunner.supports_bf16() else "f32"
    assert models.openvino_precision("spade_decoder") == expected
    assert models.openvino_precision("warping") == "f32"
    from runtime.doctor import _ov_precision

    assert _ov_precision(models.runner("spade_decoder")) == expected  # what OpenVINO really compiled
    feeds = exporter.reference_feeds("warping_spade")
    ref = exporter.reference("warping_spade")[0]  # the native fp32 graph on onnxruntime CPU, float image
    warped = models.run("warping", feeds)["warped"]
    got = models.run("spade_decoder", {"warped": warped})["image"]
    assert got.shape == ref.shape == (1, 3, 512, 512)
    value = psnr(got, ref)
    print(f"OpenVINO {expected} decoder vs fp32: {value:.2f} dB")
    assert value >= 45.0
    if expected == "bf16":
        assert abs(value - BF16_PSNR_DB) < 3.0  # the figure cpu_route quotes is this test's
    image = Stages(models).warp_decode(SourceFeature(feeds["feature_3d"]), feeds["kp_source"], feeds["kp_driving"])
    assert image.shape == (1, 512, 512, 3) and psnr(image, to_uint8_images(ref), peak=255.0) >= 45.0
    assert hasattr(models.runner("det_10g"), "session")
