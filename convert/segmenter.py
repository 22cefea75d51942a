"""``maskgate convert segmenter``: a U-Net run becomes a verified int8 segmenter bundle, or nothing.

Steps: calibrate full-integer int8 on the run's *training* scenes (prepared by
the device's ``edge.unet.prepare_scene``), convert, stage the bundle, and run
the device's own ``unet`` code from it on the run's held-out *test* scenes
against the Keras float model: Dice of the int8 masks against the float
masks, and each model's Dice against the true masks. When int8's Dice falls
more than ``--tolerance`` below float's, the command refuses and writes
nothing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from maskgate.edge.core import atomic, bundle
from maskgate.edge.core.errors import ModelFileError
from maskgate.edge.core.litert import load_interpreter
from maskgate.edge.core.metadata import Metrics, SegmenterInput, SegmenterMetadata, SegmenterOutput
from maskgate.edge.core.preprocess import describe_scene as describe_preprocessing
from maskgate.edge.core.splits import MANIFEST
from maskgate.edge.core.sysinfo import resolve_threads
from maskgate.edge.detectors.unet import KIND, UnetDetector
from maskgate.train.segmentation.metrics import THRESHOLD, segmentation_metrics
from maskgate.train.segmentation.scenes import load_scenes, read_split_scenes

from . import report
from .common import (
    FLOAT_NAME,
    INT8_NAME,
    ConversionRefused,
    bundle_fields,
    check_output,
    quantization,
    tflite_latency,
    training_metrics,
)
from .config import SegmenterConvertConfig
from .quantize import to_tflite

logger = logging.getLogger(__name__)

# The float model's figures of a train-unet run's metrics.json, as ``metrics.training``.
_TRAINING_KEYS = ("dice", "iou", "precision", "recall", "images")


def resolve_run(path: Path) -> tuple[Path, dict[str, Any]]:
    """The .keras file of a train-unet run and the run's config.json, or one clear line."""
    path = Path(path)
    model = path / "model.keras" if path.is_dir() else path
    if not model.is_file():
        raise ModelFileError(f"model {model} not found (give a train-unet run directory or its model.keras)")
    try:
        config = json.loads((model.parent / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelFileError(f"model {model}: no readable config.json beside it; not a train-unet run") from e
    if not isinstance(config, dict) or config.get("kind") != KIND:
        raise ModelFileError(f"model {model} is not a segmenter run (a classifier? use `maskgate convert`)")
    if not isinstance(config.get("input_size"), int):
        raise ModelFileError(f"model {model}: its config.json names no input_size; not a complete run")
    return model, config


def calibration_scenes(images: np.ndarray) -> list[np.ndarray]:
    """Calibration inputs whose pixels span exactly 0..255.

    The input's int8 parameters come from the calibration range; with it at
    0..255 the uint8 input gets scale 1 and zero point 0, so the device passes
    scene pixels through untouched. Real scenes almost always hold a black and a
    white pixel already; one of each is set in the first scene to be sure.
    """
    out = [np.array(x) for x in images]
    out[0][0, 0] = 0
    out[0][0, 1] = 255
    return out


def convert_segmenter(cfg: SegmenterConvertConfig) -> Path:
    check_output(cfg.out)
    model_path, run_config = resolve_run(cfg.model)
    size = int(run_config["input_size"])
    manifest = model_path.parent / MANIFEST
    train_scenes = read_split_scenes(manifest, "train", cfg.voc)
    test_scenes = read_split_scenes(manifest, "test", cfg.voc)
    pick = np.random.default_rng(cfg.seed).permutation(len(train_scenes))[: cfg.samples]
    _, calib_images, _, skipped = load_scenes([train_scenes[i] for i in pick], size)
    test_scenes, test_images, test_masks, test_skipped = load_scenes(test_scenes, size)
    for name, reason in skipped + test_skipped:
        logger.warning("skipped %s: %s", name, reason)

    import keras

    from maskgate.train.segmentation import model as unet  # noqa: F401 - registers the run's loss for loading

    try:
        model = keras.models.load_model(model_path, compile=False)
    except (ValueError, OSError) as e:
        raise ModelFileError(f"model {model_path} cannot be loaded ({str(e).splitlines()[0][:160]})") from e
    if tuple(model.input_shape[1:]) != (size, size, 3):
        raise ModelFileError(f"model {model_path} takes {model.input_shape}, its run says {size} px scenes")
    logger.info("calibrating int8 on %d training scenes at %d px", len(calib_images), size)
    models = {INT8_NAME: to_tflite(model, "int8", calibration_scenes(calib_images), output_type="uint8")}
    if cfg.float32:
        models[FLOAT_NAME] = to_tflite(model, "float32")
    float_probs = model.predict(test_images.astype(np.float32), batch_size=16, verbose=0)[..., 0]

    it = load_interpreter(models[INT8_NAME])
    qin, qout = it.get_input_details()[0], it.get_output_details()[0]
    metadata = SegmenterMetadata(
        kind=KIND,
        **bundle_fields(models),
        classes=["face"],
        threshold=THRESHOLD,  # the mask threshold of training and verification; the device's is configured
        input=SegmenterInput(size=(size, size), dtype="uint8", layout="NHWC", quantization=quantization(qin)),
        output=SegmenterOutput(
            dtype=np.dtype(qout["dtype"]).name,
            shape=[int(v) for v in qout["shape"]],
            meaning="face probability per pixel",
            quantization=quantization(qout),
        ),
        preprocessing=describe_preprocessing(size),
        segmenter={
            "architecture": "U-Net, MobileNetV2 encoder (alpha 1.0)",
            "decoder_filters": run_config.get("decoder_filters"),
            "mask_threshold": THRESHOLD,
        },
        source={
            "model_sha256": bundle.sha256_file(model_path),
            "run": model_path.parent.name,
            "weights": run_config.get("weights"),
            "calibration": {"scenes": len(calib_images), "split": "train", "seed": cfg.seed},
        },
    )
    with atomic.staged_dir(cfg.out) as stage:
        staged = bundle.write_bundle(stage, kind=KIND, metadata=metadata, models=models, labels=["face"])

        logger.info("verifying on %d held-out test scenes against the Keras float model", len(test_images))
        detector = UnetDetector(staged, threads=resolve_threads())
        int8_probs = np.stack([detector.mask(x) for x in test_images])
        detector.close()
        verification = {
            "scenes": len(test_images),
            "float_vs_truth": segmentation_metrics(test_masks, float_probs),
            "int8_vs_truth": segmentation_metrics(test_masks, int8_probs),
            "int8_vs_float": segmentation_metrics(float_probs >= THRESHOLD, int8_probs),
            "probability_diff_mean": float(np.abs(int8_probs - float_probs).mean()),
            "probability_diff_max": float(np.abs(int8_probs - float_probs).max()),
            "tolerance": cfg.tolerance,
        }
        f_dice = verification["float_vs_truth"]["dice"]
        q_dice = verification["int8_vs_truth"]["dice"]
        agree = verification["int8_vs_float"]["dice"]
        logger.info(
            "Dice vs true masks: float %.4f, int8 %.4f (%s); int8 vs float masks %.4f",
            f_dice,
            q_dice,
            report.change(f_dice - q_dice, unit="", digits=4),
            agree,
        )
        if f_dice - q_dice > cfg.tolerance:
            raise ConversionRefused(
                f"int8 Dice {q_dice:.4f} is {f_dice - q_dice:.4f} below float's {f_dice:.4f} on "
                f"{len(test_images)} test scenes, beyond --tolerance {cfg.tolerance}; no bundle written"
            )
        timing: dict[str, Any] = {}
        if cfg.latency_runs:
            for threads in (1, 2):
                timing[f"{threads} thread(s)"] = {
                    name: tflite_latency(data, test_images[0], threads=threads, runs=cfg.latency_runs)
                    for name, data in models.items()
                }
        metadata = metadata.model_copy(
            update={
                "metrics": Metrics(
                    training=training_metrics(model_path.parent, _TRAINING_KEYS), verification=verification
                ),
                "latency_ms_on_converting_machine": timing,
            }
        )
        bundle.write_bundle(stage, kind=KIND, metadata=metadata, report=_report(metadata, models))
    logger.info("segmenter bundle written to %s (int8 model %.2f MB)", cfg.out, len(models[INT8_NAME]) / 1e6)
    return cfg.out


def _report(meta: SegmenterMetadata, models: dict[str, bytes]) -> str:
    v = meta.metrics.verification
    qin = meta.input.quantization

    def row(name: str, m: dict) -> list[str]:
        return [name, *(f"{m[k]:.4f}" for k in ("dice", "iou", "precision", "recall"))]

    dice_drop = v["float_vs_truth"]["dice"] - v["int8_vs_truth"]["dice"]
    lines = [
        *report.header(meta),
        f"U-Net face segmenter (MobileNetV2 encoder), full-integer int8: {meta.input_size} px uint8 "
        f"RGB scenes in (scale {qin.scale:g}, zero point {qin.zero_point}), uint8 face probability "
        'per pixel out. The device (`detector.backend = "unet"`) thresholds the mask and turns each '
        "connected region into a face box.",
        "",
        *report.files_table(models),
        f"## Verification on {v['scenes']} held-out test scenes (mask at probability >= {THRESHOLD})",
        "",
        report.table(
            ["masks", "Dice", "IoU", "precision", "recall"],
            [
                row("Keras float vs true", v["float_vs_truth"]),
                row("int8 vs true", v["int8_vs_truth"]),
                row("int8 vs Keras float", v["int8_vs_float"]),
            ],
        ),
        "",
        f"Dice float to int8: {report.change(dice_drop, unit='', digits=4)} (refused above a drop of "
        f"{v['tolerance']}). Probability difference: mean {v['probability_diff_mean']:.4f}, "
        f"max {v['probability_diff_max']:.4f}.",
        "",
    ]
    timing = meta.latency_ms_on_converting_machine
    if timing:
        names = list(next(iter(timing.values())))
        lines += report.latency_section(
            "Time per scene on the converting machine (p50 ms, network only)",
            meta,
            ["threads", *names],
            [[k, *(f"{t[n]['p50']:.2f}" for n in names)] for k, t in timing.items()],
        )
    return report.render(lines)
