"""Fixture weights: official formats, deterministic, and numerically well-behaved through every network."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

from export import fixtures
from export.checkpoints import load_network, relative_checkpoint
from export.fixtures import FAMILY_SEED_OFFSETS, ensure_fixture_tree, random_state_dict, write_fixture_tree
from export.networks import NETWORKS

BASE = ("appearance_feature_extractor", "motion_extractor", "warping_module", "spade_generator")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_fixture_tree(tmp_path_factory.getbasetemp() / "fixture_weights_seed0", seed=0, stand_ins=False)


def _face_like_image() -> torch.Tensor:
    """A smooth, face-sized bright ellipse on a darker gradient background: 1×3×256×256 in [0, 1]."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 256), torch.linspace(-1, 1, 256), indexing="ij")
    face = ((xx / 0.55) ** 2 + (yy / 0.75) ** 2 < 1).float()
    eyes = (((xx.abs() - 0.22) / 0.08) ** 2 + ((yy + 0.15) / 0.04) ** 2 < 1).float()
    img = torch.stack([0.25 + 0.5 * face - 0.4 * eyes + 0.1 * xx, 0.2 + 0.4 * face - 0.3 * eyes, 0.3 + 0.3 * face])
    noise = torch.randn(3, 256, 256, generator=torch.Generator().manual_seed(0)) * 0.02
    return (img + noise).clamp(0, 1)[None]


def test_deterministic_per_seed() -> None:
    a, b, c = random_state_dict("lip", 3), random_state_dict("lip", 3), random_state_dict("lip", 4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["mlp.0.weight"], c["mlp.0.weight"])


def test_tree_layout_and_formats(tree: Path) -> None:
    for family in FAMILY_SEED_OFFSETS:
        for name in BASE:
            sd = torch.load(tree / relative_checkpoint(name, family), weights_only=True)
            assert isinstance(sd, dict) and all(isinstance(v, torch.Tensor) for v in sd.values())
            assert set(sd) == set(NETWORKS[name].factory().state_dict())
    # the animal release keeps its base models under base_models_v1.1/ and uses the human stitching module
    assert (tree / "liveportrait_animals/base_models_v1.1/warping_module.pth").is_file()
    assert not (tree / "liveportrait_animals/retargeting_models").exists()
    stitch = torch.load(tree / "liveportrait/retargeting_models/stitching_retargeting_module.pth", weights_only=True)
    assert set(stitch) == {"retarget_shoulder", "retarget_mouth", "retarget_eye"}
    human = torch.load(tree / relative_checkpoint("appearance_feature_extractor"), weights_only=True)
    animal = torch.load(tree / relative_checkpoint("appearance_feature_extractor", "liveportrait_animals"),
                        weights_only=True)
    assert not torch.equal(human["second.weight"], animal["second.weight"])


def test_batchnorm_statistics_and_spectral_vectors(tree: Path) -> None:
    warp = torch.load(tree / "liveportrait" / NETWORKS["warping_module"].checkpoint, weights_only=True)
    variances = torch.cat([v for k, v in warp.items() if k.endswith("running_var")])
    assert torch.isfinite(variances).all() and variances.min() > 0
    assert warp["third.norm.num_batches_tracked"].dtype == torch.int64

    # running statistics are calibrated on data, not (0, 1): a face-like image leaves the first BatchNorm with a
    # per-channel spatial std near 1 (measured 0.98 on average, |mean| 0.54); the old (0, 1) statistics left each
    # channel a near-constant offset (std 0.22, |mean| 0.41) that carried little of the image
    appearance = load_network("appearance_feature_extractor", tree)
    seen: dict[str, torch.Tensor] = {}
    appearance.first.norm.register_forward_hook(lambda _m, _i, out: seen.__setitem__("x", out))
    with torch.no_grad():
        appearance(_face_like_image())
    per_channel_mean, per_channel_std = seen["x"].mean((0, 2, 3)), seen["x"].std((0, 2, 3))
    assert per_channel_mean.abs().mean() < 1.0 and 0.6 < per_channel_std.mean() < 1.5

    dec = torch.load(tree / "liveportrait" / NETWORKS["spade_generator"].checkpoint, weights_only=True)
    for prefix in ("up_0.conv_s", "up_1.conv_1", "up_1.conv_s"):  # small enough for a quick exact SVD
        w = dec[f"{prefix}.weight_orig"].reshape(dec[f"{prefix}.weight_orig"].shape[0], -1)
        sigma = torch.dot(dec[f"{prefix}.weight_u"], w @ dec[f"{prefix}.weight_v"]).item()
        top = torch.linalg.matrix_norm(w, ord=2).item()
        assert 0.97 * top < sigma <= top * 1.0001, prefix


