"""Shared, session-scoped fixtures: a fixture weight tree and the models exported from it (once per run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.manifest import CORE_GRAPHS

ASSETS = Path(__file__).parent / "assets"


@pytest.fixture(scope="session")
def fixture_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete pretrained_weights/ tree with random weights in the official formats."""
    from export.fixtures import write_fixture_tree

    return write_fixture_tree(tmp_path_factory.mktemp("weights"), seed=0)


@pytest.fixture(scope="session")
def exported(fixture_weights: Path, tmp_path_factory: pytest.TempPathFactory):
    """The fp32 contract graphs + face graphs + manifest, exported once; returns (folder, Exporter)."""
    from export.export_all import Exporter

    out = tmp_path_factory.mktemp("models_onnx")
    exporter = Exporter(fixture_weights, out)
    for graph in CORE_GRAPHS:
        exporter.export_fp32(graph)
    exporter.copy_face_graphs()
    exporter.write_manifest()
    return out, exporter


@pytest.fixture(scope="session")
def models_dir(exported) -> Path:
    """Folder with the exported fp32 graphs and manifest.json."""
    return exported[0]


@pytest.fixture(scope="session")
def models_with_variants(exported) -> Path:
    """The folder plus warping_spade.gs4d and .wino, the split halves, *.coreml and fp16 variants (once, on demand)."""
    out, exporter = exported
    if "warping_spade.gs4d" not in exporter.entries:
        exporter.export_gs4d(exporter.fp32_model("warping_spade"))
        exporter.export_winograd(exporter.fp32_model("warping_spade"))
        exporter.export_split()
        for graph in ("appearance_feature_extractor", "motion_extractor"):
            exporter.export_coreml(graph)
        for graph in ("appearance_feature_extractor", "motion_extractor", "warping_spade"):
            exporter.export_fp16(graph, graph, exporter.fp32_model(graph))
        exporter.write_manifest()
    return out


@pytest.fixture(scope="module")
def engine(models_dir: Path):
    """A CPU LivePortrait engine on the exported fixture models (sessions reused within a test module)."""
    from runtime.api import LivePortrait

    return LivePortrait(models_dir, device="cpu")


@pytest.fixture(scope="session")
def xpose_weights(fixture_weights: Path) -> Path:
    """The fixture tree plus liveportrait_animals/xpose.pth and the CLIP text pickles (written once, on demand:
    ~260 MB, so only sessions that run X-Pose tests pay for it)."""
    from export.fixtures import FAMILY_SEED_OFFSETS
    from export.xpose_fixture import XPOSE_CHECKPOINT, write_xpose_checkpoint

    family = fixture_weights / "liveportrait_animals"
    if not (family / XPOSE_CHECKPOINT).is_file():
        write_xpose_checkpoint(family, seed=FAMILY_SEED_OFFSETS["liveportrait_animals"])
    return fixture_weights
