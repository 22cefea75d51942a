"""One classifier training run (``maskgate train``), from a data folder to a complete run directory.

``train`` is a list of steps: ``prepare_data`` (scan, VOC crops, label
conflicts, the classes asked for, the split), the weights, ``fit_model``,
``evaluate_model`` (the threshold on the validation split, metrics on the
test split and on its scene crops) and ``write_outputs``. How a model is
fitted (two phases, the best epoch of both, Ctrl-C) is shared with the U-Net
in ``maskgate.train.fitting``; the files every run has, in ``rundir``.

Order matters for the user: every check that can fail on their input (paths,
classes, split sizes, weights) runs before TensorFlow is imported and before
anything is written, and the run directory appears only when it is complete
(``atomic.staged_dir``: the model trains inside the staging directory, which
an error or a second Ctrl-C removes).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maskgate.edge.core import atomic, preprocess
from maskgate.edge.core.errors import DataError
from maskgate.edge.core.labels import INCORRECT, MASKED, UNMASKED
from maskgate.edge.core.splits import MANIFEST

from . import report, rundir
from .config import TrainConfig
from .dataset import (
    Sample,
    ScanResult,
    content_hash,
    drop_label_conflicts,
    locate,
    merge,
    scan_folder,
    scan_voc,
)
from .fitting import Fitted, Phase, check_cluster, fit_in_phases, resolve_weights, start_tensorflow
from .metrics import FROM_VALIDATION, choose_masked_threshold, classification_metrics
from .split import Split, split_counts, split_samples, write_manifest

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

logger = logging.getLogger(__name__)


# What --classes names; "auto" is the class folders of --data.
CLASS_SETS = {"2": (MASKED, UNMASKED), "3": (MASKED, UNMASKED, INCORRECT)}


def train(cfg: TrainConfig, *, callbacks: list | None = None, progress: bool = True) -> Path:
    """Run training as configured; return the finished run directory.

    ``callbacks`` are added to Keras's in both phases (tests use them to press Ctrl-C).
    """
    started = time.monotonic()
    rundir.check_new(cfg.out)
    check_cluster()
    data = prepare_data(cfg, progress=progress)
    weights = resolve_weights(cfg)

    strategy = start_tensorflow(cfg.seed)
    with atomic.staged_dir(cfg.out) as run:
        fitted = fit_model(
            cfg,
            data,
            weights,
            strategy,
            checkpoint=run / rundir.CHECKPOINT,
            callbacks=callbacks,
            progress=progress,
        )
        metrics, errors = evaluate_model(cfg, data, fitted.model)
        wall = time.monotonic() - started
        write_outputs(run, cfg, data, fitted, metrics=metrics, errors=errors, weights=weights, wall=wall)
    _log_summary(cfg, metrics, wall)
    return cfg.out


@dataclass
class Prepared:
    """The examples of a run and their split, settled before TensorFlow loads."""

    scan: ScanResult  # the examples, and what was skipped or left out
    classes: list[str]  # in output order
    roots: dict[str, Path]  # data roots by name, as split.json and reports name files
    split: Split
    counts: dict[str, dict[str, int]]  # images per split and class

    @property
    def samples(self) -> list[Sample]:
        return self.scan.samples

    def part(self, name: str) -> list[Sample]:
        return [self.samples[i] for i in self.split.indices(name)]

    def labels(self, name: str) -> list[int]:
        index = {c: i for i, c in enumerate(self.classes)}
        return [index[s.label] for s in self.part(name)]


def prepare_data(cfg: TrainConfig, *, progress: bool = True) -> Prepared:
    """Scan, add VOC crops, drop conflicting labels, check the classes and split.

    All of it can fail on the user's data, and all of it is CPU work that
    needs no TensorFlow, so it runs first: a wrong folder or a class too small
    to split is one line after seconds, not a traceback after minutes.
    """
    wanted = CLASS_SETS.get(cfg.classes)  # None: whatever class folders --data has
    scan = scan_folder(
        cfg.data,
        classes=wanted,
        max_per_class=cfg.max_per_class,
        seed=cfg.seed,
        workers=cfg.workers,
        progress=progress,
    )
    if scan.ignored_classes:
        logger.warning(
            "--classes %s: left out the class folder(s) %s", cfg.classes, ", ".join(scan.ignored_classes)
        )
    classes = scan.classes
    if wanted is None and len(classes) < 2:
        raise DataError(f"{cfg.data} has one class ({classes[0]}); training needs at least two class folders")
    roots = {"data": cfg.data}
    if cfg.voc is not None:
        voc = scan_voc(
            cfg.voc,
            classes=wanted or classes,
            margin=cfg.voc_margin,
            min_size=cfg.voc_min_size,
            workers=cfg.workers,
            progress=progress,
        )
        scan = merge(scan, voc)
        roots["voc"] = cfg.voc
    scan = drop_label_conflicts(scan)
    classes = scan.classes
    if wanted is not None and list(classes) != list(wanted):
        missing = [c for c in wanted if c not in classes]
        source = f"add {' and '.join(c + '/' for c in missing)} to --data" + (
            "" if cfg.voc else ", or --voc SCENES with such faces"
        )
        raise DataError(f"--classes {cfg.classes}: no {', '.join(missing)} examples; {source}")
    split = split_samples(
        scan.samples,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=cfg.seed,
        near_duplicate_bits=cfg.near_duplicate_bits,
        family_pattern=cfg.family_pattern or None,
    )
    counts = split_counts(scan.samples, split)
    _log_counts(counts, classes, len(set(split.groups)), scan.skipped)
    return Prepared(scan, classes, roots, split, counts)


def fit_model(
    cfg: TrainConfig,
    data: Prepared,
    weights: Path | None,
    strategy: tf.distribute.Strategy,
    *,
    checkpoint: Path,
    callbacks: list | None = None,
    progress: bool = True,
) -> Fitted:
    """Build the classifier and fit it in two phases: the head on the frozen backbone, then its top.

    Class weights count each class as much as the others in total, so the
    rare third class is not drowned by the two common ones.
    """
    import keras

    from . import model as model_lib
    from .pipeline import make_dataset

    ds_kwargs = dict(input_size=cfg.input_size, batch_size=cfg.batch_size, seed=cfg.seed)
    train_ds = make_dataset(
        data.part("train"),
        data.labels("train"),
        training=True,
        augment=model_lib.augmentation(cfg.seed),
        **ds_kwargs,
    )
    val_ds = make_dataset(data.part("val"), data.labels("val"), training=False, **ds_kwargs)
    with strategy.scope():
        model = model_lib.build_classifier(
            len(data.classes),
            backbone=cfg.backbone,
            input_size=cfg.input_size,
            alpha=cfg.alpha,
            weights=weights,
            dense_units=cfg.dense_units,
            dropout=cfg.dropout,
        )
    class_weight = _class_weights(data.labels("train"), len(data.classes)) if cfg.class_weights else None
    if class_weight:
        logger.info(
            "class weights: %s", ", ".join(f"{c} {class_weight[i]:.2f}" for i, c in enumerate(data.classes))
        )

    def open_top() -> None:
        n = model_lib.unfreeze_top(model, cfg.fine_tune_blocks)
        logger.info(
            "phase 2: fine-tuning the top %d blocks (%d layers), lr %g",
            cfg.fine_tune_blocks,
            n,
            cfg.fine_tune_learning_rate,
        )

    phases = []
    if cfg.epochs:
        phases.append(
            Phase(
                "head",
                cfg.epochs,
                cfg.learning_rate,
                begin=lambda: logger.info(
                    "phase 1: training the head, backbone frozen (%d epochs at most)", cfg.epochs
                ),
            )
        )
    if cfg.fine_tune_epochs and cfg.fine_tune_blocks:
        phases.append(Phase("fine-tune", cfg.fine_tune_epochs, cfg.fine_tune_learning_rate, begin=open_top))
    return fit_in_phases(
        model,
        phases,
        strategy=strategy,
        train_ds=train_ds,
        val_ds=val_ds,
        compile_args=lambda: {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
        row=_history_row,
        callbacks=lambda: [
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=cfg.patience, restore_best_weights=True
            ),
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.5, patience=cfg.lr_patience, min_lr=1e-7
            ),
            *(callbacks or []),
        ],
        checkpoint=checkpoint,
        class_weight=class_weight,
        progress=progress,
    )


def evaluate_model(
    cfg: TrainConfig, data: Prepared, model: keras.Model
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics on the test split, and its misclassified images.

    The gate threshold is chosen on the validation split (unless
    ``--threshold`` fixes it), never on the test split it is then measured on.
    With ``--voc``, the test split's scene crops are scored alone too: they
    are the faces a gate camera sees, unlike the folder close-ups.
    """
    from .pipeline import predict

    test, test_labels = data.part("test"), data.labels("test")
    threshold = cfg.threshold
    if threshold is None:
        val_probs = predict(model, data.part("val"), input_size=cfg.input_size, batch_size=cfg.batch_size)
        threshold = choose_masked_threshold(
            val_probs, data.labels("val"), data.classes, false_accept_cost=cfg.false_accept_cost
        )
        logger.info(
            "threshold %.4f, chosen on the validation split (a false accept costs %g rejects)",
            threshold,
            cfg.false_accept_cost,
        )
    probs = predict(model, test, input_size=cfg.input_size, batch_size=cfg.batch_size)
    metrics = classification_metrics(test_labels, probs, data.classes, threshold=threshold)
    if cfg.voc is not None:
        scene = [i for i, s in enumerate(test) if s.box is not None]
        if scene:
            metrics["scene_crops"] = classification_metrics(
                [test_labels[i] for i in scene], probs[scene], data.classes, threshold=threshold
            )
    return metrics, _misclassified(test, test_labels, probs, data.classes, data.roots)


