"""Keras model to TFLite, full-integer int8 above all.

Input and output types: the int8 model takes **uint8 RGB pixels** and returns
**uint8 probabilities**. The classifier's first layer is the normalisation
(x / 127.5 - 1); calibrated on 0..255 pixels, the converter gives the input
scale 1.0 and zero point 0, so the camera crop *is* the quantised input and the
device does no per-pixel arithmetic at all. A float32 input would cost a
conversion pass per face and a quantise op in the graph; int8 (signed) input
would need a shift by 128. The uint8 output (scale 1/256) keeps the last op
integer; dequantising two or three numbers per face is free.

Calibration, the converter running the float model on every representative
image, takes minutes on a real model, so it reports progress (``edge.core.progress``):
a bar on a terminal, a line every few seconds in a log.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from typing import TextIO

import numpy as np
import tensorflow as tf

from maskgate.edge.core.litert import quiet_native_stderr
from maskgate.edge.core.progress import track

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
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
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
    with (
        contextlib.redirect_stdout(io.StringIO()),
        _only_maskgate_heard() as stderr,
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        if mode == "int8":
            converter.representative_dataset = lambda: _batches(representative, stderr)
        return converter.convert()


def _batches(representative, stderr: TextIO) -> Iterator[list[np.ndarray]]:
    """The calibration images one by one, as the converter asks for them, with progress."""
    for image in track(representative, "calibrating", unit="samples", stream=stderr):
        yield [image[None].astype(np.float32)]


@contextlib.contextmanager
def _only_maskgate_heard() -> Iterator[TextIO]:
    """``quiet_native_stderr``, but maskgate's own log records still reach the real stderr, and the
    stream yielded writes there too (for a progress bar).

    Calibration runs inside the converter, whose chatter (native, and TensorFlow's Python
    logging) goes to file descriptor 2 and is silenced there; the progress lines calibration
    writes are ours and must still be seen.
    """
    handlers = [h for h in _stream_handlers() if _on_fd2(h.stream)]
    if not handlers and not _on_fd2(sys.stderr):  # nothing of ours writes where the silence falls
        with quiet_native_stderr():
            yield sys.stderr
        return
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    with open(os.dup(2), "w", encoding=encoding, errors="backslashreplace", buffering=1) as real:
        streams = [h.stream for h in handlers]
        with quiet_native_stderr():
            for h in handlers:
                h.setStream(real)
                h.addFilter(_MASKGATE)
            try:
                yield real
            finally:
                for h, stream in zip(handlers, streams, strict=True):
                    h.removeFilter(_MASKGATE)
                    h.setStream(stream)


_MASKGATE = logging.Filter("maskgate")  # records of "maskgate" and the loggers below it


def _on_fd2(stream: object) -> bool:
    try:
        return stream.fileno() == 2  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):  # no descriptor (a StringIO, pytest's capture)
        return False


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    return [
        h
        for lg in loggers
        if isinstance(lg, logging.Logger)
        for h in lg.handlers
        if isinstance(h, logging.StreamHandler)
    ]
