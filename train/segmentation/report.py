"""What a segmenter run shows a reviewer: overlays of test scenes and the Markdown report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from maskgate.edge.core import atomic

from .config import SegmentTrainConfig
from .metrics import THRESHOLD, segmentation_metrics
from .scenes import SPLITS, Scene


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


def write_overlays(
    folder: Path, scenes: list[Scene], images: np.ndarray, masks: np.ndarray, probs: np.ndarray, *, count: int
) -> list[tuple[str, float]]:
    """Overlays of the ``count`` test scenes with the most faces, where masks have most to show.

    ``scenes``, ``images``, ``masks`` and ``probs`` are the test split's, in
    one order. Returns (file name, Dice of the scene) for the report.
    """
    import cv2

    order = sorted(range(len(scenes)), key=lambda k: -len(scenes[k].boxes))[:count]
    pictures = []
    for k in order:
        name = f"overlay_{Path(scenes[k].path).stem}.png"
        ok, buf = cv2.imencode(".png", overlay(images[k], masks[k], probs[k]))
        if ok:
            atomic.write_bytes(folder / name, buf.tobytes())
            pictures.append((name, segmentation_metrics(masks[k], probs[k])["dice"]))
    return pictures


def markdown_report(
    cfg: SegmentTrainConfig,
    config: dict[str, Any],
    metrics: dict[str, dict],
    history: list[dict[str, Any]],
    assignment: list[str],
    scenes: list[Scene],
    skipped: list[tuple[str, str]],
    pictures: list[tuple[str, float]],
    wall: float,
    interrupted: bool,
) -> str:
    """``report.md``: the split, pixel metrics of validation and test, overlays, epochs, skipped scenes."""

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
        "Split by the project's scene split (`--scene-split`): train and validation from its 'tune' side, "
        "test = its 'report' side."
        if cfg.scene_split
        else f"Split by scene, seeded ({cfg.seed}).",
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
