"""``maskgate convert detector``: OpenCV's float SSD becomes a verified int8 LiteRT bundle, or nothing.

Steps: rebuild the published network in Keras from its verified files
(``convert.caffe``), check it reproduces OpenCV's raw head outputs, convert
to float32 and full-integer int8 TFLite with a dynamic input size (calibrated
on scene images at every size to be verified), then run the device's own
``ssd-int8`` detector from the staged bundle against OpenCV's float detector
on held-out images: recall of OpenCV's boxes at IoU >= 0.5 and the score
correlation of matched boxes. Below ``--tolerance`` recall at any size, the
command refuses and writes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from maskgate.edge.core import atomic, bundle, fetch
from maskgate.edge.core.errors import DataError
from maskgate.edge.core.metadata import DetectorInput, DetectorMetadata, Metrics, SsdHead, SsdSpec
from maskgate.edge.core.preprocess import describe_ssd as describe_preprocessing
from maskgate.edge.core.sysinfo import resolve_threads
from maskgate.edge.core.timing import measure, summarize
from maskgate.edge.detectors.ssd import SSD_PROTOTXT, SSD_WEIGHTS, SsdInt8Detector, SsdOpenCvDetector
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
from .config import DetectorConvertConfig
from .quantize import to_tflite

logger = logging.getLogger(__name__)


def verify(
    images: list[np.ndarray],
    sizes: list[tuple[int, int]],
    int8_bundle,
    cfg: DetectorConvertConfig,
    opencv: SsdOpenCvDetector,
) -> dict[str, Any]:
    """int8 against OpenCV's float detector on the same frames, per input size."""
    result = {}
    for w, h in sizes:
        opencv.input_size = (w, h)
        opencv.confidence = cfg.verify_confidence
        opencv.min_face_px = 1  # both detectors keep every size, so neither counts boxes the other drops
        # int8 boxes are looked for a little below the threshold: a face at 0.51 float and 0.49 int8 is
        # the same face found, and the score correlation reports how far the scores move.
        int8 = SsdInt8Detector(
            int8_bundle,
            input_size=(w, h),
            confidence=cfg.verify_confidence * 0.8,
            min_face_px=1,
            threads=resolve_threads(),
        )
        total = found = strict = extra = 0
        scores: list[tuple[float, float]] = []
        for image in images:
            ref = [(d.box, d.score) for d in opencv.detect(image)]
            got = [(d.box, d.score) for d in int8.detect(image)]
            n, k, pairs = match_scored(ref, got)
            sure = [d for d in got if d[1] >= cfg.verify_confidence]
            _, k_strict, _ = match_scored(ref, sure)
            total, found, strict, scores = total + n, found + k, strict + k_strict, scores + pairs
            extra += len(sure) - k_strict
        a = np.asarray(scores) if scores else np.zeros((0, 2))
        result[f"{w}x{h}"] = {
            "images": len(images),
            "opencv_faces": total,
            "found": strict,
            "recall": strict / total if total else None,  # int8 at the same score threshold as OpenCV
            "found_within_margin": found,
            "recall_within_margin": found / total if total else None,  # int8 from 0.8 x the threshold
            "score_correlation": float(np.corrcoef(a[:, 0], a[:, 1])[0, 1]) if len(a) > 2 else None,
            "score_diff_mean": float(np.abs(a[:, 0] - a[:, 1]).mean()) if len(a) else None,
            "int8_only_boxes": int(max(extra, 0)),
        }
    return result


def raw_difference(
    keras_model,
    opencv: SsdOpenCvDetector,
    images: list[np.ndarray],
    names: list[str],
    sizes: list[tuple[int, int]],
) -> float:
    """Largest absolute difference between the Keras rebuild's head outputs and OpenCV's."""
    import cv2

    worst = 0.0
    for image in images:
        for w, h in sizes:
            opencv.input_size = (w, h)
            ref = opencv.raw(image, outputs=names)
            x = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)[None]
            ours = keras_model(x)
            for r, o in zip(ref, ours, strict=True):
                worst = max(worst, float(np.abs(r.transpose(0, 2, 3, 1) - np.asarray(o)).max()))
    return worst


