"""Which onnxruntime execution providers to use, and with which settings, for a requested device.

Per-provider settings are data (platforms/<platform>/providers.json) so users tune them without touching code.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnxruntime as ort

DEVICES = ("auto", "cuda", "tensorrt", "coreml", "openvino", "directml", "cpu")
PROVIDER_OF = {
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "directml": "DmlExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
AUTO_ORDER = ("cuda", "coreml", "cpu")
PLATFORMS_DIR = Path(__file__).resolve().parent.parent / "platforms"


class DeviceError(RuntimeError):
    """A requested device cannot be used here; the message says what to install."""


INSTALL_HINT = {
    "cuda": "install the GPU build: pip install -e '.[gpu]' (and NVIDIA CUDA 12/13 + cuDNN 9 libraries); "
    "see platforms/linux-cuda/README.md",
    "tensorrt": "install onnxruntime-gpu with TensorRT libraries; see platforms/linux-cuda/README.md",
    "coreml": "on an Apple Silicon Mac, the official onnxruntime wheel has the CoreML EP: pip install -e '.[cpu]'; "
    "see platforms/macos-arm64/README.md",
    "openvino": "pip install openvino (the runtime then runs the graphs through OpenVINO directly); "
    "see platforms/intel-openvino/README.md",
    "directml": "pip install onnxruntime-directml on Windows; see platforms/windows/README.md",
    "cpu": "pip install -e '.[cpu]'",
}


@dataclass
class DeviceChoice:
    """The resolved device and the providers (with options) handed to onnxruntime, best first."""

    device: str
    providers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    graph_variant: dict[str, str] = field(default_factory=dict)


def platform_name() -> str:
    """Folder name under platforms/ for this machine."""
    system, machine = platform.system(), platform.machine().lower()
    if system == "Darwin" and machine in ("arm64", "aarch64"):
        return "macos-arm64"
    if system == "Windows":
        return "windows"
    return "linux-cpu"


def load_platform_settings(name: str) -> dict[str, Any]:
    """platforms/<name>/providers.json, or {} when absent (defaults then apply)."""
    path = PLATFORMS_DIR / name / "providers.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def provider_settings(device: str) -> dict[str, Any]:
    """Settings for a device: the platform file that owns it, else the local platform's file."""
    owner = {"cuda": "linux-cuda", "tensorrt": "linux-cuda", "coreml": "macos-arm64",
             "openvino": "intel-openvino", "directml": "windows"}.get(device, platform_name())
    data = load_platform_settings(owner)
    return dict(data.get("devices", {}).get(device, {}))


def available_devices() -> list[str]:
    """Devices whose provider this onnxruntime build offers (OpenVINO also via the openvino package)."""
    present = set(ort.get_available_providers())
    found = [d for d, p in PROVIDER_OF.items() if p in present]
    if "openvino" not in found and _has_openvino_runtime():
        found.append("openvino")
    return found


def _has_openvino_runtime() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


COREML_UNITS = ("ALL", "CPUAndGPU", "CPUAndNeuralEngine", "CPUOnly")


def resolve_device(requested: str = "auto", coreml_units: str | None = None) -> DeviceChoice:
    """auto → CUDA, then CoreML, then CPU; an explicit device that is not available raises DeviceError.

    Which CPU route auto then takes (onnxruntime fp32 or OpenVINO with a bf16 decoder) depends on the models folder
    too, so ModelSet decides it (runtime/cpu_route.py).

    coreml_units overrides the platform file's MLComputeUnits (ALL, CPUAndGPU, CPUAndNeuralEngine, CPUOnly).
    """
    if coreml_units is not None and coreml_units not in COREML_UNITS:
        raise DeviceError(f"unknown CoreML compute units {coreml_units!r}; choose one of {', '.join(COREML_UNITS)}")
    if requested not in DEVICES:
        raise DeviceError(f"unknown device {requested!r}; choose one of {', '.join(DEVICES)}")
    avail = available_devices()
    if requested == "auto":
        device = next(d for d in AUTO_ORDER if d in avail or d == "cpu")
    elif requested not in avail:
        raise DeviceError(
            f"device {requested!r} is not available: onnxruntime {ort.__version__} offers "
            f"{', '.join(ort.get_available_providers())}. To use it, {INSTALL_HINT[requested]}"
        )
    else:
        device = requested
    settings = provider_settings(device)
    providers: list[tuple[str, dict[str, Any]]] = []
    if device != "openvino" or PROVIDER_OF["openvino"] in ort.get_available_providers():
        options = dict(settings.get("provider_options", {}))
        if device == "coreml" and coreml_units is not None:
            options["MLComputeUnits"] = coreml_units
        providers.append((PROVIDER_OF[device], options))
    if device == "tensorrt":
        providers.append((PROVIDER_OF["cuda"], dict(provider_settings("cuda").get("provider_options", {}))))
    if device != "cpu":
        providers.append(("CPUExecutionProvider", {}))
    return DeviceChoice(device=device, providers=providers, graph_variant=dict(settings.get("graph_variant", {})))
