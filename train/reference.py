"""The usual public face-mask path, for ``maskgate bench`` to compare against: Keras ``model.predict``.

Public face-mask projects classify each frame's faces with a float Keras
MobileNetV2 through ``model.predict``. The benchmark measures exactly that,
on the same frames and faces as the int8 path, so the gain is a measured
ratio. This lives in train/ because it needs TensorFlow; edge/ finds it
through the ``maskgate.bench`` entry point and runs without it.
"""

from __future__ import annotations

from pathlib import Path

import keras  # noqa: F401 - imported here so that loading this plugin fails at once without TensorFlow
import numpy as np

from .evaluate import load_keras_model, resolve_model


class KerasReference:
    """A .keras classifier (or a training run's) behind the device classifier's interface."""

    def __init__(self, path: Path) -> None:
        # TensorFlow keeps its own thread pools (all cores), fixed at first use: at a lower
        # --threads the reference gets more threads than the int8 path, never fewer.
        self.threads = "all cores"
        keras_path, self.classes = resolve_model(Path(path))
        self.model = load_keras_model(keras_path)
        self.input_size = int(self.model.input_shape[1])

    def predict(self, faces: np.ndarray) -> np.ndarray:
        """N x S x S x 3 uint8 RGB faces (the model normalises them itself) -> class probabilities."""
        return self.model.predict(faces.astype(np.float32), verbose=0)

    def close(self) -> None:
        self.model = None
