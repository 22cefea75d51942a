"""Face detectors behind one small interface: an image in, scored face boxes out.

``ssd-opencv`` is OpenCV's published ResNet-10 SSD run through ``cv2.dnn``;
its files come from the fetch cache, so they are the verified ones. The
detector input size is a choice: 300x300 as published, or the frame's own
size, which finds smaller (more distant) faces at a higher cost.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import DetectorConfig
from .errors import ModelFileError, brief
from .preprocess import Box

logger = logging.getLogger(__name__)

SSD_PROTOTXT = "deploy.prototxt"
SSD_WEIGHTS = "res10_300x300_ssd_iter_140000.caffemodel"
SSD_MEAN_BGR = (104.0, 177.0, 123.0)  # the training mean of the published model


@dataclass(frozen=True)
class Detection:
    box: Box  # x1, y1, x2, y2 in pixels of the frame, clamped to it
    score: float


class FaceDetector(ABC):
    """Finds faces in a BGR frame."""

    name: str

    @abstractmethod
    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces of ``image`` (HxWx3 uint8 BGR), best first."""

    def close(self) -> None:  # noqa: B027 - most detectors hold nothing to release
        pass


def boxes_from_normalized(
    rows: np.ndarray, width: int, height: int, *, confidence: float, min_face_px: int
) -> list[Detection]:
    """Detections from rows of ``[score, x1, y1, x2, y2]`` in 0..1 frame coordinates.

    Boxes are scaled to pixels and clamped to the frame; boxes that are
    degenerate after clamping, smaller than ``min_face_px`` high, or below
    ``confidence`` are dropped. Sorted by score, best first.
    """
    rows = np.asarray(rows, dtype=np.float32).reshape(-1, 5)
    rows = rows[np.isfinite(rows).all(axis=1) & (rows[:, 0] >= confidence)]
    scale = np.array([width, height, width, height], np.float32)
    xyxy = np.round(rows[:, 1:] * scale)
    xyxy[:, 0::2] = np.clip(xyxy[:, 0::2], 0, width)
    xyxy[:, 1::2] = np.clip(xyxy[:, 1::2], 0, height)
    w, h = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
    keep = (w > 0) & (h >= max(1, min_face_px))
    order = np.argsort(-rows[keep, 0], kind="stable")
    kept_boxes, kept_scores = xyxy[keep][order].astype(int), rows[keep, 0][order]
    return [Detection(tuple(map(int, b)), float(s)) for b, s in zip(kept_boxes, kept_scores, strict=True)]


def network_size(input_size: tuple[int, int] | str, width: int, height: int) -> tuple[int, int]:
    """The detector's input (width, height) for a frame: the configured size, or the frame's own."""
    if input_size == "frame":
        return width, height
    return int(input_size[0]), int(input_size[1])


class SsdOpenCvDetector(FaceDetector):
    """OpenCV's ResNet-10 SSD face detector in float32 through ``cv2.dnn``."""

    name = "ssd-opencv"

    def __init__(
        self,
        prototxt: Path,
        weights: Path,
        *,
        input_size: tuple[int, int] | str = (300, 300),
        confidence: float = 0.5,
        min_face_px: int = 16,
        threads: int = 0,
    ) -> None:
        import cv2

        cv2.setNumThreads(threads or os.cpu_count() or 1)
        try:
            self._net = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
        except cv2.error as e:
            raise ModelFileError(f"face detector {weights.name} cannot be loaded: {brief(e)}") from e
        if self._net.empty():
            raise ModelFileError(f"face detector {weights.name} cannot be loaded")
        self.input_size = input_size
        self.confidence = confidence
        self.min_face_px = min_face_px

    def raw(self, image: np.ndarray) -> np.ndarray:
        """The network's output for ``image``: N x 7 rows of (batch, class, score, x1, y1, x2, y2)."""
        import cv2

        h, w = image.shape[:2]
        blob = cv2.dnn.blobFromImage(
            image, 1.0, network_size(self.input_size, w, h), SSD_MEAN_BGR, swapRB=False, crop=False
        )
        self._net.setInput(blob)
        return self._net.forward().reshape(-1, 7)

    def detect(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        return boxes_from_normalized(
            self.raw(image)[:, 2:7], w, h, confidence=self.confidence, min_face_px=self.min_face_px
        )


def make_detector(cfg: DetectorConfig) -> FaceDetector:
    """The detector ``cfg.backend`` names, with its model files fetched and verified."""
    from . import fetch

    if cfg.backend == "ssd-opencv":
        return SsdOpenCvDetector(
            fetch.ensure(SSD_PROTOTXT),
            fetch.ensure(SSD_WEIGHTS),
            input_size=cfg.input_size,
            confidence=cfg.confidence,
            min_face_px=cfg.min_face_px,
            threads=cfg.threads,
        )
    raise ValueError(f"unknown detector backend {cfg.backend!r}")  # unreachable: the config validates it
