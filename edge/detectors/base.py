"""The face detector interface: an image in, scored face boxes in frame pixels out.

Every backend (``edge.detectors.registry`` names them) subclasses ``FaceDetector``
and reports its boxes through ``boxes_from_normalized``, so clamping, the size
floor and the confidence floor are the same whatever network found the face.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.geometry import Box

if TYPE_CHECKING:
    from .config import DetectorConfig


Point = tuple[int, int]


@dataclass(frozen=True)
class Detection:
    box: Box  # x1, y1, x2, y2 in pixels of the frame, clamped to it
    score: float
    # Five points in frame pixels (eyes, nose tip, mouth corners: ``metadata.LANDMARKS``) from
    # detectors that predict them (RetinaFace), else None. Not clamped: a landmark may be outside.
    landmarks: tuple[Point, ...] | None = None


class FaceDetector(ABC):
    """Finds faces in a BGR frame."""

    name: str

    @classmethod
    def from_config(cls, cfg: DetectorConfig) -> FaceDetector:
        """The detector a ``[detector]`` section describes, its model files fetched and verified."""
        raise NotImplementedError(f"{cls.__name__} is not made from a configuration")

    @abstractmethod
    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces of ``image`` (HxWx3 uint8 BGR), best first."""

    def close(self) -> None:  # noqa: B027 - most detectors hold nothing to release
        pass


class DecodedDetector(FaceDetector):
    """A detector whose network runs in LiteRT and whose boxes are decoded in numpy by ``_post``
    (an object with a ``confidence_threshold``), with the bundle's own floor ``_floor``.

    Boxes below the reporting confidence are never reported and can never suppress one above it,
    so decoding and NMS start there: the same boxes above ``confidence``, in a fraction of the time.
    """

    _post: Any
    _floor: float

    @property
    def confidence(self) -> float:
        return self._confidence

    @confidence.setter
    def confidence(self, value: float) -> None:
        self._confidence = value
        self._post.confidence_threshold = max(self._floor, value)


def boxes_from_normalized(
    rows: np.ndarray, width: int, height: int, *, confidence: float, min_face_px: int
) -> list[Detection]:
    """Detections from rows of ``[score, x1, y1, x2, y2]`` in 0..1 frame coordinates, optionally
    followed by ten landmark coordinates (x, y of five points, also 0..1).

    Boxes are scaled to pixels and clamped to the frame; boxes that are
    degenerate after clamping, smaller than ``min_face_px`` high, or below
    ``confidence`` are dropped. Sorted by score, best first.
    """
    rows = np.asarray(rows, dtype=np.float32)
    rows = rows.reshape(-1, rows.shape[-1] if rows.ndim == 2 and rows.shape[-1] == 15 else 5)
    rows = rows[np.isfinite(rows).all(axis=1) & (rows[:, 0] >= confidence)]
    scale = np.array([width, height, width, height], np.float32)
    xyxy = np.round(rows[:, 1:5] * scale)
    xyxy[:, 0::2] = np.clip(xyxy[:, 0::2], 0, width)
    xyxy[:, 1::2] = np.clip(xyxy[:, 1::2], 0, height)
    w, h = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
    keep = (w > 0) & (h >= max(1, min_face_px))
    order = np.argsort(-rows[keep, 0], kind="stable")
    kept_boxes, kept_scores = xyxy[keep][order].astype(int), rows[keep, 0][order]
    if rows.shape[1] == 15:
        points = np.round(rows[keep][order, 5:].reshape(-1, 5, 2) * np.array([width, height], np.float32))
        marks = [tuple((int(x), int(y)) for x, y in p) for p in points.astype(int)]
    else:
        marks = [None] * len(kept_scores)
    return [
        Detection(tuple(map(int, b)), float(s), m)
        for b, s, m in zip(kept_boxes, kept_scores, marks, strict=True)
    ]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities from a detector head's logits (last axis)."""
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class SizeCache:
    """Anchors, prior boxes or planned interpreters per input size, the last ``size`` sizes kept: made
    once per size, yet a detector at the frame's own size over photos of many sizes cannot grow
    without bound."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        if key in self._items:
            self._items.move_to_end(key)
        else:
            self._items[key] = make()
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return self._items[key]
