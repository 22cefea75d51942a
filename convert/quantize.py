"""Keras model to TFLite, full-integer int8 above all.

Input and output types: the int8 model takes **uint8 RGB pixels** and returns
**uint8 probabilities**. The classifier's first layer is the normalisation
(x / 127.5 - 1); calibrated on 0..255 pixels, the converter gives the input
scale 1.0 and zero point 0, so the camera crop *is* the quantised input and the
device does no per-pixel arithmetic at all. A float32 input would cost a
conversion pass per face and a quantise op in the graph; int8 (signed) input
would need a shift by 128. The uint8 output (scale 1/256) keeps the last op
integer; dequantising two or three numbers per face is free.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

MODES = ("int8", "float32", "float16", "dynamic_range")


def to_tflite(model, mode: str, representative: np.ndarray | None = None) -> bytes:
    """Convert ``model``; ``representative`` (N x S x S x 3, 0..255) is required for int8."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode == "int8":
        if representative is None or not len(representative):
            raise ValueError("int8 conversion needs representative images")

        def batches() -> Iterator[list[np.ndarray]]:
            for image in representative:
                yield [image[None].astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = batches
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    elif mode == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic_range":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode != "float32":
        raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
    with warnings.catch_warnings():
        # The calibration data gives the input statistics; TF warns regardless for uint8 inputs.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        return converter.convert()
