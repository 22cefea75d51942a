"""Face boxes: the one definition of a box, its margin and crop, overlap, matching and suppression.

A box is ``(x1, y1, x2, y2)`` in integer pixels of the frame, ``x1 <= x < x2`` as
numpy slices it. Every stage (detectors, tracker, scoring, benchmark, training
crops) uses these functions, so "the same face" and "the crop of a face" mean the
same thing everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Box = tuple[int, int, int, int]


def expand_box(box: Box, margin: float, width: int, height: int) -> Box | None:
    """Grow a face box by ``margin`` of its size on each side, clamped to the frame.

    Returns ``None`` for a box that is empty after clamping, so callers drop
    degenerate detections instead of crashing on an empty crop.
    """
    x1, y1, x2, y2 = box
    dx = (x2 - x1) * margin
    dy = (y2 - y1) * margin
    nx1 = max(0, int(round(x1 - dx)))
    ny1 = max(0, int(round(y1 - dy)))
    nx2 = min(width, int(round(x2 + dx)))
    ny2 = min(height, int(round(y2 + dy)))
    if nx2 <= nx1 or ny2 <= ny1:
        return None
    return nx1, ny1, nx2, ny2


def crop(image: np.ndarray, box: Box) -> np.ndarray:
    """Crop an already clamped box (see ``expand_box``)."""
    x1, y1, x2, y2 = box
    return image[y1:y2, x1:x2]


def iou_matrix(a: Sequence[Box] | np.ndarray, b: Sequence[Box] | np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``a`` with every box of ``b`` (boxes of no area: 0)."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    A = np.asarray(a, dtype=np.float64)[:, None, :]
    B = np.asarray(b, dtype=np.float64)[None, :, :]
    iw = np.clip(np.minimum(A[..., 2], B[..., 2]) - np.maximum(A[..., 0], B[..., 0]), 0, None)
    ih = np.clip(np.minimum(A[..., 3], B[..., 3]) - np.maximum(A[..., 1], B[..., 1]), 0, None)
    inter = iw * ih
    area_a = np.clip(A[..., 2] - A[..., 0], 0, None) * np.clip(A[..., 3] - A[..., 1], 0, None)
    area_b = np.clip(B[..., 2] - B[..., 0], 0, None) * np.clip(B[..., 3] - B[..., 1], 0, None)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (row, column), best overlap first, each row and column used once, IoU >= threshold."""
    pairs = []
    used_r, used_c = set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        r, c = divmod(int(flat), iou.shape[1])
        if iou[r, c] < threshold:
            break
        if r not in used_r and c not in used_c:
            pairs.append((r, c))
            used_r.add(r)
            used_c.add(c)
    return pairs


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, top_k: int) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression over the ``top_k`` best scores, best first."""
    order = np.argsort(-scores, kind="stable")[:top_k]
    boxes = np.asarray(boxes, np.float64)[order]
    keep = []
    alive = np.ones(len(order), bool)
    for i in range(len(order)):
        if not alive[i]:
            continue
        keep.append(order[i])
        rest = np.nonzero(alive[i + 1 :])[0] + i + 1
        if not len(rest):
            break
        alive[rest[iou_matrix(boxes[i : i + 1], boxes[rest])[0] > iou_threshold]] = False
    return np.asarray(keep, dtype=int)