def test_motion_outputs_are_plausible(tree: Path) -> None:
    net = load_network("motion_extractor", tree)
    bins = torch.arange(66, dtype=torch.float32)
    images = torch.cat([_face_like_image(), torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))])
    with torch.no_grad():
        out = net(images)
    kp = out["kp"]
    assert kp.abs().max() < 1.0 and kp.std() > 0.1
    assert ((out["scale"] > 0.5) & (out["scale"] < 2.0)).all()
    for axis in ("pitch", "yaw", "roll"):
        degrees = (out[axis].softmax(dim=1) * bins).sum(dim=1) * 3 - 97.5
        assert degrees.abs().max() < 30, axis
    assert 0.005 < out["exp"].abs().mean() < 0.08
    assert out["t"].abs().max() < 0.2
    assert not torch.allclose(out["kp"][0], out["kp"][1]), "keypoints must depend on the image"


def test_animation_chain_is_not_degenerate(tree: Path) -> None:
    appearance = load_network("appearance_feature_extractor", tree)
    motion = load_network("motion_extractor", tree)
    warping = load_network("warping_module", tree)
    decoder = load_network("spade_generator", tree)
    img = _face_like_image()
    with torch.no_grad():
        feature = appearance(img)
        kp_source = motion(img)["kp"].view(1, 21, 3)
        kp_driving = kp_source + 0.05 * torch.randn(1, 21, 3, generator=torch.Generator().manual_seed(2))
        warped = warping(feature, kp_driving, kp_source)
        out = warped["out"]
        assert torch.isfinite(out).all() and out.std() > 0.05 and out.abs().max() < 100
        assert 0.05 < warped["occlusion_map"].mean() < 0.95
        # the decoder is fully convolutional: a 32×32 centre crop keeps the statistics and the test fast
        image = decoder(out[:, :, 16:48, 16:48])
    assert image.shape == (1, 3, 256, 256)
    assert image.std() > 0.02 and 0.05 < image.mean() < 0.95
    saturated = ((image < 0.01) | (image > 0.99)).float().mean()
    assert saturated < 0.2


def test_stand_ins_are_called_when_available(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Path, int]] = []
    fake = types.ModuleType("export.stand_ins")
    fake.write_stand_in_graphs = lambda out_dir, seed: calls.append((Path(out_dir), seed))
    monkeypatch.setitem(sys.modules, "export.stand_ins", fake)
    monkeypatch.setattr(fixtures, "write_family", lambda family_dir, seed=0: Path(family_dir).mkdir(parents=True))
    assert write_fixture_tree(tmp_path, seed=9) == tmp_path
    assert calls == [(tmp_path, 9)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FAMILY_SEED_OFFSETS)


def test_cli_passes_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict = {}

    def record(out: Path, seed: int = 0, *, stand_ins: bool = True, xpose: bool = False) -> Path:
        seen.update(out=out, seed=seed, stand_ins=stand_ins, xpose=xpose)
        return out

    monkeypatch.setattr(fixtures, "write_fixture_tree", record)
    fixtures.main(["--out", str(tmp_path), "--seed", "4", "--no-stand-ins"])
    assert seen == {"out": tmp_path, "seed": 4, "stand_ins": False, "xpose": True}
    fixtures.main(["--out", str(tmp_path), "--no-xpose"])
    assert seen == {"out": tmp_path, "seed": 0, "stand_ins": True, "xpose": False}


def test_ensure_fixture_tree_reuses_a_matching_tree_only(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(out: Path, seed: int = 0, *, stand_ins: bool = True) -> Path:
        raise AssertionError(f"rewrote tree with seed={seed}, stand_ins={stand_ins}")

    monkeypatch.setattr(fixtures, "write_fixture_tree", refuse)
    assert ensure_fixture_tree(tree, seed=0, stand_ins=False) == tree
    with pytest.raises(AssertionError, match="seed=1"):
        ensure_fixture_tree(tree, seed=1, stand_ins=False)
