"""``maskgate evaluate``: score a trained Keras model on faces it has not seen.

Either a folder of class subfolders, or a split of the model's own run,
rebuilt from the run's ``split.json`` (``--split test`` reproduces the run's
test metrics).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maskgate.edge.core import atomic
from maskgate.edge.core import bundle as bundle_lib
from maskgate.edge.core.errors import DataError, ModelFileError, first_line
from maskgate.edge.core.splits import MANIFEST
from maskgate.edge.core.sysinfo import resolve_threads
from maskgate.edge.gate.classifier import TFLiteClassifier, classifier_from_bundle

from .config import EvaluateConfig
from .dataset import Sample, load_example, scan_folder
from .rundir import LABELS, MODEL, write_json
from .split import read_manifest

logger = logging.getLogger(__name__)


@dataclass
class Scorer:
    """A model to score, whatever its format: probabilities for samples, and what it is."""

    kind: str  # "keras", "bundle" or "tflite"
    path: Path
    classes: list[str]
    run_dir: Path | None  # the training run it came from, for --split and its threshold
    threshold: float | None
    predict: Callable[[list[Sample], int], np.ndarray]


def resolve_model(path: Path) -> tuple[Path, list[str]]:
    """The .keras file and class names of a run directory or model file."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL
    if not path.is_file():
        raise ModelFileError(f"model {path} not found (give a run directory or a .keras file)")
    if path.suffix != ".keras":
        raise ModelFileError(f"model {path}: expected a .keras file or a run directory")
    return path, _labels_beside(path)


def _labels_beside(path: Path) -> list[str]:
    labels = path.parent / LABELS
    if not labels.is_file():
        raise ModelFileError(f"model {path}: no labels.txt beside it to name its classes")
    return [line.strip() for line in labels.read_text(encoding="utf-8").splitlines() if line.strip()]


def predict_tflite(clf, samples: list[Sample], batch_size: int) -> np.ndarray:
    """Probabilities from a TFLite classifier, faces prepared exactly as on the device."""
    out = []
    for i in range(0, len(samples), batch_size):
        batch = np.stack([load_example(s, clf.input_size) for s in samples[i : i + batch_size]])
        out.append(clf.predict(batch))
    return np.concatenate(out) if out else np.zeros((0, clf.num_classes), np.float32)


def open_model(path: Path) -> Scorer:
    """A run directory or .keras file (Keras), a bundle directory, or a .tflite with labels.txt beside it."""
    path = Path(path)
    if path.is_dir() and (path / bundle_lib.METADATA).is_file():
        b = bundle_lib.load_bundle(path, kind="classifier")
        clf = classifier_from_bundle(b, num_threads=resolve_threads())
        return Scorer("bundle", path, b.classes, None, b.threshold, lambda s, n: predict_tflite(clf, s, n))
    if path.suffix == ".tflite":
        if not path.is_file():
            raise ModelFileError(f"model {path} not found")
        classes = _labels_beside(path)
        clf = TFLiteClassifier(path, num_threads=resolve_threads())
        if clf.num_classes != len(classes):
            raise ModelFileError(
                f"model {path} has {clf.num_classes} outputs; labels.txt names {len(classes)}"
            )
        return Scorer("tflite", path, classes, None, None, lambda s, n: predict_tflite(clf, s, n))
    keras_path, classes = resolve_model(path)
    model = load_keras_model(keras_path)
    if model.output_shape[-1] != len(classes):
        raise ModelFileError(
            f"model {keras_path} has {model.output_shape[-1]} outputs; labels.txt names {len(classes)}"
        )
    from .pipeline import predict

    size = int(model.input_shape[1])
    run_dir = keras_path.parent
    return Scorer("keras", keras_path, classes, run_dir, _run_threshold(run_dir),
                  lambda s, n: predict(model, s, input_size=size, batch_size=n))  # fmt: skip


def load_keras_model(path: Path):
    import keras

    try:
        return keras.models.load_model(path)
    except Exception as e:  # keras raises many types for a damaged archive
        raise ModelFileError(f"model {path} cannot be loaded: {first_line(e, 200)}") from e


def _run_threshold(run_dir: Path) -> float | None:
    try:
        return float(json.loads((run_dir / "config.json").read_text(encoding="utf-8"))["threshold"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_split_samples(run_dir: Path, split: str) -> list[Sample]:
    """The samples of one split of a training run, rebuilt from its split.json."""
    manifest = run_dir / MANIFEST
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
    scorer = open_model(cfg.model)
    skipped: list[tuple[str, str]] = []
    if cfg.split is not None:
        if scorer.run_dir is None:
            raise DataError(f"--split needs a training run; {cfg.model} is a {scorer.kind} (use --data)")
        samples = run_split_samples(scorer.run_dir, cfg.split)
    else:
        scan = scan_folder(cfg.data, progress=progress)
        unknown = sorted(set(scan.classes) - set(scorer.classes))
        if unknown:
            raise DataError(
                f"{cfg.data}: folder(s) {', '.join(unknown)} are not classes of the model {scorer.classes}"
            )
        samples, skipped = scan.samples, scan.skipped
    threshold = cfg.threshold or scorer.threshold or 0.5

    from .metrics import classification_metrics

    probs = scorer.predict(samples, cfg.batch_size)
    y = [scorer.classes.index(s.label) for s in samples]
    metrics = classification_metrics(y, probs, scorer.classes, threshold=threshold)
    metrics["source"] = f"split {cfg.split} of {scorer.run_dir}" if cfg.split else str(cfg.data)
    metrics["skipped"] = [{"path": p, "reason": r} for p, r in skipped]
    metrics["model"] = {"path": str(scorer.path), "kind": scorer.kind}
    write_json(cfg.json_out, metrics)
    return metrics
