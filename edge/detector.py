"""Face detectors behind one small interface: an image in, scored face boxes out.

``ssd-opencv`` is OpenCV's published ResNet-10 SSD run through ``cv2.dnn``;
its files come from the fetch cache, so they are the verified ones. ``unet``
(``edge.unet``) finds faces as regions of a segmentation mask instead. The
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
from .litert import dequantize, load_interpreter
from .preprocess import Box
from .ssd import MEAN_BGR as SSD_MEAN_BGR
from .ssd import DetectionOutput, Head, fit_size

logger = logging.getLogger(__name__)

SSD_PROTOTXT = "deploy.prototxt"
SSD_WEIGHTS = "res10_300x300_ssd_iter_140000.caffemodel"


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

    def raw(self, image: np.ndarray, outputs: list[str] | None = None):
        """The network's output for ``image``: N x 7 rows of (batch, class, score, x1, y1, x2, y2),
        or the named layers' outputs (NCHW), e.g. the prediction heads."""
        import cv2

        h, w = image.shape[:2]
        size = network_size(self.input_size, w, h)
        blob = cv2.dnn.blobFromImage(image, 1.0, size, SSD_MEAN_BGR, swapRB=False, crop=False)
        self._net.setInput(blob)
        if outputs is not None:
            return self._net.forward(outputs)
        return self._net.forward().reshape(-1, 7)

    def detect(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        return boxes_from_normalized(
            self.raw(image)[:, 2:7], w, h, confidence=self.confidence, min_face_px=self.min_face_px
        )


class SsdInt8Detector(FaceDetector):
    """The same SSD, rebuilt and quantised to int8 by ``maskgate convert detector``, on LiteRT.

    The network runs in the interpreter; prior boxes, decoding and NMS run in
    numpy (``edge.ssd``). The input size is chosen per frame like ``ssd-opencv``'s
    (rounded to a multiple of 4); the interpreter is re-planned only when it changes.
    """

    name = "ssd-int8"

    def __init__(
        self,
        bundle,
        *,
        input_size: tuple[int, int] | str = (300, 300),
        confidence: float = 0.5,
        min_face_px: int = 16,
        threads: int = 0,
    ) -> None:
        self.bundle = bundle
        self._interpreter = load_interpreter(bundle.model_path, num_threads=threads or os.cpu_count() or 1)
        meta = bundle.metadata["ssd"]
        self._post = DetectionOutput(
            [Head.from_dict(h) for h in meta["heads"]],
            meta["nms_threshold"],
            meta["top_k"],
            meta["keep_top_k"],
            meta["confidence_threshold"],
        )
        self._floor = float(meta["confidence_threshold"])
        self._order = list(meta["outputs"])  # interpreter output index of loc0, conf0, loc1, conf1, ...
        if len(self._order) != 2 * len(meta["heads"]):
            raise ModelFileError(
                f"bundle {bundle.path}: {len(self._order)} outputs for {len(meta['heads'])} heads"
            )
        self._input = self._interpreter.get_input_details()[0]
        scale, zero = self._input["quantization"]
        if np.dtype(self._input["dtype"]) != np.uint8 or abs(scale - 1.0) > 1e-4 or zero != 0:
            # frames go in as they are; a model that expects them rescaled would see wrong pixels
            raise ModelFileError(
                f"bundle {bundle.path}: the detector takes {np.dtype(self._input['dtype'])} input with scale "
                f"{scale:g}, zero point {zero}; maskgate feeds uint8 pixels (scale 1, zero point 0)"
            )
        self._size: tuple[int, int] | None = None
        self.input_size = input_size
        self.confidence = confidence
        self.min_face_px = min_face_px
        if (
            input_size != "frame"
        ):  # a fixed size is planned now, so a runtime that cannot is found at start-up
            self._resize(fit_size(*input_size))

    @property
    def confidence(self) -> float:
        return self._confidence

    @confidence.setter
    def confidence(self, value: float) -> None:
        # Boxes below the reporting confidence can never suppress one above it, so NMS starts there:
        # the same boxes as OpenCV's DetectionOutput above ``confidence``, in a fraction of the time.
        self._confidence = value
        self._post.confidence_threshold = max(self._floor, value)

    def _resize(self, size: tuple[int, int]) -> None:
        if size == self._size:
            return
        try:
            self._interpreter.resize_tensor_input(self._input["index"], [1, size[1], size[0], 3])
            self._interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as e:
            raise ModelFileError(
                f"detector {self.bundle.path.name}: this LiteRT runtime cannot run it at "
                f"{size[0]}x{size[1]} ({brief(e)})"
            ) from e
        self._outputs = self._interpreter.get_output_details()
        self._size = size

    def raw(self, image: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray], tuple[int, int]]:
        """Dequantised head outputs (locations, logits) and the input size they were computed at."""
        import cv2

        h, w = image.shape[:2]
        size = fit_size(*network_size(self.input_size, w, h))
        self._resize(size)
        x = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR) if (w, h) != size else image
        self._interpreter.set_tensor(self._input["index"], np.ascontiguousarray(x)[None])
        self._interpreter.invoke()
        heads = [
            dequantize(self._interpreter.get_tensor(self._outputs[i]["index"]), self._outputs[i])
            for i in self._order
        ]
        return heads[0::2], heads[1::2], size

    def detect(self, image: np.ndarray) -> list[Detection]:
        locs, logits, size = self.raw(image)
        h, w = image.shape[:2]
        rows = self._post(locs, logits, *size)
        return boxes_from_normalized(rows, w, h, confidence=self.confidence, min_face_px=self.min_face_px)

    def close(self) -> None:
        self._interpreter = None


def make_detector(cfg: DetectorConfig) -> FaceDetector:
    """The detector ``cfg.backend`` names, with its model files fetched and verified."""
    from . import fetch

    if cfg.backend == "ssd-int8":
        from .bundle import default_bundle_path, load_bundle

        bundle = load_bundle(cfg.bundle or default_bundle_path("detector"), kind="detector")
        return SsdInt8Detector(
            bundle,
            input_size=cfg.input_size,
            confidence=cfg.confidence,
            min_face_px=cfg.min_face_px,
            threads=cfg.threads,
        )
    if cfg.backend == "unet":
        from .unet import make_unet_detector

        return make_unet_detector(cfg)
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
