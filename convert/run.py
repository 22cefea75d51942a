"""``maskgate convert``: a trained run becomes a verified int8 bundle, or nothing.

Steps: draw calibration images from the run's training split, convert to
full-integer int8 (and float32 for comparison), run the Keras float model and
the int8 model on the run's held-out test split, refuse if int8 loses more
accuracy than the tolerance, time the models, and write the bundle (models,
labels, metadata, report, SHA256SUMS) into a folder that appears only when
complete.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from maskgate.edge.core import atomic, bundle, preprocess
from maskgate.edge.core.errors import DataError, MaskgateError
from maskgate.edge.core.imageio import read_image
from maskgate.edge.core.metadata import ClassifierInput, ClassifierMetadata, ClassifierOutput, Metrics
from maskgate.edge.core.sysinfo import resolve_threads
from maskgate.edge.gate.classifier import TFLiteClassifier
from maskgate.train.dataset import Sample, load_example, scan_folder
from maskgate.train.evaluate import load_keras_model, predict_tflite, resolve_model, run_split_samples
from maskgate.train.metrics import FROM_VALIDATION, choose_masked_threshold, classification_metrics

from . import report
from .common import (
    INT8_NAME,
    ConversionRefused,
    bundle_fields,
    check_output,
    quantization,
    read_json,
    tflite_latency,
    training_metrics,
)
from .config import ConvertConfig

logger = logging.getLogger(__name__)

# A run's --backbone as bundles name it (runs made before the option existed are MobileNetV2).
_BACKBONE_TITLES = {"mobilenet_v2": "MobileNetV2", "resnet50": "ResNet50"}
# The float model's figures of a classifier run's metrics.json, as ``metrics.training``.
_TRAINING_KEYS = ("accuracy", "macro_f1", "far", "frr", "roc_auc", "n")


def _stratified(samples: list[Sample], n: int, seed: int) -> list[Sample]:
    """``n`` samples with each class in its share of the split, seeded."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(s.label, []).append(s)
    picked: list[Sample] = []
    for members in by_class.values():
        k = max(1, round(n * len(members) / len(samples)))
        picked += [members[i] for i in rng.permutation(len(members))[:k]]
    return picked[:n] if len(picked) > n else picked


def _folder_images(folder: Path, size: int, n: int, seed: int) -> np.ndarray:
    if not folder.is_dir():
        raise DataError(f"--representative {folder} is not a directory")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    images = []
    for i in np.random.default_rng(seed).permutation(len(files)):
        try:
            images.append(preprocess.prepare_face(read_image(files[i]), size))
        except MaskgateError:
            continue
        if len(images) == n:
            break
    if not images:
        raise DataError(f"--representative {folder}: no readable images")
    return np.stack(images)


def _load(samples: list[Sample], size: int) -> np.ndarray:
    return np.stack([load_example(s, size) for s in samples])


