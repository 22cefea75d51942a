"""The U-Net face segmenter on the device, and the scene geometry every stage shares.

A segmenter sees a whole scene, not a face crop, so how a frame of any size
becomes its square input must be the same in training, conversion and here:
``core.preprocess.prepare_scene`` is that definition, ``boxes_to_mask`` draws training masks
with the same geometry, and ``mask_detections`` maps the predicted mask back
to boxes in frame pixels with its inverse. The model itself is int8 on
LiteRT (``maskgate convert segmenter``): uint8 RGB pixels in, a uint8 face
probability per pixel out; thresholded, split into connected components, each
component becomes one face box scored by its mean probability.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..core.bundle import default_bundle_path, load_bundle
from ..core.errors import ConfigError
from ..core.geometry import Box
from ..core.litert import check_uint8_passthrough, dequantize, load_interpreter
from ..core.preprocess import prepare_scene
from ..core.sysinfo import resolve_threads
from .base import Detection, FaceDetector, boxes_from_normalized
from .config import DetectorConfig

logger = logging.getLogger(__name__)

KIND = "segmenter"
HOW_TO_MAKE = (
    "train one with `maskgate train-unet --voc SCENES --out RUN`, convert it with "
    "`maskgate convert segmenter --model RUN --out BUNDLE`, then set detector.segmenter_bundle=BUNDLE"
)


def _span(lo: float, hi: float, scale: float, size: int) -> tuple[int, int]:
    """Mask pixels [a, b) whose centres fall in frame interval [lo, hi); at least the centre's pixel."""
    a = max(0, math.ceil(lo * scale - 0.5))
    b = min(size, math.ceil(hi * scale - 0.5))
    if b <= a:  # a face thinner than a mask pixel still leaves one pixel to find
        c = min(size - 1, max(0, int((lo + hi) / 2 * scale)))
        a, b = c, c + 1
    return a, b


def boxes_to_mask(boxes: Iterable[Box], width: int, height: int, size: int) -> np.ndarray:
    """The ``size`` x ``size`` uint8 mask (1 = face) of frame boxes, in ``prepare_scene``'s geometry.

    A mask pixel is face when its centre, mapped into the frame, lies inside a
    box (``x1 <= x < x2``, as crops slice them). Boxes outside the frame are
    clipped; a box with no area inside it adds nothing.
    """
    mask = np.zeros((size, size), np.uint8)
    sx, sy = size / width, size / height
    for x1, y1, x2, y2 in boxes:
        x1, x2 = max(0, x1), min(width, x2)
        y1, y2 = max(0, y1), min(height, y2)
        if x2 <= x1 or y2 <= y1:
            continue
        c0, c1 = _span(x1, x2, sx, size)
        r0, r1 = _span(y1, y2, sy, size)
        mask[r0:r1, c0:c1] = 1
    return mask


def mask_detections(
    prob: np.ndarray,
    width: int,
    height: int,
    *,
    threshold: float,
    min_area: int,
    confidence: float = 0.0,
    min_face_px: int = 1,
) -> list[Detection]:
    """Face boxes in frame pixels from a square probability mask: one per connected component.

    Pixels at or above ``threshold`` are face; 8-connected regions smaller than
    ``min_area`` mask pixels are noise. A component's score is its mean
    probability, so a solid confident blob outranks a faint one of equal size.
    Its bounding box scales back per axis (the inverse of ``prepare_scene``'s
    stretch) and is clamped and filtered as every detector's boxes are.
    Known limit: touching faces form one component and so one box.
    """
    import cv2

    prob = np.asarray(prob, np.float32)
    size = prob.shape[0]
    if prob.ndim != 2 or prob.shape[1] != size:
        raise ValueError(f"expected a square probability mask, got {prob.shape}")
    binary = (prob >= threshold).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    sums = np.bincount(labels.ravel(), weights=prob.ravel(), minlength=n)
    rows = []
    for k in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[k])
        if area < min_area:
            continue
        rows.append([sums[k] / area, x / size, y / size, (x + w) / size, (y + h) / size])
    return boxes_from_normalized(
        np.asarray(rows, np.float32).reshape(-1, 5),
        width,
        height,
        confidence=confidence,
        min_face_px=min_face_px,
    )


class UnetDetector(FaceDetector):
    """Faces as connected regions of the int8 U-Net's face mask, on LiteRT."""

    name = "unet"

    def __init__(
        self,
        bundle,
        *,
        threshold: float = 0.5,
        min_area: int = 8,
        confidence: float = 0.0,
        min_face_px: int = 1,
        threads: int = 0,
    ) -> None:
        self.bundle = bundle
        self.size = bundle.input_size
        self._interpreter = load_interpreter(bundle.model_path, num_threads=resolve_threads(threads))
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        # scenes go in as they are
        check_uint8_passthrough(self._input, f"bundle {bundle.path}: the segmenter")
        self.threshold = threshold
        self.min_area = min_area
        self.confidence = confidence
        self.min_face_px = min_face_px

    @classmethod
    def from_config(cls, cfg: DetectorConfig) -> UnetDetector:
        """The ``unet`` backend: its segmenter bundle (default: the shipped one), verified; or one line."""
        path: Path | None = cfg.segmenter_bundle
        if path is None:
            path = default_bundle_path(KIND)
            if not path.is_dir():  # an installation without models/segmenter
                raise ConfigError(
                    f"detector 'unet' needs a segmenter bundle and none is installed at {path}: {HOW_TO_MAKE}"
                )
        return cls(
            load_bundle(path, kind=KIND),
            threshold=cfg.mask_threshold,
            min_area=cfg.min_component_px,
            confidence=cfg.confidence,
            min_face_px=cfg.min_face_px,
            threads=cfg.threads,
        )

    def mask(self, scene_rgb: np.ndarray) -> np.ndarray:
        """Face probability per pixel (``size`` x ``size`` float32) of a ``prepare_scene`` output."""
        if scene_rgb.shape != (self.size, self.size, 3) or scene_rgb.dtype != np.uint8:
            raise ValueError(f"expected a {self.size}x{self.size}x3 uint8 scene, got {scene_rgb.shape}")
        self._interpreter.set_tensor(self._input["index"], np.ascontiguousarray(scene_rgb)[None])
        self._interpreter.invoke()
        out = self._interpreter.get_tensor(self._output["index"])
        return dequantize(out, self._output).reshape(self.size, self.size)

    def detect(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        prob = self.mask(prepare_scene(image, self.size))
        return mask_detections(
            prob,
            w,
            h,
            threshold=self.threshold,
            min_area=self.min_area,
            confidence=self.confidence,
            min_face_px=self.min_face_px,
        )

    def close(self) -> None:
        self._interpreter = None
