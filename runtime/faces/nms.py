"""Greedy non-maximum suppression with the insightface box convention (pixel-inclusive areas, ``+1``)."""

from __future__ import annotations

import numpy as np


def nms(boxes: np.ndarray, scores: np.ndarray, thresh: float) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, best score first.

    A candidate is suppressed when its overlap with a kept box is *greater* than ``thresh``; widths and heights count
    ``x2 - x1 + 1`` pixels as in SCRFD, so results match the detector's reference post-processing.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if boxes.shape[0] != scores.shape[0]:
        raise ValueError(f"nms: {boxes.shape[0]} boxes but {scores.shape[0]} scores")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + 1.0) * (y2 - y1 + 1.0)
    pending = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    while pending.size:
        best = int(pending[0])
        kept.append(best)
        rest = pending[1:]
        iw = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1.0)
        ih = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1.0)
        inter = iw * ih
        overlap = inter / (areas[best] + areas[rest] - inter)
        pending = rest[overlap <= thresh]
    return np.asarray(kept, dtype=np.int64)
