"""What the classifier, detector and segmenter converters share, so a bundle means one thing.

Each converter keeps its model-specific steps (what to calibrate on, how to
verify, what to refuse); the rest is here, once: the refusal, the bundle's file
names, the fields every kind of metadata fills alike, the training run's figures
and the latency of a TFLite model. Never imports TensorFlow.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from maskgate.edge.core import atomic, sysinfo
from maskgate.edge.core.errors import MaskgateError, ModelFileError, OutputExistsError
from maskgate.edge.core.litert import load_interpreter, runtime_name
from maskgate.edge.core.metadata import FORMAT, VERSION, Quantization
from maskgate.edge.core.timing import measure, summarize

INT8_NAME = "model.tflite"
FLOAT_NAME = "model_float32.tflite"


class ConversionRefused(MaskgateError):
    """The int8 model is too far from its float original to ship."""


def check_output(out: Path) -> None:
    """Refuse ``--out`` before minutes of conversion rather than after: it must be new and creatable."""
    if out.exists():
        raise OutputExistsError(f"output directory {out} already exists; choose another --out")
    atomic.check_creatable(out, "--out")


def bundle_fields(models: dict[str, bytes]) -> dict[str, Any]:
    """The metadata fields every kind fills alike (format, version, model file names, libraries
    with the runtime, creation time), made in one place so their meaning cannot drift between kinds."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": INT8_NAME,
        "float_model": FLOAT_NAME if FLOAT_NAME in models else None,
        "libraries": sysinfo.library_versions() | {"runtime": runtime_name()},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def quantization(details: dict[str, Any]) -> Quantization:
    """A tensor's scale and zero point as the interpreter reads them, which the device trusts."""
    scale, zero_point = details["quantization"]
    return Quantization(scale=float(scale), zero_point=int(zero_point))


def read_json(path: Path) -> dict[str, Any]:
    """A run's JSON file, or ``{}``: provenance a converter records when it can, not a requirement."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def training_metrics(run: Path, keys: tuple[str, ...]) -> dict[str, Any] | None:
    """The float model's figures on its run's test split (``metrics.training``); ``None`` when the
    run has none to give, as for a third-party model."""
    m = read_json(run / "metrics.json")
    if not m:
        return None
    return {k: m[k] for k in keys if k in m}


def tflite_latency(
    model: bytes,
    image: np.ndarray,
    *,
    threads: int,
    runs: int,
    size: tuple[int, int] | None = None,
    warmup: int = 3,
) -> dict[str, float] | None:
    """Milliseconds per invocation on one input, after warm-up: a benchmark, not a test.

    ``image`` is the model's input as it is (a prepared face or scene), unless ``size``
    (width, height) is given: then the input is set to that size and the frame, unless it has that
    size already, resized to it within each timed run, on ``threads`` OpenCV threads, as OpenCV's
    ``blobFromImage`` does in the run it is compared with.
    """
    it = load_interpreter(model, num_threads=threads)
    d = it.get_input_details()[0]
    if size is not None:
        import cv2

        cv2.setNumThreads(threads)
        it.resize_tensor_input(d["index"], [1, size[1], size[0], 3])
        it.allocate_tensors()

    def run(_: object) -> None:
        same = size is None or (image.shape[1], image.shape[0]) == tuple(size)
        x = image if same else cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        it.set_tensor(d["index"], x[None].astype(d["dtype"], copy=False))
        it.invoke()

    wall, _ = measure(run, range(runs), warmup=warmup)
    return summarize(wall)


def output_order(tflite: bytes, n_outputs: int) -> list[int]:
    """Position in the interpreter's output list of each Keras output, in Keras's order.

    Shapes cannot tell the heads apart (the SSD has three 5x5 heads at 300x300, RetinaFace's
    heads of one level share their size);
    the model's signature keeps Keras's output order as ``output_0``, ``output_1``, ...
    """
    it = load_interpreter(tflite)
    by_name = {name: d["index"] for name, d in it.get_signature_runner().get_output_details().items()}
    positions = {d["index"]: k for k, d in enumerate(it.get_output_details())}
    try:
        return [positions[by_name[f"output_{k}"]] for k in range(n_outputs)]
    except KeyError as e:
        raise ModelFileError(f"the converted detector's signature lacks {e}; cannot order its heads") from e


def read_images(paths: list[Path]) -> list[np.ndarray]:
    """The images a converter calibrates or verifies on; one that cannot be read is skipped with a
    warning naming it, so a batch finishes and says what it left out."""
    import logging

    from maskgate.edge.core.imageio import read_image

    images = []
    for p in paths:
        try:
            images.append(read_image(p))
        except MaskgateError as e:
            logging.getLogger(__name__).warning("skipped %s: %s", p.name, e)
    return images


SHARED_ENV = "MASKGATE_SHARED"


def scene_images(folder: Path | None) -> tuple[Path, list[Path]]:
    """A detector converter's ``--representative`` folder (default: the shared scenes) and its
    images, sorted; a missing folder is one line."""
    import os

    from maskgate.edge.core.errors import DataError
    from maskgate.edge.core.imageio import IMAGE_SUFFIXES

    if folder is None:
        shared = os.environ.get(SHARED_ENV)
        if not shared:
            raise DataError(
                f"give --representative DIR (scene images), or set {SHARED_ENV} to the shared data"
            )
        folder = Path(shared) / "data" / "scenes" / "images"
    if not folder.is_dir():
        raise DataError(f"--representative {folder} is not a directory")
    return folder, sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