def _predict(clf: TFLiteClassifier, images: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate([clf.predict(images[i : i + batch]) for i in range(0, len(images), batch)])


def _compare(
    y: list[int], p_float: np.ndarray, p_int8: np.ndarray, classes: list[str], thresholds: tuple[float, float]
) -> dict:
    """Float against int8, each at its own decision threshold (as each would run on a device)."""
    mf = classification_metrics(y, p_float, classes, threshold=thresholds[0])
    mq = classification_metrics(y, p_int8, classes, threshold=thresholds[1])
    diff = np.abs(p_float - p_int8)
    return {
        "n": len(y),
        "float": {k: mf[k] for k in ("accuracy", "far", "frr", "macro_f1", "confusion", "threshold")},
        "int8": {k: mq[k] for k in ("accuracy", "far", "frr", "macro_f1", "confusion", "threshold")},
        "accuracy_drop_pp": 100 * (mf["accuracy"] - mq["accuracy"]),
        "agreement": float((p_float.argmax(1) == p_int8.argmax(1)).mean()),
        "probability_diff_mean": float(diff.mean()),
        "probability_diff_max": float(diff.max()),
    }


def threshold_grid_warning(threshold: float, output: dict[str, Any]) -> str | None:
    """Why a threshold at the end of the int8 output grid is worth a look, or ``None``.

    The device decides on p(masked) as the uint8 output gives it, in steps of the output scale
    (1/256): a threshold chosen between the top two steps, say 0.9941, lets in only faces at the
    very top step, and a face the user sees at p(masked)=0.98 is denied. Within one step of
    either end of the grid, one side of the decision is a single step (or none).
    """
    scale, zero = output["quantization"]
    dtype = np.dtype(output["dtype"])
    if dtype.kind == "f" or not scale:
        return None  # a float output has no grid
    info = np.iinfo(dtype)
    grid = scale * (np.arange(info.min, info.max + 1, dtype=np.float64) - zero)
    grid = grid[(grid >= 0.0) & (grid <= 1.0)]
    unlock, deny = grid[grid >= threshold], grid[grid < threshold]
    if len(unlock) > 1 and len(deny) > 1:
        return None
    steps = f"{scale:.4f}" + (f" (1/{round(1 / scale)})" if abs(1 / scale - round(1 / scale)) < 1e-6 else "")
    if len(unlock) == 0:
        effect = f"no p(masked) the device can compute (at most {grid.max():.4f}) unlocks"
    elif len(deny) == 0:
        effect = "every p(masked) the device can compute unlocks"
    elif len(unlock) == 1:
        effect = f"only its top step, {unlock[0]:.4f}, unlocks and {deny.max():.4f} is already denied"
    else:
        effect = f"only its bottom step, {deny[0]:.4f}, is denied and {unlock.min():.4f} already unlocks"
    return (
        f"int8 threshold {threshold:.4f} sits at the end of the int8 output grid: p(masked) on the device "
        f"comes in steps of {steps}, so {effect}"
    )


def convert(cfg: ConvertConfig) -> Path:
    check_output(cfg.out)
    keras_path, classes = resolve_model(cfg.model)
    run_dir = keras_path.parent
    run_config = read_json(run_dir / "config.json")
    threshold = float(run_config.get("threshold", 0.5))

    if cfg.verify_data is not None:
        scan = scan_folder(cfg.verify_data, progress=False)
        verify = scan.samples
        verify_source = str(cfg.verify_data)
    else:
        verify = run_split_samples(run_dir, "test")
        verify_source = "test split of the run"
    unknown = sorted({s.label for s in verify} - set(classes))
    if unknown:
        raise DataError(f"verification data has classes {unknown} the model does not know")

    model = load_keras_model(keras_path)
    size = int(model.input_shape[1])
    if cfg.representative is not None:
        calibration = _folder_images(cfg.representative, size, cfg.samples, cfg.seed)
        calibration_source = str(cfg.representative)
    else:
        train = run_split_samples(run_dir, "train")
        calibration = _load(_stratified(train, cfg.samples, cfg.seed), size)
        calibration_source = "training split of the run, stratified"
    logger.info("calibrating on %d images (%s)", len(calibration), calibration_source)

    from .quantize import to_tflite

    models = {INT8_NAME: to_tflite(model, "int8", calibration.astype(np.float32))}
    for mode, wanted in [
        ("float32", cfg.float32),
        ("float16", cfg.float16),
        ("dynamic_range", cfg.dynamic_range),
    ]:
        if wanted:
            models[f"model_{mode}.tflite"] = to_tflite(model, mode)

    int8 = TFLiteClassifier(models[INT8_NAME], num_threads=resolve_threads())
    int8_threshold = threshold
    if run_config.get("threshold_source") == FROM_VALIDATION:
        # The device decides on int8 probabilities (steps of 1/256): choose its threshold on them,
        # on the same validation split and at the same cost the run used for the float model.
        val = run_split_samples(run_dir, "val")
        int8_threshold = choose_masked_threshold(
            predict_tflite(int8, val, 32),
            [classes.index(s.label) for s in val],
            classes,
            false_accept_cost=float(run_config["false_accept_cost"]),
        )
        logger.info(
            "int8 threshold %.4f, chosen on the run's validation split (float model: %.4f)",
            int8_threshold,
            threshold,
        )
    warning = threshold_grid_warning(int8_threshold, int8.output_details)
    if warning:
        logger.warning("%s", warning)

    logger.info("verifying on %d images (%s)", len(verify), verify_source)
    images = _load(verify, size)
    y = [classes.index(s.label) for s in verify]
    p_float = model.predict(images.astype(np.float32), batch_size=32, verbose=0)
    p_int8 = _predict(int8, images)
    verification = _compare(y, p_float, p_int8, classes, (threshold, int8_threshold)) | {
        "source": verify_source
    }
    logger.info(
        "float accuracy %.4f, int8 accuracy %.4f (%s), agreement %.4f",
        verification["float"]["accuracy"],
        verification["int8"]["accuracy"],
        report.change(verification["accuracy_drop_pp"]),
        verification["agreement"],
    )
    if verification["accuracy_drop_pp"] > cfg.tolerance:
        drop = verification["accuracy_drop_pp"]
        acc_f, acc_q = verification["float"]["accuracy"], verification["int8"]["accuracy"]
        raise ConversionRefused(
            f"int8 model loses {drop:.2f} pp accuracy ({100 * acc_f:.2f} % float, {100 * acc_q:.2f} % int8), "
            f"more than --tolerance {cfg.tolerance}; no bundle written"
        )

    latency: dict[str, Any] = {}
    if cfg.latency_runs:
        for name, data in models.items():
            for threads in (1, 2):
                latency[f"{name} @ {threads} thread(s)"] = tflite_latency(
                    data, images[0], threads=threads, runs=cfg.latency_runs, warmup=10
                )

    info = int8.input_details, int8.output_details  # quantisation as the interpreter reads it
    metadata = ClassifierMetadata(
        kind="classifier",
        **bundle_fields(models),
        classes=classes,
        threshold=int8_threshold,
        input=ClassifierInput(
            size=(size, size), dtype=str(np.dtype(info[0]["dtype"])), quantization=quantization(info[0])
        ),
        output=ClassifierOutput(dtype=str(np.dtype(info[1]["dtype"])), quantization=quantization(info[1])),
        preprocessing=preprocess.describe(size),
        metrics=Metrics(training=training_metrics(run_dir, _TRAINING_KEYS), verification=verification),
        latency_ms_on_converting_machine=latency,
        source={
            "keras_model_sha256": bundle.sha256_file(keras_path),
            "dataset_content_hash": read_json(run_dir / "dataset.json").get("content_hash"),
            "backbone": _BACKBONE_TITLES.get(
                run_config.get("backbone", "mobilenet_v2"), run_config.get("backbone")
            ),
            "alpha": run_config.get("alpha"),
            # inside the model, so not the device's concern; the device's side is ``preprocessing``
            "normalization": run_config.get("preprocessing", {}).get("normalization"),
            "calibration": {"images": len(calibration), "source": calibration_source, "seed": cfg.seed},
        },
    )
    with atomic.staged_dir(cfg.out) as stage:
        bundle.write_bundle(stage, kind="classifier", metadata=metadata, models=models, labels=classes,
                            report=_report(metadata, models))  # fmt: skip
    logger.info("bundle written to %s (int8 model %.2f MB)", cfg.out, len(models[INT8_NAME]) / 1e6)
    return cfg.out


def _report(meta: ClassifierMetadata, models: dict[str, bytes]) -> str:
    from maskgate.train.report import percent

    v = meta.metrics.verification
    qin, qout = meta.input, meta.output
    f, q = v["float"], v["int8"]
    lines = [
        *report.header(meta),
        "## Models",
        "",
        *report.files_table(models),
        f"int8 input: {qin.dtype} {list(qin.size)}, scale {qin.quantization.scale:.6g}, "
        f"zero point {qin.quantization.zero_point}; output: {qout.dtype}, "
        f"scale {qout.quantization.scale:.6g}, zero point {qout.quantization.zero_point}.",
        "",
        f"## Verification ({v['n']} images, {v['source']})",
        "",
        report.table(
            ["model", "accuracy", "FAR", "FRR", "threshold"],
            [
                [name, *(percent(m[k]) for k in ("accuracy", "far", "frr")), str(m["threshold"])]
                for name, m in (("Keras float32", f), ("TFLite int8", q))
            ],
        ),
        "",
        f"Accuracy {report.change(v['accuracy_drop_pp'])}; agreement {percent(v['agreement'])}; "
        f"probability difference mean {v['probability_diff_mean']:.4f}, max {v['probability_diff_max']:.4f}.",
        "",
    ]
    latency = meta.latency_ms_on_converting_machine
    if latency:
        lines += report.latency_section(
            "Latency per face on the converting machine (one face per invocation)",
            meta,
            ["model", "p50 ms", "p95 ms"],
            [[k, f"{x['p50']:.2f}", f"{x['p95']:.2f}"] for k, x in latency.items()],
        )
    return report.render(lines)
