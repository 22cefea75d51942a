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

import contextlib
import io
import warnings
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from maskgate.edge.core.litert import quiet_native_stderr

MODES = ("int8", "float32", "float16", "dynamic_range")


def to_tflite(model, mode: str, representative=None, *, output_type: str = "uint8") -> bytes:
    """Convert ``model``; int8 needs ``representative`` images (0..255, any sizes the model takes).

    The int8 model takes uint8 pixels; its outputs are ``output_type``: uint8 suits the
    classifier's probabilities, int8 the detector's signed box offsets and logits.
    """
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
        converter.inference_output_type = {"uint8": tf.uint8, "int8": tf.int8}[output_type]
    elif mode == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic_range":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode != "float32":
        raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
    # The converter prints Keras's export summary to stdout and its own notes to stderr; neither is
    # for users. The calibration data gives the input statistics; TF warns regardless for uint8 inputs.
    with contextlib.redirect_stdout(io.StringIO()), quiet_native_stderr(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        return converter.convert()
