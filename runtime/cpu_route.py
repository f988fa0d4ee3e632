"""Which CPU route `--device auto` takes when there is no GPU: onnxruntime fp32 (exact) or OpenVINO, bf16 decoder.

The rule is a feature rule backed by measurements, not a self-benchmark at start-up (that would cost minutes on
every run): on x86 CPUs with bf16 dot-product instructions (AMX-BF16 or AVX512-BF16) OpenVINO runs the SPADE
decoder (72 % of a frame's FLOPs) in bf16, and that route was measured faster than the best onnxruntime fp32 graph
on both kinds of CPU it has seen, with the output 48.9 dB PSNR from fp32 on the fixture weights (the ≥ 45 dB bar is
a test). Without those instructions OpenVINO's f32 route is slower than onnxruntime's Winograd graph, so auto keeps
onnxruntime. The measurements (README, Performance):

- 2-core Intel Xeon with AMX, 2026-11-25: OpenVINO bf16 decoder 2.08× PyTorch eager (ORT then 0.79×); again on
  2026-12-04: motion + warping + decoder 1.76 s a frame vs 2.72 s for onnxruntime's Winograd graph (2.92× vs 1.76×
  PyTorch eager, each in its own run);
- 2-core AMD EPYC with AVX512-BF16 (no AMX), 2026-12-02: warping + decoder 5.9 s a frame vs 10.0 s for
  onnxruntime's Winograd graph in the same run (OpenVINO f32: 14.4 s).

`--device cpu` or `--precision fp32` always gives the exact fp32 onnxruntime route.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from runtime.manifest import EXPORT_HINT

# /proc/cpuinfo flags of the bf16 dot-product instructions OpenVINO's CPU plugin uses for bf16 inference.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
SPLIT_PAIR = ("warping.gs4d", "spade_decoder")
CPUINFO = Path("/proc/cpuinfo")
MEASURED = {
    "amx_bf16": "1.4× onnxruntime's Winograd fp32 graph on a 2-core Xeon with AMX (2026-12-04: 1.74 vs 2.42 s a frame)",
    "avx512_bf16": "1.7× onnxruntime's Winograd fp32 graph on a 2-core AMD EPYC with AVX512-BF16 (2026-12-02)",
}
BF16_PSNR_DB = 48.9  # decoder bf16 vs fp32 on the fixture weights (tests/test_platform_graphs.py checks ≥ 45)


@dataclass(frozen=True)
class CpuRoute:
    """The chosen CPU device ("cpu" = onnxruntime fp32, "openvino" = OpenVINO with the decoder in bf16) and why."""

    device: str
    reason: str
    bf16_flags: tuple[str, ...] = field(default=())
    fix: str | None = None  # what would unlock the faster route, when the CPU could run it

    @property
    def label(self) -> str:
        return "openvino (bf16 decoder)" if self.device == "openvino" else "cpu (onnxruntime fp32)"


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux x86); empty where that file is absent or unreadable."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def openvino_has_bf16() -> bool:
    """OpenVINO is importable and its CPU plugin reports bf16 (it then really runs bf16 when asked)."""
    try:
        from runtime.openvino_backend import OpenVinoRunner

        return OpenVinoRunner.supports_bf16()
    except ImportError:
        return False


def choose_cpu_route(flags: Iterable[str], models: Iterable[str], precision: str = "auto",
                     openvino_bf16: bool | None = None, machine: str | None = None) -> CpuRoute:
    """The route auto takes on a CPU, from its flags, the exported model keys and --precision.

    openvino_bf16 None asks OpenVINO itself (only when the rest of the rule already points to it, so CPUs without
    bf16 never import openvino).
    """
    machine = (machine or platform.machine()).lower()
    bf16 = tuple(f for f in BF16_FLAGS if f in set(flags))
    if precision != "auto":
        return CpuRoute("cpu", f"--precision {precision} asks for onnxruntime's graphs (fp32: the exact route)", bf16)
    if machine not in ("x86_64", "amd64") or not bf16:
        return CpuRoute("cpu", "no bf16 dot-product instructions (amx_bf16 / avx512_bf16) on this CPU: "
                        "onnxruntime's fp32 Winograd graph is the fastest route (OpenVINO f32 measured slower)", bf16)
    if openvino_bf16 is None:
        openvino_bf16 = openvino_has_bf16()
    if not openvino_bf16:
        return CpuRoute("cpu", f"this CPU has {'+'.join(bf16)}, but OpenVINO is not installed (or reports no BF16)",
                        bf16, "pip install -e '.[openvino]' for the faster bf16-decoder route")
    missing = [k for k in SPLIT_PAIR if k not in set(models)]
    if missing:
        return CpuRoute("cpu", f"this CPU has {'+'.join(bf16)} and OpenVINO, but the models folder lacks "
                        f"{' + '.join(k + '.onnx' for k in missing)}", bf16,
                        f"{EXPORT_HINT} --split (writes them; also part of --grid-sample 4d)")
    return CpuRoute("openvino", f"this CPU has {'+'.join(bf16)}: OpenVINO with the SPADE decoder in bf16 measured "
                    f"{MEASURED[bf16[0]]}, {BF16_PSNR_DB} dB PSNR from fp32; --device cpu or --precision fp32 "
                    "keeps the exact onnxruntime route", bf16)


def split_wanted(flags: Iterable[str] | None = None, openvino_bf16: bool | None = None) -> bool:
    """Whether an export on this machine should also write the split pair, because auto would run it here."""
    route = choose_cpu_route(cpu_flags() if flags is None else flags, SPLIT_PAIR, "auto", openvino_bf16)
    return route.device == "openvino"