def opencv_latency(
    opencv: SsdOpenCvDetector, image: np.ndarray, size: tuple[int, int], heads: list[str], *, threads: int,
    runs: int,
) -> dict[str, float] | None:  # fmt: skip
    """OpenCV's resize and network time per frame, stopping at the prediction heads as the TFLite
    models do, after warm-up: the baseline the int8 model's ``tflite_latency`` (resize included, on
    as many OpenCV threads) is compared with."""
    import cv2

    cv2.setNumThreads(threads)
    opencv.input_size = size
    wall, _ = measure(lambda _: opencv.raw(image, outputs=heads), range(runs), warmup=3)
    return summarize(wall)


def convert_detector(cfg: DetectorConvertConfig) -> Path:
    check_output(cfg.out)
    folder, files = scene_images(cfg.representative)
    if len(files) < 20:
        raise DataError(f"--representative {folder}: {len(files)} images; at least 20 are needed")
    order = np.random.default_rng(cfg.seed).permutation(len(files))
    calibration_files = [files[i] for i in order[: cfg.samples]]
    verify_files = [files[i] for i in order[cfg.samples : cfg.samples + cfg.verify_images]]
    if len(verify_files) < 10:
        raise DataError(
            f"--representative {folder}: too few images left to verify on after --samples {cfg.samples}"
        )

    prototxt, weights = fetch.ensure(SSD_PROTOTXT), fetch.ensure(SSD_WEIGHTS)
    from .caffe import build_keras, ssd_spec

    spec = ssd_spec(prototxt)
    model, names = build_keras(prototxt, weights)
    opencv = SsdOpenCvDetector(prototxt, weights, threads=resolve_threads())
    verify_images = read_images(verify_files)
    diff = raw_difference(model, opencv, verify_images[:5], names, cfg.sizes)
    logger.info("Keras rebuild vs OpenCV, raw head outputs on 5 frames: max abs difference %.2e", diff)
    if diff > 1e-3:
        raise ConversionRefused(f"the rebuilt network differs from OpenCV's by {diff:.3g}; no bundle written")

    import cv2

    calibration = []
    for i, image in enumerate(read_images(calibration_files)):
        w, h = cfg.sizes[i % len(cfg.sizes)]  # every size is calibrated: activations grow with the input
        calibration.append(cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR))
    logger.info(
        "calibrating on %d images from %s at %s",
        len(calibration),
        folder,
        ", ".join(f"{w}x{h}" for w, h in cfg.sizes),
    )
    models = {INT8_NAME: to_tflite(model, "int8", calibration, output_type="int8")}
    if cfg.float32:
        models[FLOAT_NAME] = to_tflite(model, "float32")
    outputs = output_order(models[INT8_NAME], len(names))

    metadata = DetectorMetadata(
        kind="detector",
        **bundle_fields(models),
        classes=["face"],
        threshold=0.5,  # the published detector's usual confidence; the device's is in its config
        input=DetectorInput(dtype="uint8", size=None, size_multiple=4, layout="NHWC"),
        preprocessing=describe_preprocessing(),
        ssd=SsdSpec(
            heads=[
                SsdHead(**{k: v for k, v in asdict(h).items() if k != "head"}, name=loc)
                for h, loc in zip(spec.heads, spec.loc_heads, strict=True)
            ],
            outputs=outputs,
            nms_threshold=spec.nms_threshold,
            top_k=spec.top_k,
            keep_top_k=spec.keep_top_k,
            confidence_threshold=spec.confidence_threshold,
        ),
        source={
            "prototxt_sha256": bundle.sha256_file(prototxt),
            "caffemodel_sha256": bundle.sha256_file(weights),
            "rebuild_max_abs_diff": diff,
            "calibration": {
                "images": len(calibration),
                "folder": folder.name,
                "seed": cfg.seed,
                "sizes": [list(s) for s in cfg.sizes],
            },
        },
    )
    with atomic.staged_dir(cfg.out) as stage:
        staged = bundle.write_bundle(
            stage, kind="detector", metadata=metadata, models=models, labels=["face"]
        )

        logger.info("verifying on %d held-out images against OpenCV's float detector", len(verify_images))
        verification = verify(verify_images, cfg.sizes, staged, cfg, opencv)
        empty = [size for size, v in verification.items() if v["recall"] is None]
        if empty:
            raise ConversionRefused(
                f"OpenCV's detector found no face from score {cfg.verify_confidence} at {', '.join(empty)} "
                "in the verification images; nothing to verify against"
            )
        worst = min(v["recall"] for v in verification.values())
        for size, v in verification.items():
            logger.info(
                "%s: int8 finds %d of OpenCV's %d faces (recall %.4f), score correlation %s",
                size,
                v["found"],
                v["opencv_faces"],
                v["recall"],
                v["score_correlation"],
            )
        if worst < cfg.tolerance:
            raise ConversionRefused(
                f"int8 detector finds {100 * worst:.1f} % of OpenCV's faces, below --tolerance "
                f"{100 * cfg.tolerance:.1f} %; no bundle written"
            )
        timing: dict[str, Any] = {}
        if cfg.latency_runs:
            image, runs = verify_images[0], cfg.latency_runs
            for size in cfg.sizes:
                for threads in (1, 2):
                    key = f"{size[0]}x{size[1]} @ {threads} thread(s)"
                    timing[key] = {
                        "ssd-int8": tflite_latency(
                            models[INT8_NAME], image, threads=threads, runs=runs, size=size
                        ),
                        "ssd-opencv": opencv_latency(opencv, image, size, names, threads=threads, runs=runs),
                    }
                    if FLOAT_NAME in models:
                        timing[key]["tflite-float32"] = tflite_latency(
                            models[FLOAT_NAME], image, threads=threads, runs=runs, size=size
                        )
        metadata = metadata.model_copy(
            update={
                "metrics": Metrics(
                    training=None,  # a third-party model: no run of ours to report
                    verification=verification
                    | {"tolerance": cfg.tolerance, "confidence": cfg.verify_confidence},
                ),
                "latency_ms_on_converting_machine": timing,
            }
        )
        bundle.write_bundle(stage, kind="detector", metadata=metadata, report=_report(metadata, models))
    logger.info("detector bundle written to %s (int8 model %.2f MB)", cfg.out, len(models[INT8_NAME]) / 1e6)
    return cfg.out


