"""``maskgate train-unet``: VOC scenes and their face boxes become a U-Net face segmenter run.

Scenes, their masks and their split come from ``scenes``. Training runs in up
to two phases (decoder on a frozen encoder, then optionally the whole network
at a lower rate), each stopping early on validation loss; the best weights of
either phase are kept. The run directory appears only when complete, as
classifier runs do.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from maskgate.edge.core import atomic, fetch, splits, sysinfo
from maskgate.edge.core.errors import ConfigError, OutputExistsError
from maskgate.edge.core.preprocess import describe_scene as describe_preprocessing

from ..config import IMAGENET_WEIGHTS
from .config import SegmentTrainConfig
from .metrics import THRESHOLD, segmentation_metrics
from .scenes import SPLITS, Scene, list_scenes, load_scenes, split_scenes, write_manifest

logger = logging.getLogger(__name__)


def resolve_weights(cfg: SegmentTrainConfig) -> Path | None:
    """The encoder's weights file: fetched and verified for 'imagenet', as classifier training does."""
    if cfg.weights == "none":
        return None
    if cfg.weights == "imagenet":
        return fetch.ensure(IMAGENET_WEIGHTS)
    path = Path(cfg.weights)
    if not path.is_file():
        raise ConfigError(f"--weights {path}: no such file (use 'imagenet', 'none' or a path)")
    return path


def train_unet(cfg: SegmentTrainConfig, *, progress: bool = True) -> Path:
    """Run U-Net training as configured; return the finished run directory."""
    started = time.monotonic()
    if cfg.out.exists():
        raise OutputExistsError(f"output directory {cfg.out} already exists; choose another --out")
    atomic.check_creatable(cfg.out, "--out")
    listed, skipped = list_scenes(cfg.voc)
    if cfg.max_scenes is not None and len(listed) > cfg.max_scenes:
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(listed))[: cfg.max_scenes])
        listed = [listed[i] for i in keep]
    weights = resolve_weights(cfg)  # before minutes of decoding: a missing weights file is one line now
    scenes, images, masks, unreadable = load_scenes(listed, cfg.input_size, workers=cfg.workers)
    skipped += unreadable
    assignment = split_scenes(
        len(scenes), val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed
    )
    idx = {s: np.array([i for i, a in enumerate(assignment) if a == s], dtype=np.int64) for s in SPLITS}
    logger.info(
        "scenes: %d train, %d val, %d test (%d faces); face pixels %.1f %% of the training masks",
        *(len(idx[s]) for s in SPLITS),
        sum(len(s.boxes) for s in scenes),
        100 * masks[idx["train"]].mean(),
    )
    for name, reason in skipped:
        logger.warning("skipped %s: %s", name, reason)

    import keras

    from ..pipeline import choose_strategy
    from . import model as unet

    keras.utils.set_random_seed(cfg.seed)
    strategy = choose_strategy()
    with strategy.scope():
        model = unet.build_unet(
            input_size=cfg.input_size, weights=weights, decoder_filters=cfg.decoder_filters
        )
    train_ds = _dataset(images[idx["train"]], masks[idx["train"]], cfg, training=True)
    val_ds = _dataset(images[idx["val"]], masks[idx["val"]], cfg, training=False)
    best = _BestWeights(keras)
    history: list[dict[str, Any]] = []

    def fit(phase: str, epochs: int, lr: float) -> None:
        with strategy.scope():
            model.compile(
                optimizer=keras.optimizers.Adam(lr),
                loss=unet.BceDiceLoss(cfg.dice_weight),
                metrics=[keras.metrics.BinaryIoU(target_class_ids=[1], threshold=THRESHOLD, name="iou")],
            )
        h = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=epochs,
            shuffle=False,  # the dataset shuffles itself
            verbose=(1 if sys.stderr.isatty() else 2) if progress else 0,
            callbacks=[best, keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience)],
        )
        for k in range(len(h.history["loss"])):
            history.append(
                {"phase": phase, "epoch": len(history) + 1} | {m: v[k] for m, v in h.history.items()}
            )

    interrupted = False
    try:
        if cfg.epochs:
            logger.info("phase 1: decoder on the frozen encoder (%d epochs at most)", cfg.epochs)
            fit("decoder", cfg.epochs, cfg.learning_rate)
        if cfg.fine_tune_epochs:
            best.restore(model)  # phase 2 starts from the best of phase 1, not its last epoch
            n = unet.unfreeze_encoder(model)
            logger.info("phase 2: encoder trainable too (%d layers), lr %g", n, cfg.fine_tune_learning_rate)
            fit("fine-tune", cfg.fine_tune_epochs, cfg.fine_tune_learning_rate)
    except KeyboardInterrupt:
        if best.weights is None:
            raise
        interrupted = True
        logger.warning("interrupted: evaluating the best weights so far (Ctrl-C again aborts)")
    best.restore(model)

    metrics = {}
    probs = {}
    for s in ("val", "test"):
        probs[s] = _predict(model, images[idx[s]], cfg.batch_size)
        metrics[s] = segmentation_metrics(masks[idx[s]], probs[s])
    wall = time.monotonic() - started
    t = metrics["test"]
    logger.info(
        "test scenes: Dice %.4f, IoU %.4f, precision %.4f, recall %.4f (%d scenes)",
        t["dice"],
        t["iou"],
        t["precision"],
        t["recall"],
        t["images"],
    )
    with atomic.staged_dir(cfg.out) as run:
        model.save(run / "model.keras")
        _write_outputs(
            run,
            cfg=cfg,
            scenes=scenes,
            assignment=assignment,
            images=images,
            masks=masks,
            test_probs=probs["test"],
            test_index=idx["test"],
            metrics=metrics,
            history=history,
            skipped=skipped,
            weights=weights,
            wall=wall,
            interrupted=interrupted,
            best_epoch=best.epoch,
        )
    logger.info("run written to %s (%.1f min)", cfg.out, wall / 60)
    return cfg.out


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