def write_outputs(
    run: Path,
    cfg: TrainConfig,
    data: Prepared,
    fitted: Fitted,
    *,
    metrics: dict[str, Any],
    errors: list[dict[str, Any]],
    weights: Path | None,
    wall: float,
) -> None:
    """Everything a reviewer or the converter reads, into the staging directory.

    The checkpoint goes: ``model.keras`` is the best model, and a run holds
    one copy of it.
    """
    fitted.model.save(run / rundir.MODEL)
    (run / rundir.CHECKPOINT).unlink(missing_ok=True)
    # The device's side (size, resize, RGB 0..255) is the same for every backbone; the normalisation
    # inside the model is the backbone's. "classes" is the trained classes in output order;
    # "classes_option" what --classes asked for.
    config = rundir.run_config(
        cfg,
        {
            "threshold": metrics["threshold"],
            "threshold_source": "--threshold" if cfg.threshold is not None else FROM_VALIDATION,
            "classes": data.classes,
            "classes_option": cfg.classes,
        },
        weights=weights,
        preprocessing=preprocess.describe(cfg.input_size) | {"normalization": _normalization(cfg)},
    )
    dataset_hash = content_hash(data.samples, data.roots)
    scan, history = data.scan, fitted.history
    rundir.write_json(
        run / "dataset.json",
        {
            "content_hash": dataset_hash,
            "counts": data.counts,
            "skipped": scan.skipped,
            "voc_skipped": dict(scan.voc_skipped),
            "roots": {k: str(v) for k, v in data.roots.items()},
        },
    )
    write_manifest(run / MANIFEST, data.samples, data.split, roots=data.roots, seed=cfg.seed)
    if history:
        report.plot_history(history, run / "curves.png")
    # The matrix counts the arg-max class; FAR and FRR, the threshold (when there is a masked class).
    threshold = metrics["threshold"] if MASKED in data.classes else None
    report.plot_confusion(metrics["confusion"], data.classes, run / "confusion.png", threshold=threshold)
    rundir.write_run_files(
        run,
        labels=data.classes,
        config=config,
        metrics=metrics
        | {
            "split": "test",
            "interrupted": fitted.interrupted,
            "epochs": len(history),
            "wall_time_s": round(wall, 1),
            "misclassified": errors,
        },
        history=history,
        report=report.markdown_report(
            config=config,
            metrics=metrics,
            counts=data.counts,
            skipped=scan.skipped,
            voc_skipped=dict(scan.voc_skipped),
            errors=errors,
            dataset_hash=dataset_hash,
            wall_time_s=wall,
            interrupted=fitted.interrupted,
            history=history,
        ),
    )


