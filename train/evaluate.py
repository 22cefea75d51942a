"""``maskgate evaluate``: score a trained Keras model on a folder of faces."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from maskgate.edge import atomic
from maskgate.edge.errors import DataError, ModelFileError

from .dataset import scan_folder

logger = logging.getLogger(__name__)


def resolve_model(path: Path) -> tuple[Path, list[str]]:
    """The .keras file and class names of a run directory or model file."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.keras"
    if not path.is_file():
        raise ModelFileError(f"model {path} not found (give a run directory or a .keras file)")
    if path.suffix != ".keras":
        raise ModelFileError(f"model {path}: expected a .keras file or a run directory")
    labels = path.parent / "labels.txt"
    if not labels.is_file():
        raise ModelFileError(f"model {path}: no labels.txt beside it to name its classes")
    classes = [line.strip() for line in labels.read_text(encoding="utf-8").splitlines() if line.strip()]
    return path, classes


def load_keras_model(path: Path):
    import keras

    try:
        return keras.models.load_model(path)
    except Exception as e:  # keras raises many types for a damaged archive
        raise ModelFileError(f"model {path} cannot be loaded: {str(e).splitlines()[0][:200]}") from e


def evaluate(
    model_path: Path, data: Path, *, threshold: float = 0.5, batch_size: int = 32, progress: bool = True
) -> dict[str, Any]:
    path, classes = resolve_model(model_path)
    scan = scan_folder(data, progress=progress)
    unknown = sorted(set(scan.classes) - set(classes))
    if unknown:
        raise DataError(
            f"{data}: class folder(s) {', '.join(unknown)} are not classes of the model ({classes})"
        )
    model = load_keras_model(path)
    if model.output_shape[-1] != len(classes):
        raise ModelFileError(
            f"model {path} has {model.output_shape[-1]} outputs but labels.txt names {len(classes)} classes"
        )
    size = int(model.input_shape[1])

    from .metrics import classification_metrics
    from .pipeline import predict

    probs = predict(model, scan.samples, input_size=size, batch_size=batch_size)
    y = [classes.index(s.label) for s in scan.samples]
    metrics = classification_metrics(y, probs, classes, threshold=threshold)
    metrics["skipped"] = [{"path": p, "reason": r} for p, r in scan.skipped]
    metrics["model"] = str(path)
    return metrics


def write_json(metrics: dict[str, Any], out: Path) -> None:
    atomic.write_text(Path(out), json.dumps(metrics, indent=2) + "\n")
