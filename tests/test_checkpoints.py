"""Strict checkpoint loading: every mismatch must fail loudly and name what went wrong."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from export.checkpoints import CheckpointError, checkpoint_sha256, load_all, load_network
from export.fixtures import FAMILY_SEED_OFFSETS, ensure_fixture_tree, random_state_dict
from export.networks import NETWORKS

APPEARANCE = "liveportrait/base_models/appearance_feature_extractor.pth"
STITCHING = "liveportrait/retargeting_models/stitching_retargeting_module.pth"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_fixture_tree(tmp_path_factory.getbasetemp() / "fixture_weights_seed0", seed=0, stand_ins=False)


def _single(tmp_path: Path, rel: str, payload: object) -> Path:
    """A weights root holding only one (possibly tampered) checkpoint."""
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return tmp_path


def test_both_families_load_strictly_with_the_written_values(tree: Path) -> None:
    for family, offset in FAMILY_SEED_OFFSETS.items():
        nets = load_all(tree, family)
        assert set(nets) == set(NETWORKS)
        assert all(not n.training for n in nets.values())
        for name in ("appearance_feature_extractor", "eye"):
            # the animal family uses the human stitching/retargeting module, as upstream
            want = random_state_dict(name, offset if name != "eye" else 0)
            got = nets[name].state_dict()
            assert all(torch.equal(got[k], want[k]) for k in want), f"{family}/{name} values differ"


def test_missing_file_explains_where_weights_go(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as err:
        load_network("warping_module", tmp_path)
    msg = str(err.value)
    assert "warping_module.pth" in msg and "pretrained_weights" in msg and "python -m export.fixtures" in msg


def test_missing_key_is_named(tmp_path: Path) -> None:
    sd = random_state_dict("appearance_feature_extractor")
    del sd["resblocks_3d.3dr4.norm2.running_var"]
    root = _single(tmp_path, APPEARANCE, sd)
    with pytest.raises(CheckpointError, match=r"missing key\(s\): resblocks_3d\.3dr4\.norm2\.running_var") as err:
        load_network("appearance_feature_extractor", root)
    assert "appearance_feature_extractor.pth" in str(err.value)


def test_unexpected_key_is_named(tmp_path: Path) -> None:
    sd = random_state_dict("appearance_feature_extractor")
    sd["third.conv.weight"] = torch.zeros(3)
    root = _single(tmp_path, APPEARANCE, sd)
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\): third\.conv\.weight"):
        load_network("appearance_feature_extractor", root)


def test_wrong_shape_names_key_and_both_shapes(tmp_path: Path) -> None:
    sd = random_state_dict("appearance_feature_extractor")
    sd["second.weight"] = torch.zeros(512, 128, 1, 1)
    root = _single(tmp_path, APPEARANCE, sd)
    with pytest.raises(CheckpointError) as err:
        load_network("appearance_feature_extractor", root)
    msg = str(err.value)
    assert "second.weight" in msg and "(512, 256, 1, 1)" in msg and "(512, 128, 1, 1)" in msg


def test_module_prefix_is_stripped_on_base_models(tmp_path: Path) -> None:
    sd = random_state_dict("appearance_feature_extractor", seed=5)
    root = _single(tmp_path, APPEARANCE, {f"module.{k}": v for k, v in sd.items()})
    net = load_network("appearance_feature_extractor", root)
    assert torch.equal(net.state_dict()["second.weight"], sd["second.weight"])


def test_stitching_checkpoint_is_nested_and_prefixed(tree: Path, tmp_path: Path) -> None:
    raw = torch.load(tree / STITCHING, weights_only=True)
    assert set(raw) == {"retarget_shoulder", "retarget_mouth", "retarget_eye"}
    assert all(k.startswith("module.mlp.") for k in raw["retarget_eye"])
    del raw["retarget_mouth"]
    root = _single(tmp_path, STITCHING, raw)
    assert load_network("eye", root).mlp[0].in_features == 66
    with pytest.raises(CheckpointError, match="retarget_mouth"):
        load_network("lip", root)


def test_wrong_mlp_in_slot_is_rejected(tree: Path, tmp_path: Path) -> None:
    raw = torch.load(tree / STITCHING, weights_only=True)
    raw["retarget_mouth"] = raw["retarget_eye"]
    root = _single(tmp_path, STITCHING, raw)
    with pytest.raises(CheckpointError, match=r"retarget_mouth.*mlp\.0\.weight"):
        load_network("lip", root)


def test_non_dict_checkpoint_is_rejected(tmp_path: Path) -> None:
    root = _single(tmp_path, APPEARANCE, torch.zeros(3))
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_network("appearance_feature_extractor", root)


def test_unknown_network_and_family() -> None:
    with pytest.raises(KeyError, match="unknown network"):
        load_network("decoder", Path("."))
    with pytest.raises(ValueError, match="family"):
        load_network("eye", Path("."), family="cats")


def test_checkpoint_sha256(tmp_path: Path, tree: Path) -> None:
    small = tmp_path / "abc.bin"
    small.write_bytes(b"abc")
    assert checkpoint_sha256(small) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    path = tree / APPEARANCE
    assert checkpoint_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    copy = tmp_path / "copy.pth"
    shutil.copy(path, copy)
    with open(copy, "r+b") as fh:
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 1]))
    assert checkpoint_sha256(copy) != checkpoint_sha256(path)
