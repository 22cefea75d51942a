"""``maskgate evaluate``: score a trained Keras model on faces it has not seen.

Either a folder of class subfolders, or a split of the model's own run,
rebuilt from the run's ``split.json`` (``--split test`` reproduces the run's
test metrics).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from maskgate.edge import atomic
from maskgate.edge.errors import DataError, ModelFileError

from .config import EvaluateConfig
from .dataset import Sample, scan_folder
from .split import read_manifest

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


def _run_threshold(run_dir: Path) -> float | None:
    try:
        return float(json.loads((run_dir / "config.json").read_text(encoding="utf-8"))["threshold"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _split_samples(run_dir: Path, split: str) -> list[Sample]:
    manifest = run_dir / "split.json"
    if not manifest.is_file():
        raise DataError(f"--split {split}: {manifest} not found; use --data with a model outside its run")
    rows = read_manifest(manifest, split)
    missing = [str(p) for p, _, _ in rows if not p.is_file()]
    if missing:
        raise DataError(f"--split {split}: {len(missing)} image(s) of the run are gone, e.g. {missing[0]}")
    return [Sample(path, label, box) for path, label, box in rows]


def evaluate(cfg: EvaluateConfig, *, progress: bool = True) -> dict[str, Any]:
    """Score the model and write ``cfg.json_out``; return the metrics."""
    atomic.check_creatable(cfg.json_out, "--json")
    path, classes = resolve_model(cfg.model)
    skipped: list[tuple[str, str]] = []
    if cfg.split is not None:
        samples = _split_samples(path.parent, cfg.split)
    else:
        scan = scan_folder(cfg.data, progress=progress)
        unknown = sorted(set(scan.classes) - set(classes))
        if unknown:
            raise DataError(
                f"{cfg.data}: class folder(s) {', '.join(unknown)} are not classes of the model {classes}"
            )
        samples, skipped = scan.samples, scan.skipped
    threshold = cfg.threshold or _run_threshold(path.parent) or 0.5

    model = load_keras_model(path)
    if model.output_shape[-1] != len(classes):
        raise ModelFileError(
            f"model {path} has {model.output_shape[-1]} outputs but labels.txt names {len(classes)} classes"
        )
    from .metrics import classification_metrics
    from .pipeline import predict

    probs = predict(model, samples, input_size=int(model.input_shape[1]), batch_size=cfg.batch_size)
    y = [classes.index(s.label) for s in samples]
    metrics = classification_metrics(y, probs, classes, threshold=threshold)
    metrics["source"] = f"split {cfg.split} of {path.parent}" if cfg.split else str(cfg.data)
    metrics["skipped"] = [{"path": p, "reason": r} for p, r in skipped]
    metrics["model"] = str(path)
    atomic.write_text(cfg.json_out, json.dumps(metrics, indent=2) + "\n")
    return metrics