def _report(meta: DetectorMetadata, models: dict[str, bytes]) -> str:
    v = meta.metrics.verification
    lines = [
        *report.header(meta),
        "OpenCV's ResNet-10 SSD face detector, rebuilt with its published weights (raw head outputs within "
        f"{meta.source['rebuild_max_abs_diff']:.1e} of OpenCV's), full-integer int8: uint8 BGR pixels in, "
        "int8 head outputs out; prior boxes, decoding and NMS on the device "
        "(`edge/detectors/ssd_decoding.py`).",
        "",
        *report.files_table(models),
        f"## Verification against OpenCV's float detector (score >= {v['confidence']}, IoU >= 0.5)",
        "",
        "Recall counts int8 boxes at the same score threshold; the margin column also counts int8 boxes "
        f"from {0.8 * v['confidence']:.2f}, since scores move a little in int8.",
        "",
        report.table(
            _VERIFICATION_COLUMNS, [_verification_row(k, r) for k, r in v.items() if isinstance(r, dict)]
        ),
        "",
    ]
    timing = meta.latency_ms_on_converting_machine
    if timing:
        lines += report.latency_section(
            "Time per frame on the converting machine (p50 ms: resize and network, no post-processing)",
            meta,
            ["input, threads", "ssd-int8", "ssd-opencv", "tflite-float32", "int8 speed-up over OpenCV"],
            [_timing_row(key, t) for key, t in timing.items()],
        )
    return report.render(lines)


_VERIFICATION_COLUMNS = [
    "input",
    "images",
    "OpenCV faces",
    "found by int8",
    "recall",
    "recall within margin",
    "score correlation",
    "int8-only boxes",
]


def _verification_row(size: str, r: dict[str, Any]) -> list[str]:
    corr = f"{r['score_correlation']:.4f}" if r["score_correlation"] is not None else "n/a"
    counts = [str(r[k]) for k in ("images", "opencv_faces", "found")]
    recalls = [f"{r['recall']:.4f}", f"{r['recall_within_margin']:.4f}"]
    return [size, *counts, *recalls, corr, str(r["int8_only_boxes"])]


def _timing_row(key: str, t: dict[str, Any]) -> list[str]:
    p50 = {name: x["p50"] for name, x in t.items()}
    f32 = f"{p50['tflite-float32']:.2f}" if "tflite-float32" in p50 else "-"
    speed_up = p50["ssd-opencv"] / p50["ssd-int8"]
    return [key, f"{p50['ssd-int8']:.2f}", f"{p50['ssd-opencv']:.2f}", f32, f"{speed_up:.1f}x"]
