"""`--device auto` on a CPU: the feature rule of runtime/cpu_route.py, and ModelSet following it on real models."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime import cpu_route, sessions
from runtime.cpu_route import SPLIT_PAIR, choose_cpu_route, cpu_flags
from runtime.sessions import ModelSet

# Flags as /proc/cpuinfo prints them (trimmed to what matters): AMD Zen 4/5 EPYC, Intel Sapphire Rapids, a Zen 2.
ZEN_BF16 = {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni"}
XEON_AMX = {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"}
AVX2_ONLY = {"avx2", "fma", "sse4_2"}
ALL_MODELS = ("warping_spade", "warping_spade.wino", *SPLIT_PAIR)


def test_cpu_flags_reads_the_flags_line(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
                    "bugs\t\t: sysret_ss_attrs\n\nprocessor\t: 1\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert cpu_flags(info) == {"fpu", "avx2", "avx512f", "avx512_bf16"}
    assert cpu_flags(tmp_path / "absent") == frozenset()


@pytest.mark.parametrize(("flags", "device", "named"), [
    (ZEN_BF16, "openvino", "avx512_bf16"),
    (XEON_AMX, "openvino", "amx_bf16"),
    (AVX2_ONLY, "cpu", "no bf16 dot-product instructions"),
], ids=["amd-avx512-bf16", "intel-amx", "avx2-only"])
def test_rule_follows_the_cpu_features(flags: set[str], device: str, named: str) -> None:
    route = choose_cpu_route(flags, ALL_MODELS, "auto", openvino_bf16=True, machine="x86_64")
    assert route.device == device and named in route.reason
    if device == "openvino":
        assert "PSNR" in route.reason and "--device cpu" in route.reason and route.fix is None
        assert route.label == "openvino (bf16 decoder)"


def test_rule_keeps_the_exact_route_when_asked_or_when_the_fast_one_cannot_run() -> None:
    exact = choose_cpu_route(ZEN_BF16, ALL_MODELS, "fp32", openvino_bf16=True, machine="x86_64")
    assert exact.device == "cpu" and "--precision fp32" in exact.reason
    no_ov = choose_cpu_route(ZEN_BF16, ALL_MODELS, "auto", openvino_bf16=False, machine="x86_64")
    assert no_ov.device == "cpu" and "OpenVINO is not installed" in no_ov.reason and "openvino" in no_ov.fix
    no_split = choose_cpu_route(ZEN_BF16, ("warping_spade", "warping_spade.wino"), "auto", openvino_bf16=True,
                                machine="x86_64")
    assert no_split.device == "cpu" and "spade_decoder.onnx" in no_split.reason and "--split" in no_split.fix
    arm = choose_cpu_route({"bf16", "sve"}, ALL_MODELS, "auto", openvino_bf16=True, machine="aarch64")
    assert arm.device == "cpu" and arm.fix is None


def test_a_cpu_without_bf16_never_asks_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_route, "openvino_has_bf16", lambda: pytest.fail("must not import openvino"))
    assert choose_cpu_route(AVX2_ONLY, ALL_MODELS, machine="x86_64").device == "cpu"


@pytest.mark.parametrize(("flags", "precision", "device", "warping"), [
    (ZEN_BF16, "auto", "openvino", "warping.gs4d"),
    (ZEN_BF16, "fp32", "cpu", "warping_spade.wino"),
    (AVX2_ONLY, "auto", "cpu", "warping_spade.wino"),
], ids=["bf16-auto", "bf16-fp32", "avx2-auto"])
def test_auto_model_set_takes_the_rule_s_route(models_with_variants: Path, monkeypatch: pytest.MonkeyPatch,
                                              flags: set[str], precision: str, device: str, warping: str) -> None:
    monkeypatch.setattr(sessions, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(cpu_route, "openvino_has_bf16", lambda: True)
    monkeypatch.setattr(cpu_route.platform, "machine", lambda: "x86_64")
    models = ModelSet(models_with_variants, device="auto", precision=precision, check_hash=False)
    assert models.device == device and models.route is not None and models.route.device == device
    assert (models.keys["warping"] if models.split else models.keys["warping_spade"]) == warping
    # an explicit device is never re-routed
    assert ModelSet(models_with_variants, device="cpu", check_hash=False).route is None


def test_openvino_runs_the_split_pair_without_a_gs4d_warping_graph(models_with_variants: Path,
                                                                    tmp_path: Path) -> None:
    """The default export on a bf16 CPU writes the split pair but no warping_spade.gs4d: OpenVINO must not ask
    for it (the bench and animate runs on such a folder failed with 'no warping_spade.gs4d.onnx')."""
    import json

    pytest.importorskip("openvino")
    manifest = json.loads((models_with_variants / "manifest.json").read_text())
    del manifest["models"]["warping_spade.gs4d"]
    for entry in manifest["models"].values():
        (tmp_path / entry["file"]).symlink_to(models_with_variants / entry["file"])
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    models = ModelSet(tmp_path, device="openvino", check_hash=False)
    assert models.split and "warping_spade" not in models.keys
    assert (models.keys["warping"], models.keys["spade_decoder"]) == SPLIT_PAIR
