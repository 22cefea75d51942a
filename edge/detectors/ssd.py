"""OpenCV's ResNet-10 SSD face detector, as published (``ssd-opencv``) and in int8 on LiteRT (``ssd-int8``).

``ssd-opencv`` runs the Caffe files through ``cv2.dnn``; they come from the
fetch cache, so they are the verified ones. ``ssd-int8`` is the same network
rebuilt and quantised by ``maskgate convert detector``: the network runs on
LiteRT, its prior boxes, decoding and NMS in numpy (``ssd_decoding``). The
input size is a choice: 300x300 as published, or the frame's own size, which
finds smaller (more distant) faces at a higher cost.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..core import fetch
from ..core.bundle import default_bundle_path, load_bundle
from ..core.errors import ModelFileError, brief
from ..core.litert import check_uint8_passthrough, dequantize, load_interpreter
from ..core.preprocess import SSD_MEAN_BGR
from ..core.sizes import fit_size, network_size
from ..core.sysinfo import resolve_threads
from .base import DecodedDetector, Detection, FaceDetector, boxes_from_normalized
from .config import DetectorConfig
from .ssd_decoding import DetectionOutput, Head

logger = logging.getLogger(__name__)

SSD_PROTOTXT = "deploy.prototxt"
SSD_WEIGHTS = "res10_300x300_ssd_iter_140000.caffemodel"


def read_caffe_net(prototxt: Path, weights: Path, what: str):
    """A Caffe network in OpenCV's DNN module; a file it cannot load is one ModelFileError naming it
    (``what``: how the message names the model)."""
    import cv2

    try:
        net = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
    except cv2.error as e:
        raise ModelFileError(f"{what} {Path(weights).name} cannot be loaded: {brief(e)}") from e
    if net.empty():
        raise ModelFileError(f"{what} {Path(weights).name} cannot be loaded")
    return net


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

        cv2.setNumThreads(resolve_threads(threads))
        self._net = read_caffe_net(prototxt, weights, "face detector")
        self.input_size = input_size
        self.confidence = confidence
        self.min_face_px = min_face_px

    @classmethod
    def from_config(cls, cfg: DetectorConfig) -> SsdOpenCvDetector:
        return cls(
            fetch.ensure(SSD_PROTOTXT),
            fetch.ensure(SSD_WEIGHTS),
            input_size=cfg.input_size if cfg.input_size is not None else (300, 300),
            confidence=cfg.confidence,
            min_face_px=cfg.min_face_px,
            threads=cfg.threads,
        )

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


class SsdInt8Detector(DecodedDetector):
    """The same SSD, rebuilt and quantised to int8 by ``maskgate convert detector``, on LiteRT.

    The network runs in the interpreter; prior boxes, decoding and NMS run in
    numpy (``ssd_decoding``). The input size is chosen per frame like ``ssd-opencv``'s
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
        if bundle.metadata.network != "ssd":
            raise ModelFileError(
                f"bundle {bundle.path} holds a {bundle.metadata.network} detector; detector.backend "
                f'{self.name} needs an SSD bundle (use detector.backend = "{bundle.metadata.network}-int8")'
            )
        self.bundle = bundle
        self._interpreter = load_interpreter(bundle.model_path, num_threads=resolve_threads(threads))
        spec = bundle.metadata.ssd
        self._post = DetectionOutput(
            [Head.from_spec(h) for h in spec.heads],
            spec.nms_threshold,
            spec.top_k,
            spec.keep_top_k,
            spec.confidence_threshold,
        )
        self._floor = spec.confidence_threshold
        self._order = list(spec.outputs)  # interpreter output index of loc0, conf0, loc1, conf1, ...
        self._input = self._interpreter.get_input_details()[0]
        # frames go in as they are
        check_uint8_passthrough(self._input, f"bundle {bundle.path}: the detector")
        self._size: tuple[int, int] | None = None
        self.input_size = input_size
        self.confidence = confidence
        self.min_face_px = min_face_px
        if input_size != "frame":  # planned now, so a runtime that cannot is found at start-up
            self._resize(fit_size(*input_size))

    @classmethod
    def from_config(cls, cfg: DetectorConfig) -> SsdInt8Detector:
        return cls(
            load_bundle(cfg.bundle or default_bundle_path("detector"), kind="detector"),
            input_size=cfg.input_size if cfg.input_size is not None else (300, 300),
            confidence=cfg.confidence,
            min_face_px=cfg.min_face_px,
            threads=cfg.threads,
        )

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
