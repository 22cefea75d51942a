"""Pixel metrics of face masks: Dice, IoU, precision, recall, F1, in plain numpy.

Training reports them on the held-out scenes and conversion compares int8
masks with float ones through the same function, so both speak of the same
numbers. A pixel is predicted face when its probability is at least
``threshold`` (0.5), the rule the device applies (``edge.unet``).

Empty denominators: a ratio whose denominator is zero counts no errors and
is 1.0. Both masks empty (nothing to find, nothing predicted) is perfect
agreement: Dice = IoU = precision = recall = 1. Nothing predicted where
there was something to find gives precision 1 but recall, Dice and IoU 0.
Pixel F1 (from pooled precision and recall) is algebraically the Dice
coefficient; it is reported under both names and computed from the counts,
so the convention above holds for it too.
"""

from __future__ import annotations

import numpy as np

THRESHOLD = 0.5


def ratio(num: float, den: float) -> float:
    """``num / den``, and 1.0 when ``den`` is 0 (nothing counted, so nothing wrong)."""
    return float(num) / float(den) if den else 1.0


def _counts(truth: np.ndarray, pred: np.ndarray, axis=None) -> tuple[np.ndarray, ...]:
    tp = np.sum(truth & pred, axis=axis, dtype=np.int64)
    fp = np.sum(~truth & pred, axis=axis, dtype=np.int64)
    fn = np.sum(truth & ~pred, axis=axis, dtype=np.int64)
    return tp, fp, fn


def segmentation_metrics(
    truth: np.ndarray, prob: np.ndarray, *, threshold: float = THRESHOLD
) -> dict[str, float | int]:
    """Metrics of predicted face probabilities against true masks (N x H x W, or one H x W).

    ``dice``, ``iou``, ``precision``, ``recall`` and ``f1`` pool every pixel of
    every image (large faces weigh more, as they do in pixels);
    ``dice_per_image_mean`` and ``iou_per_image_mean`` average each image's own
    figure (every scene weighs the same). ``truth`` is read as ``> 0``.
    """
    truth = np.asarray(truth) > 0
    prob = np.asarray(prob, dtype=np.float32)
    if truth.shape != prob.shape:
        raise ValueError(f"masks differ in shape: truth {truth.shape}, prediction {prob.shape}")
    if truth.ndim == 2:
        truth, prob = truth[None], prob[None]
    pred = prob >= threshold
    tp, fp, fn = (int(v) for v in _counts(truth, pred))
    per_image = [_counts(t, p) for t, p in zip(truth, pred, strict=True)]
    dice_i = [ratio(2 * a, 2 * a + b + c) for a, b, c in per_image]
    iou_i = [ratio(a, a + b + c) for a, b, c in per_image]
    dice = ratio(2 * tp, 2 * tp + fp + fn)
    return {
        "dice": dice,
        "iou": ratio(tp, tp + fp + fn),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "f1": dice,
        "dice_per_image_mean": float(np.mean(dice_i)) if dice_i else 1.0,
        "iou_per_image_mean": float(np.mean(iou_i)) if iou_i else 1.0,
        "images": len(per_image),
        "pixels": int(truth.size),
        "true_pixels": tp + fn,
        "predicted_pixels": tp + fp,
        "threshold": threshold,
    }
