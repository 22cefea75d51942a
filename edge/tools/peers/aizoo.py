"""AIZOO's single-stage mask detector (AIZOOTech/FaceMaskDetection), run as its OpenCV example runs it.

One network finds faces and says mask / no mask in one pass, so it stands behind the
analyzer's interface (``analyze`` -> ``Analysis`` of ``Face``) rather than the detector's:
its detect time is the whole pass, and there is no classifier stage to time. The input is
what its ``opencv_dnn_infer.py`` feeds: the frame in RGB, stretched to 260x260, scaled by
1/255, through OpenCV's float DNN (the Caffe files from the fetch step); the outputs are
decoded in ``aizoo_decoding``. Its labels are mapped to the project's names
(``with_mask``, ``without_mask``), so ``maskgate score`` reads its JSONL like any other.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ...core import fetch
from ...core.errors import FetchError
from ...core.labels import MASKED, UNMASKED
from ...core.sysinfo import resolve_threads
from ...detectors.ssd import read_caffe_net
from ...gate.analyzer import Analysis, Face, Timings
from .aizoo_decoding import Decoded, Postprocess

PROTOTXT = "face_mask_detection.prototxt"
WEIGHTS = "face_mask_detection.caffemodel"
INPUT_SIZE = (260, 260)
OUTPUTS = ("loc_branch_concat", "cls_branch_concat")  # box offsets, class scores
CLASSES = (MASKED, UNMASKED)  # the model's class 0 is "Mask", class 1 "NoMask"
WHAT = "AIZOO FaceMaskDetection 260x260, one pass (faces and mask classes), OpenCV float DNN"


class AizooReference:
    """The published network and its post-processing; ``analyze`` is the per-frame path."""

    name = "aizoo"

    def __init__(
        self, prototxt: Path, weights: Path, *, threads: int = 0, confidence: float = 0.5, iou: float = 0.4
    ) -> None:
        import cv2

        self.threads = resolve_threads(threads)
        cv2.setNumThreads(self.threads)
        self._net = read_caffe_net(prototxt, weights, "AIZOO model")
        self.post = Postprocess(confidence=confidence, iou=iou)

    @classmethod
    def fetched(cls, *, threads: int = 0) -> AizooReference:
        """The reference with its files from the fetch cache (copied from a mirror or downloaded)."""
        try:
            files = fetch.ensure(PROTOTXT), fetch.ensure(WEIGHTS)
        except FetchError as e:
            raise FetchError(
                f"{e}; the AIZOO reference needs its two files: maskgate models fetch --for bench "
                f"(offline: --mirror DIR or {fetch.MIRROR_ENV})"
            ) from e
        return cls(*files, threads=threads)

    def raw(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network's N x 4 box offsets and N x 2 class scores for a BGR frame."""
        import cv2

        blob = cv2.dnn.blobFromImage(image, 1.0 / 255, INPUT_SIZE, swapRB=True, crop=False)
        self._net.setInput(blob)
        loc, cls = self._net.forward(list(OUTPUTS))
        return loc.reshape(-1, 4), cls.reshape(-1, 2)

    def faces(self, image: np.ndarray) -> list[Face]:
        """The faces of a BGR frame, best first, boxes in its pixels, labels in the project's names."""
        h, w = image.shape[:2]
        return faces_in_pixels(self.post(*self.raw(image)), w, h)

    def analyze(self, image: np.ndarray) -> Analysis:
        """``FrameAnalyzer.analyze``'s result: the whole pass counts as detection."""
        t0 = time.perf_counter()
        faces = self.faces(image)
        return Analysis(faces, Timings(detect=(time.perf_counter() - t0) * 1000.0))

    def close(self) -> None:
        self._net = None


def faces_in_pixels(found: Decoded, width: int, height: int) -> list[Face]:
    """Decoded faces as the project's ``Face``: boxes rounded to the frame's pixels and clamped to it
    (a box left with no area is dropped), the model's class as the project's label, the better class
    score as both the detection and the label score."""
    boxes = np.round(found.boxes * np.array([width, height, width, height]))
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    faces = []
    for box, score, k, both in zip(
        boxes.astype(int), found.scores, found.classes, found.class_scores, strict=True
    ):
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        label = CLASSES[int(k)]
        faces.append(
            Face(tuple(map(int, box)), float(score), label, float(score), float(both[0]), label == MASKED)
        )
    return faces
