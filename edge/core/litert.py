"""The LiteRT interpreter.

``ai-edge-litert`` is LiteRT, the successor of TensorFlow Lite. It publishes
64-bit wheels only, so 32-bit Raspberry Pi OS is not supported: its older
``tflite-runtime`` 2.14 fails with numpy 2, and PyPI has no 32-bit ARM wheels
of numpy, OpenCV or Pillow to pin below it (README, "On a Raspberry Pi").
"""

from __future__ import annotations

from pathlib import Path

from .errors import ModelFileError
from .native import quiet_native_stderr  # noqa: F401 - the converter silences TensorFlow with it too


def interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        raise ModuleNotFoundError(
            "no LiteRT runtime: pip install 'maskgate[edge]'", name="ai_edge_litert"
        ) from e
    return Interpreter


def runtime_name() -> str:
    """Which package provides the interpreter, for benchmark and bundle records."""
    module = interpreter_class().__module__.split(".")[0]
    return {"ai_edge_litert": "ai-edge-litert"}.get(module, module)


def load_interpreter(model: Path | bytes, *, num_threads: int = 1):
    """An interpreter with tensors allocated, or a ``ModelFileError`` naming the file."""
    interpreter = interpreter_class()
    try:
        with quiet_native_stderr():
            if isinstance(model, bytes):
                it = interpreter(model_content=model, num_threads=num_threads)
            else:
                it = interpreter(model_path=str(model), num_threads=num_threads)
            it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        name = "model" if isinstance(model, bytes) else str(model)
        raise ModelFileError(f"{name} is not a loadable TFLite model ({str(e).splitlines()[0][:160]})") from e
    return it


def dequantize(values, details: dict):
    """An output tensor in real numbers, from the scale and zero point the model declares."""
    import numpy as np

    scale, zero = details["quantization"]
    if values.dtype == np.float32 or not scale:
        return values
    return (values.astype(np.float32) - zero) * np.float32(scale)


def check_uint8_passthrough(details: dict, what: str) -> None:
    """Refuse a model unless it takes uint8 pixels as they are (scale 1, zero point 0).

    maskgate feeds frames and faces without any arithmetic per pixel; a model that
    expects them rescaled would see wrong pixels and fail silently.
    """
    import numpy as np

    scale, zero = details["quantization"]
    dtype = np.dtype(details["dtype"])
    if not is_uint8_passthrough(details):
        raise ModelFileError(
            f"{what} takes {dtype} input with scale {scale:g}, zero point {zero}; "
            "maskgate feeds uint8 pixels (scale 1, zero point 0)"
        )


def is_uint8_passthrough(details: dict) -> bool:
    """Whether an input tensor takes uint8 pixels unchanged (no quantisation arithmetic needed)."""
    import numpy as np

    scale, zero = details["quantization"]
    return np.dtype(details["dtype"]) == np.uint8 and abs(scale - 1.0) < 1e-4 and zero == 0
