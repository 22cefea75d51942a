"""One training run, from a data folder to a complete run directory.

Order matters for the user: every check that can fail on their input (paths,
classes, split sizes, weights) runs before TensorFlow is imported and before
anything is written, and the run directory appears only when it is complete.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from maskgate.edge.core import atomic, fetch, preprocess, sysinfo
from maskgate.edge.core.errors import ConfigError, DataError, FetchError, OutputExistsError
from maskgate.edge.core.labels import INCORRECT, MASKED, UNMASKED

from . import report
from .config import BACKBONE_WEIGHTS, TrainConfig
from .dataset import content_hash, drop_label_conflicts, locate, merge, scan_folder, scan_voc
from .distribute import check_cluster
from .metrics import FROM_VALIDATION, choose_masked_threshold, classification_metrics
from .split import split_counts, split_samples, write_manifest

logger = logging.getLogger(__name__)


# What --classes names; "auto" is the class folders of --data.
CLASS_SETS = {"2": (MASKED, UNMASKED), "3": (MASKED, UNMASKED, INCORRECT)}


def resolve_weights(cfg: TrainConfig) -> Path | None:
    if cfg.weights == "none":
        return None
    if cfg.weights == "imagenet":
        if cfg.alpha != 1.0:
            raise ConfigError(
                f"--alpha {cfg.alpha}: only alpha 1.0 ImageNet weights are in the model manifest; "
                "pass --weights PATH or --weights none"
            )
        name = BACKBONE_WEIGHTS[cfg.backbone]
        try:
            return fetch.ensure(name)
        except fetch.NotInMirror as e:
            url = fetch.load_manifest()[name].url
            raise FetchError(
                f"--weights imagenet: {e} (${fetch.MIRROR_ENV}); put the file there (official copy: {url}) "
                "or pass --weights PATH"
            ) from e
        except fetch.DownloadFailed as e:
            url = fetch.load_manifest()[name].url
            raise FetchError(
                f"--weights imagenet: cannot download {url} ({e.reason}); offline, put {name} into a "
                f"folder and set ${fetch.MIRROR_ENV} to it, or pass --weights PATH"
            ) from e
        except FetchError as e:
            raise FetchError(f"--weights imagenet: {e}; or pass --weights PATH to a copy of it") from e
    path = Path(cfg.weights)
    if not path.is_file():
        raise ConfigError(f"--weights {path}: no such file (use 'imagenet', 'none' or a path)")
    return path


def train(cfg: TrainConfig, *, callbacks: list | None = None, progress: bool = True) -> Path:
    """Run training as configured; return the finished run directory."""
    started = time.monotonic()
    if cfg.out.exists():
        raise OutputExistsError(f"output directory {cfg.out} already exists; choose another --out")
    atomic.check_creatable(cfg.out, "--out")
    check_cluster()

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
    samples = scan.samples
    split = split_samples(
        samples,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=cfg.seed,
        near_duplicate_bits=cfg.near_duplicate_bits,
        family_pattern=cfg.family_pattern or None,
    )
    counts = split_counts(samples, split)
    _log_counts(counts, classes, len(set(split.groups)), scan.skipped)
    weights = resolve_weights(cfg)

    import keras

    from . import model as model_lib
    from .pipeline import choose_strategy, make_dataset, predict, strategy_name

    keras.utils.set_random_seed(cfg.seed)
    index = {c: i for i, c in enumerate(classes)}
    parts = {name: split.indices(name) for name in ("train", "val", "test")}
    subset = {name: [samples[i] for i in idx] for name, idx in parts.items()}
    labels = {name: [index[s.label] for s in subset[name]] for name in parts}

    strategy = choose_strategy()
    logger.info("distribution: %s, %d replica(s)", strategy_name(strategy), strategy.num_replicas_in_sync)
    with atomic.staged_dir(cfg.out) as run:
        checkpoint = run / "checkpoint.keras"
        ds_kwargs = dict(input_size=cfg.input_size, batch_size=cfg.batch_size, seed=cfg.seed)
        train_ds = make_dataset(
            subset["train"],
            labels["train"],
            training=True,
            augment=model_lib.augmentation(cfg.seed),
            **ds_kwargs,
        )
        val_ds = make_dataset(subset["val"], labels["val"], training=False, **ds_kwargs)

        with strategy.scope():
            model = model_lib.build_classifier(
                len(classes),
                backbone=cfg.backbone,
                input_size=cfg.input_size,
                alpha=cfg.alpha,
                weights=weights,
                dense_units=cfg.dense_units,
                dropout=cfg.dropout,
            )
        class_weight = _class_weights(labels["train"], len(classes)) if cfg.class_weights else None
        if class_weight:
            logger.info(
                "class weights: %s", ", ".join(f"{c} {class_weight[i]:.2f}" for i, c in enumerate(classes))
            )
        log = _EpochLog(keras)
        best = _BestCheckpoint(keras, checkpoint)
        extra = list(callbacks or [])

        def fit(phase: str, epochs: int, lr: float) -> None:
            log.phase = phase
            with strategy.scope():
                model.compile(
                    optimizer=keras.optimizers.Adam(lr),
                    loss="sparse_categorical_crossentropy",
                    metrics=["accuracy"],
                )
            model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=epochs,
                class_weight=class_weight,
                shuffle=False,  # the dataset shuffles itself
                verbose=(1 if sys.stderr.isatty() else 2) if progress else 0,
                callbacks=[
                    log,
                    best,
                    keras.callbacks.EarlyStopping(
                        monitor="val_loss", patience=cfg.patience, restore_best_weights=True
                    ),
                    keras.callbacks.ReduceLROnPlateau(
                        monitor="val_loss", factor=0.5, patience=cfg.lr_patience, min_lr=1e-7
                    ),
                    *extra,
                ],
            )

        interrupted = False
        try:
            if cfg.epochs:
                logger.info("phase 1: training the head, backbone frozen (%d epochs at most)", cfg.epochs)
                fit("head", cfg.epochs, cfg.learning_rate)
            if cfg.fine_tune_epochs and cfg.fine_tune_blocks:
                if best.saved:
                    model.load_weights(checkpoint)
                n = model_lib.unfreeze_top(model, cfg.fine_tune_blocks)
                logger.info(
                    "phase 2: fine-tuning the top %d blocks (%d layers), lr %g",
                    cfg.fine_tune_blocks,
                    n,
                    cfg.fine_tune_learning_rate,
                )
                fit("fine-tune", cfg.fine_tune_epochs, cfg.fine_tune_learning_rate)
        except KeyboardInterrupt:
            if not best.saved:
                raise
            interrupted = True
            logger.warning("interrupted: evaluating the best checkpoint so far (Ctrl-C again aborts)")

        final = keras.models.load_model(checkpoint) if best.saved else model
        threshold = cfg.threshold
        if threshold is None:
            val_probs = predict(final, subset["val"], input_size=cfg.input_size, batch_size=cfg.batch_size)
            threshold = choose_masked_threshold(
                val_probs, labels["val"], classes, false_accept_cost=cfg.false_accept_cost
            )
            logger.info(
                "threshold %.4f, chosen on the validation split (a false accept costs %g rejects)",
                threshold,
                cfg.false_accept_cost,
            )
        probs = predict(final, subset["test"], input_size=cfg.input_size, batch_size=cfg.batch_size)
        metrics = classification_metrics(labels["test"], probs, classes, threshold=threshold)
        if cfg.voc is not None:
            # The held-out faces cropped from VOC scenes alone: the distribution a gate camera sees.
            scene = [i for i, s in enumerate(subset["test"]) if s.box is not None]
            if scene:
                metrics["scene_crops"] = classification_metrics(
                    [labels["test"][i] for i in scene], probs[scene], classes, threshold=threshold
                )
        errors = _misclassified(subset["test"], labels["test"], probs, classes, roots)
        history = log.records
        wall = time.monotonic() - started
        dataset_hash = content_hash(samples, roots)

        final.save(run / "model.keras")
        checkpoint.unlink(missing_ok=True)
        _write_outputs(
            run,
            cfg=cfg,
            classes=classes,
            metrics=metrics,
            counts=counts,
            scan=scan,
            split=split,
            samples=samples,
            roots=roots,
            history=history,
            errors=errors,
            dataset_hash=dataset_hash,
            wall=wall,
            interrupted=interrupted,
            weights=weights,
        )
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
    return cfg.out


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


def _write_outputs(
    run: Path,
    *,
    cfg,
    classes,
    metrics,
    counts,
    scan,
    split,
    samples,
    roots,
    history,
    errors,
    dataset_hash,
    wall,
    interrupted,
    weights,
) -> None:
    def dump(name: str, obj: Any) -> None:
        atomic.write_text(run / name, json.dumps(obj, indent=2, default=str) + "\n")

    # The device's side (size, resize, RGB 0..255) is the same for every backbone; the normalisation
    # inside the model is the backbone's. "classes" is the trained classes in output order;
    # "classes_option" what --classes asked for.
    preprocessing = preprocess.describe(cfg.input_size) | {"normalization": _normalization(cfg)}
    config = cfg.model_dump(mode="json") | {
        "threshold": metrics["threshold"],
        "threshold_source": "--threshold" if cfg.threshold is not None else FROM_VALIDATION,
        "classes": classes,
        "classes_option": cfg.classes,
        "weights_file": str(weights) if weights else None,
        "weights_sha256": fetch.digest(weights.read_bytes()) if weights else None,
        "preprocessing": preprocessing,
        "command": shlex.join(["maskgate", *sys.argv[1:]])
        if sys.argv and "maskgate" in sys.argv[0]
        else None,
    }
    atomic.write_text(run / "labels.txt", "\n".join(classes) + "\n")
    dump(
        "metrics.json",
        metrics
        | {
            "split": "test",
            "interrupted": interrupted,
            "epochs": len(history),
            "wall_time_s": round(wall, 1),
            "misclassified": errors,
        },
    )
    dump("config.json", config)
    dump("environment.json", {"libraries": sysinfo.library_versions(), "machine": sysinfo.machine()})
    dump(
        "dataset.json",
        {
            "content_hash": dataset_hash,
            "counts": counts,
            "skipped": scan.skipped,
            "voc_skipped": dict(scan.voc_skipped),
            "roots": {k: str(v) for k, v in roots.items()},
        },
    )
    write_manifest(run / "split.json", samples, split, roots=roots, seed=cfg.seed)
    if history:
        keys = list(history[0])
        rows = [",".join(keys)] + [",".join(str(h[k]) for k in keys) for h in history]
        atomic.write_text(run / "history.csv", "\n".join(rows) + "\n")
        report.plot_history(history, run / "curves.png")
    report.plot_confusion(metrics["confusion"], classes, run / "confusion.png")
    atomic.write_text(
        run / "report.md",
        report.markdown_report(
            config=config,
            metrics=metrics,
            counts=counts,
            skipped=scan.skipped,
            voc_skipped=dict(scan.voc_skipped),
            errors=errors,
            dataset_hash=dataset_hash,
            wall_time_s=wall,
            interrupted=interrupted,
            history=history,
        ),
    )


def _EpochLog(keras):  # noqa: N802 - factory: keras is imported lazily
    class EpochLog(keras.callbacks.Callback):
        """Per-epoch metrics across both phases, with phase and learning rate."""

        def __init__(self) -> None:
            super().__init__()
            self.phase = ""
            self.records: list[dict[str, Any]] = []

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            self.records.append(
                {
                    "phase": self.phase,
                    "loss": float(logs.get("loss", "nan")),
                    "accuracy": float(logs.get("accuracy", "nan")),
                    "val_loss": float(logs.get("val_loss", "nan")),
                    "val_accuracy": float(logs.get("val_accuracy", "nan")),
                    "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
                }
            )

    return EpochLog()


def _BestCheckpoint(keras, path: Path):  # noqa: N802
    class BestCheckpoint(keras.callbacks.Callback):
        """Saves the model whenever val_loss beats every earlier epoch of *both* phases.

        Keras's ModelCheckpoint forgets its best value between ``fit`` calls, so
        the first fine-tuning epoch would overwrite a better head-only model.
        Written under a temporary name and renamed, so Ctrl-C never truncates it.
        """

        def __init__(self) -> None:
            super().__init__()
            self.best = float("inf")
            self.saved = False

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get("val_loss")
            if value is None or not value < self.best:
                return
            self.best = float(value)
            tmp = path.with_name(".tmp-" + path.name)
            try:
                self.model.save(tmp)
                os.replace(tmp, path)
                self.saved = True
            finally:
                tmp.unlink(missing_ok=True)  # a Ctrl-C mid-save must not leave it in the run

    return BestCheckpoint()
