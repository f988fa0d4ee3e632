"""Run a graph at one fixed batch size from buffers allocated once: what CUDA graphs need.

onnxruntime's CUDA graphs (`enable_cuda_graph`) capture the kernels of the first run and replay them, which removes
the per-kernel launch cost (hundreds of kernels a frame in warping + decoder) but only works when every input and
output stays at the same device address with the same shape. This runner owns those buffers: feeds are copied into
them, shorter batches (the end of a video) are padded with their last item and the results cut back, and a device
input that is the same object as last time (the source's feature volume) is not copied again.

On the CPU the same code runs without graph capture; that is how the buffer handling is tested without a GPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import onnxruntime as ort

from runtime.sessions import GraphRunner

__all__ = ["StaticBatchRunner", "cuda_graph_options"]

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}


def cuda_graph_options() -> dict[str, dict[str, str]]:
    """Provider options that turn on graph capture for the CUDA EP (documented onnxruntime option)."""
    return {"CUDAExecutionProvider": {"enable_cuda_graph": "1"}}


def _pad_batch(array: np.ndarray, batch: int) -> np.ndarray:
    """Repeat the last item so the batch is `batch` long (valid inputs, results discarded)."""
    n = array.shape[0]
    if n == batch:
        return np.ascontiguousarray(array)
    if n == 0 or n > batch:
        raise ValueError(f"a batch of {n} does not fit the static batch of {batch}")
    return np.ascontiguousarray(np.concatenate([array, np.repeat(array[-1:], batch - n, axis=0)]))


class StaticBatchRunner:
    """A loaded graph run at a fixed batch from fixed input/output buffers (CUDA graph replay on CUDA)."""

    def __init__(self, runner: GraphRunner, batch: int) -> None:
        if batch < 1:
            raise ValueError(f"the static batch must be at least 1, got {batch}")
        self.runner, self.batch = runner, batch
        self.key = runner.key
        session = runner.session
        self.device = "cuda" if runner.on_cuda else "cpu"
        self._last_device_feed: dict[str, Any] = {}
        self._inputs = {m.name: self._buffer(m) for m in session.get_inputs()}
        self._outputs = {m.name: self._buffer(m) for m in session.get_outputs()}
        self.binding = session.io_binding()
        for name, value in self._inputs.items():
            self.binding.bind_ortvalue_input(name, value)
        for name, value in self._outputs.items():
            self.binding.bind_ortvalue_output(name, value)

    def _buffer(self, meta: Any) -> ort.OrtValue:
        """A buffer on the session's device for one graph input or output at the static batch."""
        shape = self._static_shape(meta.name, meta.shape)
        return ort.OrtValue.ortvalue_from_shape_and_type(shape, _NUMPY_TYPES[meta.type], self.device, 0)

    def _static_shape(self, name: str, dims: list) -> list[int]:
        """The graph's shape with the batch fixed; any other dynamic dimension cannot be captured."""
        shape = [self.batch if i == 0 and not isinstance(d, int) else d for i, d in enumerate(dims)]
        if not all(isinstance(d, int) and d > 0 for d in shape):
            raise ValueError(f"{self.key}: {name} has dynamic dimensions {dims}; only the batch may be dynamic "
                             "for a static-batch (CUDA graph) run")
        return shape

    def output_buffer(self, name: str) -> ort.OrtValue:
        """The fixed buffer an output is written to (overwritten by the next run)."""
        return self._outputs[name]

    def _load(self, name: str, value: Any) -> int:
        """Copy one feed into its buffer; returns the feed's batch size."""
        if isinstance(value, ort.OrtValue):
            n = int(value.shape()[0])
            if self._last_device_feed.get(name) is value:
                return n  # already in the buffer (the source feature between batches)
            self._last_device_feed[name] = value  # keep a reference so the identity check stays valid
            array = value.numpy()
        else:
            self._last_device_feed.pop(name, None)
            array = np.asarray(value)
            n = int(array.shape[0])
        dtype = _NUMPY_TYPES[self.runner.input_types[name]]
        self._inputs[name].update_inplace(_pad_batch(array.astype(dtype, copy=False), self.batch))
        return n

    def run(self, feeds: Mapping[str, Any], keep_on_device: Iterable[str] = ()) -> dict[str, Any]:
        """Same contract as GraphRunner.run. Kept outputs are the fixed buffers themselves (valid until the next
        run) when the batch is full; a padded batch's outputs come back as numpy, cut to the real batch."""
        missing = set(self._inputs) - set(feeds)
        if missing:
            raise ValueError(f"{self.key}: missing inputs {sorted(missing)}")
        n = min(self._load(name, value) for name, value in feeds.items() if name in self._inputs)
        self.runner.session.run_with_iobinding(self.binding)
        keep = set(keep_on_device)
        result: dict[str, Any] = {}
        for name, value in self._outputs.items():
            if name in keep and n == self.batch:
                result[name] = value
            else:
                result[name] = value.numpy()[:n].copy()
        return result

    def placement(self) -> list[str]:
        return self.runner.placement()
