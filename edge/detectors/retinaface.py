"""RetinaFace-MobileNet0.25 in int8 on LiteRT (``retinaface-int8``): faces and their five landmarks.

The network (rebuilt and quantised by ``maskgate convert retinaface``) runs in
the interpreter; anchors, decoding, softmax and NMS run in numpy
(``retinaface_decoding``). Frames go in at their own size, scaled down to
``max_side`` at most and padded to multiples of 32 (``preprocess.prepare_retinaface``),
so small faces keep their pixels while a 1080p camera costs no more than
640 px; the interpreter is re-planned only when the input size changes, which
for a camera is once.
"""

from __future__ import annotations

import logging

import numpy as np

from ..core.bundle import Bundle, default_bundle_path, load_bundle
from ..core.errors import ModelFileError, brief
from ..core.litert import check_uint8_passthrough, dequantize, load_interpreter
from ..core.preprocess import prepare_retinaface
from ..core.sysinfo import resolve_threads
from .base import DecodedDetector, Detection, SizeCache, boxes_from_normalized
from .config import DetectorConfig
from .retinaface_decoding import AnchorSpec, RetinaFaceOutput, flatten_heads

logger = logging.getLogger(__name__)

BUNDLE = "retinaface"  # the shipped bundle's folder under models/
PLANNED_SIZES = 8


class RetinaFaceDetector(DecodedDetector):
    """RetinaFace from a detector bundle; ``float_model`` runs the bundle's float32 model instead
    (for comparison: the device runs int8)."""

    name = "retinaface-int8"

    def __init__(
        self,
        bundle: Bundle,
        *,
        input_size: tuple[int, int] | str = "frame",
        max_side: int = 640,
        confidence: float = 0.5,
        min_face_px: int = 16,
        threads: int = 0,
        float_model: bool = False,
    ) -> None:
        meta = bundle.metadata
        if meta.network != "retinaface":
            raise ModelFileError(
                f"bundle {bundle.path} holds an {meta.network} detector; detector.backend "
                f"{self.name} needs a RetinaFace bundle (made by `maskgate convert retinaface`)"
            )
        if float_model and not bundle.float_model_path:
            raise ModelFileError(f"bundle {bundle.path} has no float32 model")
        if input_size != "frame" and any(int(v) % meta.input.size_multiple for v in input_size):
            raise ModelFileError(
                f"detector.input_size {list(input_size)}: {self.name} takes sides that are multiples of "
                f"{meta.input.size_multiple}, or 'frame'"
            )
        self.bundle = bundle
        self.name = "retinaface-float32" if float_model else self.name
        self._model_path = bundle.float_model_path if float_model else bundle.model_path
        self._threads = resolve_threads(threads)
        self._interpreter = load_interpreter(self._model_path, num_threads=self._threads)
        # One planned interpreter per input size, the last PLANNED_SIZES kept: a camera uses one, but
        # `detect` over a folder of photos of many sizes would otherwise re-plan on most frames
        # (581 times in the 700 shared scenes, about 1.5 ms each on the development VM). Each costs
        # memory, about 18 MB at 640 px: eight sizes took the process from 95 to 239 MB RSS.
        self._planned = SizeCache(PLANNED_SIZES)
        spec = meta.retinaface
        self._post = RetinaFaceOutput(
            spec=AnchorSpec(
                min_sizes=tuple(tuple(s) for s in spec.min_sizes),
                steps=tuple(spec.steps),
                variances=tuple(spec.variances),
            ),
            nms_threshold=spec.nms_threshold,
            top_k=spec.top_k,
            keep_top_k=spec.keep_top_k,
            confidence_threshold=spec.confidence_threshold,
        )
        self._floor = spec.confidence_threshold
        self._order = list(spec.outputs)  # interpreter output index of loc0, conf0, landmarks0, loc1, ...
        self._input = self._interpreter.get_input_details()[0]
        if not float_model:  # frames go in as they are
            check_uint8_passthrough(self._input, f"bundle {bundle.path}: the detector")
        self._float_input = float_model
        self._size: tuple[int, int] | None = None
        self.input_size = input_size
        self.max_side = max_side
        self.confidence = confidence
        self.min_face_px = min_face_px
        if input_size != "frame":  # planned now, so a runtime that cannot is found at start-up
            self._resize(tuple(int(v) for v in input_size))

    @classmethod
    def from_config(cls, cfg: DetectorConfig, *, float_model: bool = False) -> RetinaFaceDetector:
        return cls(
            load_bundle(cfg.bundle or default_bundle_path(BUNDLE), kind="detector"),
            input_size=cfg.input_size if cfg.input_size is not None else "frame",
            max_side=cfg.max_side,
            confidence=cfg.confidence,
            min_face_px=cfg.min_face_px,
            threads=cfg.threads,
            float_model=float_model,
        )

    def _resize(self, size: tuple[int, int]) -> None:
        if self._interpreter is None:
            raise ModelFileError(f"detector {self.bundle.path.name} was closed; make a new one")
        if size == self._size:
            return
        self._interpreter, self._outputs = self._planned.get(size, lambda: self._plan(size))
        self._size = size

    def _plan(self, size: tuple[int, int]):
        """An interpreter allocated for ``size`` (the first one the detector loaded, then new ones)."""
        it = (
            self._interpreter
            if self._size is None
            else load_interpreter(self._model_path, num_threads=self._threads)
        )
        try:
            it.resize_tensor_input(self._input["index"], [1, size[1], size[0], 3])
            it.allocate_tensors()
        except (RuntimeError, ValueError) as e:
            raise ModelFileError(
                f"detector {self.bundle.path.name}: this LiteRT runtime cannot run it at "
                f"{size[0]}x{size[1]} ({brief(e)})"
            ) from e
        return it, it.get_output_details()

    def raw(self, image: np.ndarray) -> tuple[list[np.ndarray], float, tuple[int, int]]:
        """Dequantised head outputs (loc0, conf0, landmarks0, loc1, ...), the frame-to-input scale and
        the input size they were computed at."""
        x, scale = prepare_retinaface(image, self.input_size, self.max_side)
        size = (x.shape[1], x.shape[0])
        self._resize(size)
        x = x[None].astype(np.float32) if self._float_input else x[None]
        self._interpreter.set_tensor(self._input["index"], x)
        self._interpreter.invoke()
        heads = [
            dequantize(self._interpreter.get_tensor(self._outputs[i]["index"]), self._outputs[i])
            for i in self._order
        ]
        return heads, scale, size

    def rows(self, image: np.ndarray) -> np.ndarray:
        """Faces as rows of [score, x1, y1, x2, y2, 10 landmark coordinates], 0..1 of the frame."""
        heads, scale, (w, h) = self.raw(image)
        rows = self._post(*flatten_heads(heads), w, h)
        # normalised to the padded input -> normalised to the frame
        fh, fw = image.shape[:2]
        sx, sy = w / (fw * scale), h / (fh * scale)
        rows[:, 1:15:2] *= sx
        rows[:, 2:15:2] *= sy
        return rows

    def detect(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        return boxes_from_normalized(
            self.rows(image), w, h, confidence=self.confidence, min_face_px=self.min_face_px
        )

    def close(self) -> None:
        self._interpreter, self._size = None, None
        self._planned = SizeCache(PLANNED_SIZES)
