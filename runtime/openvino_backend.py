"""Run graphs with the OpenVINO runtime directly (`--device openvino`).

Why the runtime and not onnxruntime's OpenVINO EP: the EP ships as a separate onnxruntime-openvino wheel that
conflicts with the onnxruntime package this project installs, while the `openvino` package sits beside it, reads
the same .onnx files, and compiles whole graphs (the 4-D grid-sample variant) for Intel CPUs, iGPUs and NPUs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from runtime.manifest import EXPORT_HINT, ModelsError

_CORE = None


def _core():
    global _CORE
    if _CORE is None:
        import openvino as ov

        _CORE = ov.Core()
    return _CORE


class OpenVinoRunner:
    """Same interface as sessions.GraphRunner, backed by an OpenVINO compiled model."""

    def __init__(self, key: str, path: Path, device_name: str = "CPU",
                 output_names: list[str] | None = None, inference_precision: str = "f32") -> None:
        self.key, self.path, self.device = key, Path(path), "openvino"
        self.inference_precision = inference_precision
        try:
            model = _core().read_model(str(self.path))
            # Precision is always explicit: on CPUs with AMX/AVX512-BF16 OpenVINO otherwise silently runs bf16,
            # which is fine for the decoder (50 dB) but not for grid-sample coordinates (25 dB measured).
            config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": inference_precision}
            if device_name == "CPU":  # flush-to-zero: subnormal operands cost Intel cores ~100+ cycles each
                config["CPU_DENORMALS_OPTIMIZATION"] = True
            self.compiled = _core().compile_model(model, device_name, config)
        except Exception as exc:  # noqa: BLE001 - report any frontend/compile failure with the fix
            raise ModelsError(f"OpenVINO could not compile {self.path.name} ({str(exc).splitlines()[0][:200]}). "
                              f"For OpenVINO use the 4-D grid-sample graphs: {EXPORT_HINT} --grid-sample 4d") from exc
        self.input_names = [p.get_any_name() for p in self.compiled.inputs]
        # a port can carry several tensor names (aliases); prefer the graph-output names the manifest lists
        wanted = set(output_names or [])
        self.output_names = [next((n for n in sorted(p.get_names()) if n in wanted), p.get_any_name())
                             for p in self.compiled.outputs]
        self._local = threading.local()  # one infer request per thread: a request is not thread-safe
        self.on_cuda = False

    @property
    def request(self) -> Any:
        """This thread's infer request (servers call one engine from several worker threads)."""
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return request

    @staticmethod
    def supports_bf16(device_name: str = "CPU") -> bool:
        """True when the OpenVINO device computes bf16 natively (AMX / AVX512-BF16 CPUs)."""
        try:
            return "BF16" in _core().get_property(device_name, "OPTIMIZATION_CAPABILITIES")
        except Exception:  # noqa: BLE001 - unknown device or property: assume not
            return False

    def run(self, feeds: Mapping[str, Any], keep_on_device: Iterable[str] = ()) -> dict[str, Any]:
        """Run synchronously; outputs come back as numpy arrays keyed by name."""
        del keep_on_device
        inputs = {k: np.ascontiguousarray(v) for k, v in feeds.items()}
        result = self.request.infer(inputs)
        return {name: np.array(result[port]) for name, port in zip(self.output_names, self.compiled.outputs,
                                                                       strict=True)}

    def placement(self) -> list[str]:
        return ["OpenVINO:" + ",".join(self.compiled.get_property("EXECUTION_DEVICES"))]