def _log_summary(cfg: TrainConfig, metrics: dict[str, Any], wall: float) -> None:
    logger.info(
        "test accuracy %s, macro-F1 %.4f, FAR %s, FRR %s on %d images; run written to %s (%.1f min)",
        report.percent(metrics["accuracy"]),
        metrics["macro_f1"],
        report.percent(metrics["far"]),
        report.percent(metrics["frr"]),
        metrics["n"],
        cfg.out,
        wall / 60,
    )
    if "scene_crops" in metrics:
        sc = metrics["scene_crops"]
        logger.info(
            "scene crops of the test split: macro-F1 %.4f, recall %s on %d faces",
            sc["macro_f1"],
            ", ".join(f"{c} {report.percent(v['recall'])}" for c, v in sc["per_class"].items()),
            sc["n"],
        )


def _history_row(phase: str, epoch: int, logs: dict[str, Any], model: keras.Model) -> dict[str, Any]:
    """A history.csv row: the phase, Keras's losses and accuracies, and the learning rate of the epoch."""
    import keras

    return {
        "phase": phase,
        "loss": float(logs.get("loss", "nan")),
        "accuracy": float(logs.get("accuracy", "nan")),
        "val_loss": float(logs.get("val_loss", "nan")),
        "val_accuracy": float(logs.get("val_accuracy", "nan")),
        "learning_rate": float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)),
    }


def _normalization(cfg: TrainConfig) -> dict[str, Any]:
    from .backbones import get

    return get(cfg.backbone).normalization_info


def _log_counts(counts, classes, groups, skipped) -> None:
    width = max(len(c) for c in classes)
    logger.info("split (images; %d photo groups):", groups)
    logger.info("  %-*s %7s %7s %7s", width, "class", "train", "val", "test")
    for c in classes:
        logger.info("  %-*s %7d %7d %7d", width, c, counts["train"][c], counts["val"][c], counts["test"][c])
    if skipped:
        logger.warning(
            "skipped %d unreadable file(s); listed in report.md, e.g. %s (%s)",
            len(skipped),
            skipped[0][0],
            skipped[0][1],
        )


def _class_weights(labels: list[int], n: int) -> dict[int, float]:
    c = Counter(labels)
    total = len(labels)
    return {i: total / (n * c[i]) if c[i] else 0.0 for i in range(n)}


def _misclassified(samples, labels, probs, classes, roots) -> list[dict[str, Any]]:
    out = []
    for s, y, p in zip(samples, labels, probs, strict=True):
        k = int(p.argmax())
        if k != y:
            out.append(
                {
                    "path": locate(s.path, roots)[1],
                    "box": list(s.box) if s.box else None,
                    "label": classes[y],
                    "predicted": classes[k],
                    "score": float(p[k]),
                }
            )
    return out