def _BestWeights(keras):  # noqa: N802 - factory: keras is imported lazily
    class BestWeights(keras.callbacks.Callback):
        """Keeps the weights of the epoch with the lowest val_loss across *both* phases, in memory.

        EarlyStopping's own restore forgets its best between ``fit`` calls, so a
        worse first fine-tuning epoch could replace a better decoder-only model.
        """

        def __init__(self) -> None:
            super().__init__()
            self.best = float("inf")
            self.weights = None
            self.epoch = 0
            self._seen = 0

        def on_epoch_end(self, epoch, logs=None):
            self._seen += 1
            value = (logs or {}).get("val_loss")
            if value is not None and value < self.best:
                self.best, self.epoch = float(value), self._seen
                self.weights = self.model.get_weights()

        def restore(self, model) -> None:
            if self.weights is not None:
                model.set_weights(self.weights)

    return BestWeights()


def overlay(image_rgb: np.ndarray, truth: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """A BGR picture of one scene: predicted face pixels tinted red, true mask outlined in green."""
    import cv2

    out = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    pred = prob >= THRESHOLD
    tint = out.copy()
    tint[pred] = (0.45 * tint[pred] + 0.55 * np.array([40, 40, 230])).astype(np.uint8)
    contours, _ = cv2.findContours(truth.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(tint, contours, -1, (60, 200, 60), 1)
    return tint


def _write_outputs(
    run: Path,
    *,
    cfg: SegmentTrainConfig,
    scenes: list[Scene],
    assignment: list[str],
    images: np.ndarray,
    masks: np.ndarray,
    test_probs: np.ndarray,
    test_index: np.ndarray,
    metrics: dict[str, dict],
    history: list[dict[str, Any]],
    skipped: list[tuple[str, str]],
    weights: Path | None,
    wall: float,
    interrupted: bool,
    best_epoch: int,
) -> None:
    import cv2

    def dump(name: str, obj: Any) -> None:
        atomic.write_text(run / name, json.dumps(obj, indent=2, default=str) + "\n")

    command = shlex.join(["maskgate", *sys.argv[1:]]) if sys.argv and "maskgate" in sys.argv[0] else None
    config = cfg.model_dump(mode="json") | {
        "kind": "segmenter",
        "classes": ["face"],
        "threshold": THRESHOLD,
        "weights_file": str(weights) if weights else None,
        "weights_sha256": fetch.digest(weights.read_bytes()) if weights else None,
        "preprocessing": describe_preprocessing(cfg.input_size),
        "command": command,
    }
    dump("config.json", config)
    dump(
        "metrics.json",
        {
            "split": "test",
            **metrics["test"],
            "val": metrics["val"],
            "epochs": len(history),
            "best_epoch": best_epoch,
            "interrupted": interrupted,
            "wall_time_s": round(wall, 1),
        },
    )
    dump("environment.json", {"libraries": sysinfo.library_versions(), "machine": sysinfo.machine()})
    atomic.write_text(run / "labels.txt", "face\n")
    write_manifest(run / splits.MANIFEST, scenes, assignment, voc=cfg.voc, seed=cfg.seed)
    if history:
        keys = list(history[0])
        lines = [",".join(keys)] + [",".join(str(h.get(k, "")) for k in keys) for h in history]
        atomic.write_text(run / "history.csv", "\n".join(lines) + "\n")
    # Overlays: the test scenes with the most faces first, where the masks have most to show.
    order = sorted(range(len(test_index)), key=lambda k: -len(scenes[test_index[k]].boxes))[: cfg.overlays]
    pictures = []
    for k in order:
        i = int(test_index[k])
        name = f"overlay_{Path(scenes[i].path).stem}.png"
        ok, buf = cv2.imencode(".png", overlay(images[i], masks[i], test_probs[k]))
        if ok:
            atomic.write_bytes(run / "overlays" / name, buf.tobytes())
            pictures.append((name, segmentation_metrics(masks[i], test_probs[k])["dice"]))
    atomic.write_text(
        run / "report.md",
        _report(cfg, config, metrics, history, assignment, scenes, skipped, pictures, wall, interrupted),
    )


def _report(cfg, config, metrics, history, assignment, scenes, skipped, pictures, wall, interrupted) -> str:
    def row(name: str, m: dict) -> str:
        return (
            f"| {name} | {m['images']} | {m['dice']:.4f} | {m['iou']:.4f} | {m['precision']:.4f} | "
            f"{m['recall']:.4f} | {m['f1']:.4f} | {m['dice_per_image_mean']:.4f} |"
        )

    faces = {
        s: sum(len(sc.boxes) for sc, a in zip(scenes, assignment, strict=True) if a == s) for s in SPLITS
    }
    lines = [
        "# maskgate U-Net face segmenter run",
        "",
        f"Command: `{config['command']}`" if config["command"] else "",
        "",
        f"MobileNetV2 encoder ({cfg.weights} weights), U-Net decoder of width {cfg.decoder_filters}, "
        f"{cfg.input_size} px scenes (stretched, as the device does), loss BCE + {cfg.dice_weight:g} x Dice. "
        f"{len(history)} epochs in {wall / 60:.1f} min" + (" (interrupted)" if interrupted else "") + ".",
        "",
        "| split | scenes | faces |",
        "| --- | --- | --- |",
        *[f"| {s} | {assignment.count(s)} | {faces[s]} |" for s in SPLITS],
        "",
        f"## Masks at probability >= {THRESHOLD} (pixels pooled over each split)",
        "",
        "| split | scenes | Dice | IoU | precision | recall | F1 | mean Dice per scene |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        row("validation", metrics["val"]),
        row("**test**", metrics["test"]),
        "",
        "Pixel F1 equals Dice; both masks empty count as perfect agreement "
        "(see `train/segmentation/metrics.py`).",
        "",
    ]
    if pictures:
        lines += [
            "## The most crowded test scenes (red: predicted face pixels; green: the annotated boxes)",
            "",
            *[f"![{name}](overlays/{name})\n\n{name}: Dice {dice:.3f}\n" for name, dice in pictures],
        ]
    if history:
        lines += [
            "## Epochs",
            "",
            "| epoch | phase | loss | val_loss | val IoU |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {h['epoch']} | {h['phase']} | {h['loss']:.4f} | {h.get('val_loss', float('nan')):.4f} | "
            f"{h.get('val_iou', float('nan')):.4f} |"
            for h in history
        ]
        lines.append("")
    if skipped:
        lines += [f"Skipped {len(skipped)} scene(s):", "", *[f"- {n}: {r}" for n, r in skipped], ""]
    return "\n".join(lines)
