"""``maskgate train-unet``: VOC scenes and their face boxes become a U-Net face segmenter run.

``train_unet`` is a list of steps, the classifier's in the same order:
``pick_scenes`` (the annotated scenes, at most ``--max-scenes``), the encoder
weights, ``prepare_data`` (decode, masks, split by scene), ``fit_model``,
``evaluate_model`` (pixel metrics on the validation and test scenes) and
``write_outputs``. Fitting goes through the spine shared with the classifier
(``maskgate.train.fitting``): the decoder on a frozen encoder, then
optionally the whole network at a lower rate, each phase stopping early on
validation loss, the best weights of either phase kept, Ctrl-C evaluating
the best so far.

Every check that can fail on the user's input (paths, VOC layout, weights,
cluster) runs before TensorFlow is imported and before anything is written;
the weights are resolved before minutes of decoding. The run directory
appears only when complete (``atomic.staged_dir``), as classifier runs do.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from maskgate.edge.core import atomic
from maskgate.edge.core.preprocess import describe_scene as describe_preprocessing
from maskgate.edge.core.splits import MANIFEST
from maskgate.edge.detectors.unet import KIND

from .. import rundir
from ..fitting import Fitted, Phase, check_cluster, fit_in_phases, resolve_weights, start_tensorflow
from . import report
from .config import SegmentTrainConfig
from .metrics import THRESHOLD, segmentation_metrics
from .scenes import (
    SIDE_METHOD,
    SPLITS,
    Scene,
    list_scenes,
    load_scenes,
    split_by_side,
    split_scenes,
    write_manifest,
)

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

logger = logging.getLogger(__name__)

LABELS = ["face"]  # one class: every annotated box, whatever its VOC label, is a face


def train_unet(cfg: SegmentTrainConfig, *, progress: bool = True) -> Path:
    """Run U-Net training as configured; return the finished run directory."""
    started = time.monotonic()
    rundir.check_new(cfg.out)
    check_cluster()
    listed, skipped = pick_scenes(cfg)
    weights = resolve_weights(cfg)
    data = prepare_data(cfg, listed, skipped)

    strategy = start_tensorflow(cfg.seed)
    fitted = fit_model(cfg, data, weights, strategy, progress=progress)
    metrics, test_probs = evaluate_model(cfg, data, fitted.model)
    wall = time.monotonic() - started
    with atomic.staged_dir(cfg.out) as run:
        write_outputs(
            run, cfg, data, fitted, metrics=metrics, test_probs=test_probs, weights=weights, wall=wall
        )
    logger.info("run written to %s (%.1f min)", cfg.out, wall / 60)
    return cfg.out


@dataclass
class SceneData:
    """Every usable scene decoded once, with its mask and its split."""

    scenes: list[Scene]
    images: np.ndarray  # N x S x S x 3 uint8 RGB, as the device prepares them
    masks: np.ndarray  # N x S x S uint8 0/1
    assignment: list[str]  # split name per scene
    skipped: list[tuple[str, str]]  # (file, reason): unannotated, missing or unreadable

    def index(self, split: str) -> np.ndarray:
        return np.array([i for i, a in enumerate(self.assignment) if a == split], dtype=np.int64)


def pick_scenes(cfg: SegmentTrainConfig) -> tuple[list[Scene], list[tuple[str, str]]]:
    """The annotated scenes to train on, and those skipped: listing is quick, decoding is not, so
    a wrong folder fails here; ``--max-scenes`` draws a seeded subset for quick runs."""
    listed, skipped = list_scenes(cfg.voc)
    if cfg.max_scenes is not None and len(listed) > cfg.max_scenes:
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(listed))[: cfg.max_scenes])
        listed = [listed[i] for i in keep]
    return listed, skipped


def prepare_data(cfg: SegmentTrainConfig, listed: list[Scene], skipped: list[tuple[str, str]]) -> SceneData:
    """Decode every scene once, draw its mask and split by scene, before TensorFlow loads.

    The log states the face-pixel share of the training masks: it is what
    the Dice term of the loss is there for.
    """
    scenes, images, masks, unreadable = load_scenes(listed, cfg.input_size, workers=cfg.workers)
    skipped = skipped + unreadable
    if cfg.scene_split:
        names = [s.path.name for s in scenes]
        assignment = split_by_side(names, val_fraction=cfg.val_fraction, seed=cfg.seed)
    else:
        assignment = split_scenes(
            len(scenes), val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed
        )
    data = SceneData(scenes, images, masks, assignment, skipped)
    logger.info(
        "scenes: %d train, %d val, %d test%s (%d faces); face pixels %.1f %% of the training masks",
        *(len(data.index(s)) for s in SPLITS),
        " (train and val from the 'tune' side, test the 'report' side)" if cfg.scene_split else "",
        sum(len(s.boxes) for s in scenes),
        100 * masks[data.index("train")].mean(),
    )
    for name, reason in skipped:
        logger.warning("skipped %s: %s", name, reason)
    return data


def fit_model(
    cfg: SegmentTrainConfig,
    data: SceneData,
    weights: Path | None,
    strategy: tf.distribute.Strategy,
    *,
    progress: bool = True,
) -> Fitted:
    """Build the U-Net and fit it: the decoder on the frozen encoder, then optionally the encoder too.

    The best weights stay in memory: the run directory is staged only once
    training has ended.
    """
    import keras

    from . import model as unet

    with strategy.scope():
        model = unet.build_unet(
            input_size=cfg.input_size, weights=weights, decoder_filters=cfg.decoder_filters
        )
    train, val = data.index("train"), data.index("val")
    train_ds = _dataset(data.images[train], data.masks[train], cfg, training=True)
    val_ds = _dataset(data.images[val], data.masks[val], cfg, training=False)

    def open_encoder() -> None:
        n = unet.unfreeze_encoder(model)
        logger.info("phase 2: encoder trainable too (%d layers), lr %g", n, cfg.fine_tune_learning_rate)

    phases = []
    if cfg.epochs:
        phases.append(
            Phase(
                "decoder",
                cfg.epochs,
                cfg.learning_rate,
                begin=lambda: logger.info(
                    "phase 1: decoder on the frozen encoder (%d epochs at most)", cfg.epochs
                ),
            )
        )
    if cfg.fine_tune_epochs:
        phases.append(
            Phase("fine-tune", cfg.fine_tune_epochs, cfg.fine_tune_learning_rate, begin=open_encoder)
        )
    return fit_in_phases(
        model,
        phases,
        strategy=strategy,
        train_ds=train_ds,
        val_ds=val_ds,
        compile_args=lambda: {
            "loss": unet.BceDiceLoss(cfg.dice_weight),
            "metrics": [keras.metrics.BinaryIoU(target_class_ids=[1], threshold=THRESHOLD, name="iou")],
        },
        row=_history_row,
        callbacks=lambda: [keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience)],
        progress=progress,
    )


def evaluate_model(
    cfg: SegmentTrainConfig, data: SceneData, model: keras.Model
) -> tuple[dict[str, dict[str, Any]], np.ndarray]:
    """Pixel metrics on the validation and test scenes, and the test scenes' face probabilities.

    Validation is reported beside test so a reader sees whether the test
    figures are typical or a lucky draw of scenes.
    """
    metrics, probs = {}, {}
    for s in ("val", "test"):
        i = data.index(s)
        probs[s] = _predict(model, data.images[i], cfg.batch_size)
        metrics[s] = segmentation_metrics(data.masks[i], probs[s])
    t = metrics["test"]
    logger.info(
        "test scenes: Dice %.4f, IoU %.4f, precision %.4f, recall %.4f (%d scenes)",
        t["dice"],
        t["iou"],
        t["precision"],
        t["recall"],
        t["images"],
    )
    return metrics, probs["test"]


def write_outputs(
    run: Path,
    cfg: SegmentTrainConfig,
    data: SceneData,
    fitted: Fitted,
    *,
    metrics: dict[str, dict[str, Any]],
    test_probs: np.ndarray,
    weights: Path | None,
    wall: float,
) -> None:
    """The run directory ``maskgate convert segmenter`` reads, and the report a reviewer reads."""
    fitted.model.save(run / rundir.MODEL)
    config = rundir.run_config(
        cfg,
        {"kind": KIND, "classes": LABELS, "threshold": THRESHOLD},
        weights=weights,
        preprocessing=describe_preprocessing(cfg.input_size),
    )
    write_manifest(
        run / MANIFEST,
        data.scenes,
        data.assignment,
        voc=cfg.voc,
        seed=cfg.seed,
        method=SIDE_METHOD if cfg.scene_split else None,
    )
    test = data.index("test")
    pictures = report.write_overlays(
        run / "overlays",
        [data.scenes[i] for i in test],
        data.images[test],
        data.masks[test],
        test_probs,
        count=cfg.overlays,
    )
    history = fitted.history
    rundir.write_run_files(
        run,
        labels=LABELS,
        config=config,
        metrics={
            "split": "test",
            **metrics["test"],
            "val": metrics["val"],
            "epochs": len(history),
            "best_epoch": fitted.best_epoch,
            "interrupted": fitted.interrupted,
            "wall_time_s": round(wall, 1),
        },
        history=history,
        report=report.markdown_report(
            cfg,
            config,
            metrics,
            history,
            data.assignment,
            data.scenes,
            data.skipped,
            pictures,
            wall,
            fitted.interrupted,
        ),
    )


def _history_row(phase: str, epoch: int, logs: dict[str, Any], model: keras.Model) -> dict[str, Any]:
    """A history.csv row: the phase, the epoch across phases, and whatever Keras logged (loss, IoU)."""
    return {"phase": phase, "epoch": epoch} | logs


def _dataset(images: np.ndarray, masks: np.ndarray, cfg: SegmentTrainConfig, *, training: bool):
    import tensorflow as tf

    from .model import augment

    def to_float(x, m):
        return tf.cast(x, tf.float32), tf.cast(m, tf.float32)[..., None]

    ds = tf.data.Dataset.from_tensor_slices((images, masks))
    if training:
        ds = ds.shuffle(len(images), seed=cfg.seed, reshuffle_each_iteration=True)
    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    if training and cfg.augment:
        ds = ds.map(lambda x, m: augment(x, m, seed=cfg.seed), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(cfg.batch_size).prefetch(tf.data.AUTOTUNE)


def _predict(model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Face probabilities N x S x S of uint8 scenes from the Keras model."""
    if not len(images):
        return np.zeros(images.shape[:3], np.float32)
    out = model.predict(images.astype(np.float32), batch_size=batch_size, verbose=0)
    return out[..., 0]
