"""Decode → infer → encode overlap: decoding and encoding run in their own threads with bounded queues.

PyAV releases the GIL while it decodes/encodes and onnxruntime while it computes, so the graphs never wait for
video I/O; the bounded queues keep memory flat however long the video is.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_DONE = object()


class Prefetch(Iterator):
    """Iterate `source` in a background thread, at most `depth` items ahead; re-raises its errors here."""

    def __init__(self, source: Iterable[Any], depth: int = 8) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(iter(source),), daemon=True)
        self._thread.start()

    def _fill(self, it: Iterator[Any]) -> None:
        try:
            for item in it:
                while not self._stop.is_set():
                    try:
                        self._queue.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._queue.put((_DONE, exc))
            return
        self._queue.put((_DONE, None))

    def __next__(self) -> Any:
        item, error = self._queue.get()
        if item is _DONE:
            self._queue.put((_DONE, error))  # keep answering StopIteration
            if error is not None:
                raise error
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the producer thread (e.g. when the consumer fails part-way)."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5)


class AsyncSink:
    """Call `consume(item)` for each put item in a background thread; errors surface at the next put/close."""

    def __init__(self, consume: Callable[[Any], None], depth: int = 8) -> None:
        self._consume = consume
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if self._error is None:
                try:
                    self._consume(item)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                    self._error = exc

    def put(self, item: Any) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def close(self) -> None:
        """Wait for every queued item to be consumed; re-raise the first consumer error."""
        self._queue.put(_DONE)
        self._thread.join()
        if self._error is not None:
            raise self._error
