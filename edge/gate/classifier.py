"""The mask classifier on the device: a TFLite model behind one small class.

Loaded once, tensors allocated once per batch size, and the input/output
quantisation (dtype, scale, zero point) read from the model rather than
assumed, so int8, uint8 and float models all work through the same call.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.bundle import Bundle
from ..core.errors import ModelFileError
from ..core.litert import dequantize, is_uint8_passthrough, load_interpreter


class TFLiteClassifier:
    """Class probabilities for batches of prepared faces (see ``preprocess.prepare_face``)."""

    def __init__(self, model: Path | bytes, *, num_threads: int = 1) -> None:
        self._interpreter = load_interpreter(model, num_threads=num_threads)
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        shape = self._input["shape"]
        self.input_size = int(shape[1])
        self.input_dtype = np.dtype(self._input["dtype"])
        self.num_classes = int(self._output["shape"][-1])
        self._batch = int(shape[0])

    @property
    def input_details(self) -> dict:
        """The input tensor as the interpreter describes it (dtype, shape, quantisation)."""
        return self._input

    @property
    def output_details(self) -> dict:
        return self._output

    def _resize(self, batch: int) -> None:
        # Resizing re-plans the whole graph: done only when the number of faces changes.
        if batch != self._batch:
            self._interpreter.resize_tensor_input(
                self._input["index"], [batch, self.input_size, self.input_size, 3]
            )
            self._interpreter.allocate_tensors()
            self._input = self._interpreter.get_input_details()[0]
            self._output = self._interpreter.get_output_details()[0]
            self._batch = batch

    def _quantize(self, faces: np.ndarray) -> np.ndarray:
        if self.input_dtype == np.float32:
            return faces.astype(np.float32, copy=False)
        if is_uint8_passthrough(self._input):
            return faces  # pixels are already the quantised input: no arithmetic per face
        scale, zero = self._input["quantization"]
        info = np.iinfo(self.input_dtype)
        q = np.round(faces.astype(np.float32) / scale + zero)
        return np.clip(q, info.min, info.max).astype(self.input_dtype)

    def predict(self, faces: np.ndarray) -> np.ndarray:
        """``faces``: N x S x S x 3 uint8 RGB; returns N x classes float32 probabilities.

        The whole batch runs in one invocation where the model allows it.
        """
        if faces.ndim != 4 or faces.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(
                f"expected N x {self.input_size} x {self.input_size} x 3 faces, got {faces.shape}"
            )
        if len(faces) == 0:
            return np.zeros((0, self.num_classes), np.float32)
        self._resize(len(faces))
        self._interpreter.set_tensor(self._input["index"], self._quantize(faces))
        self._interpreter.invoke()
        return dequantize(self._interpreter.get_tensor(self._output["index"]), self._output)

    def close(self) -> None:
        self._interpreter = None


def classifier_from_bundle(
    bundle: Bundle, *, num_threads: int = 1, float_model: bool = False
) -> TFLiteClassifier:
    """The bundle's classifier (or its float32 twin); ``load_bundle`` has checked its tensors."""
    path = bundle.float_model_path if float_model else bundle.model_path
    if path is None:
        raise ModelFileError(f"bundle {bundle.path} has no float model")
    return TFLiteClassifier(path, num_threads=num_threads)
