"""Portrait editors cached per photo, so that moving a slider costs one render and not a new face crop."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from runtime.api import LivePortrait
from runtime.editing import EditParams, PortraitEditor

from .errors import ServiceError


def content_hash(path: Path) -> str:
    """sha256 of a file, read in chunks: the cache key of an uploaded photo (its name means nothing)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class EditorCache:
    """A small LRU of PortraitEditors keyed by the photo's content hash; renders go one at a time."""

    def __init__(self, engine: Callable[[], LivePortrait], size: int) -> None:
        self._engine, self._size = engine, size
        self._items: dict[str, PortraitEditor] = {}
        self._lock = threading.Lock()
        self._render_lock = threading.Lock()

    def get(self, key: str, image_rgb_factory: Callable[[], np.ndarray]) -> PortraitEditor:
        """The cached editor for `key`, built from the decoded photo on a miss (least recently used goes)."""
        with self._lock:
            editor = self._items.pop(key, None)
            if editor is not None:
                self._items[key] = editor
                return editor
        editor = self._engine().portrait_editor(image_rgb_factory())
        with self._lock:
            self._items[key] = editor
            while len(self._items) > self._size:
                self._items.pop(next(iter(self._items)))
        return editor

    def render(self, editor: PortraitEditor, params: EditParams, paste_back: bool, timeout: float) -> np.ndarray:
        """One render at a time (a slider sends many); a caller waiting longer than `timeout` is told to retry."""
        if not self._render_lock.acquire(timeout=timeout):
            raise ServiceError(503, "busy", "another edit is rendering; try again", {"Retry-After": "1"})
        try:
            return editor.render(params, paste_back=paste_back)
        finally:
            self._render_lock.release()

    def __len__(self) -> int:
        return len(self._items)
