"""Classification metrics, including the two a gate operator cares about.

FAR (false accept rate): unmasked faces the gate would accept as masked.
FRR (false reject rate): masked faces the gate would turn away.
Every class other than ``with_mask`` (``without_mask``, ``mask_weared_incorrect``)
counts as unmasked: the gate opens only for a mask worn properly.
"Masked" means p(with_mask) >= threshold, the decision the device makes, so
these two follow the threshold while accuracy and the confusion matrix use
the arg-max class. Pure numpy/scikit-learn: usable for Keras and TFLite models alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from maskgate.edge.core.labels import MASKED


def classification_metrics(
    y_true: Sequence[int], probs: np.ndarray, class_names: Sequence[str], *, threshold: float = 0.5
) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    n_classes = len(class_names)
    if probs.ndim != 2 or probs.shape != (len(y_true), n_classes):
        raise ValueError(
            f"probabilities of shape {probs.shape} do not fit {len(y_true)} labels x {n_classes}"
        )
    y_pred = probs.argmax(axis=1)
    labels = list(range(n_classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    result: dict[str, Any] = {
        "n": int(len(y_true)),
        "class_names": list(class_names),
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else 0.0,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        # over the classes present, so a class absent from this data does not count as F1 = 0
        "macro_f1": float(np.mean(f1[support > 0])) if (support > 0).any() else 0.0,
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "threshold": threshold,
    }

    present = np.unique(y_true)
    try:
        if n_classes == 2 and len(present) == 2:
            result["roc_auc"] = float(roc_auc_score(y_true == 0, probs[:, 0]))
        elif len(present) == n_classes > 2:
            result["roc_auc"] = float(roc_auc_score(y_true, probs, multi_class="ovr", labels=labels))
        else:
            result["roc_auc"] = None
    except ValueError:
        result["roc_auc"] = None

    if MASKED in class_names:
        m = list(class_names).index(MASKED)
        accept = probs[:, m] >= threshold
        masked = y_true == m
        result["far"] = float(accept[~masked].mean()) if (~masked).any() else None
        result["frr"] = float((~accept[masked]).mean()) if masked.any() else None
        result["false_accepts"] = int(accept[~masked].sum())
        result["false_rejects"] = int((~accept[masked]).sum())
    else:
        result["far"] = result["frr"] = None
    return result


FROM_VALIDATION = "validation split"  # config.json's threshold_source when training chose the threshold


def choose_masked_threshold(
    probs: np.ndarray, labels: Sequence[int], classes: Sequence[str], *, false_accept_cost: float
) -> float:
    """``choose_threshold`` on p(with_mask) of a split's class probabilities and integer labels.

    With three classes the gate is still binary: ``with_mask`` against the
    rest, because a mask worn under the nose is no mask to the gate (the
    device's default, ``classifier.incorrect_is_masked = false``), so letting
    such a face in is a false accept like any other. p(with_mask) >= 0.5 is
    then stricter than the arg-max (with_mask can win with 0.4 against 0.35 and
    0.25), which is the side a gate should err on. A device configured with
    ``incorrect_is_masked`` compares p(with_mask) + p(incorrect) with this same
    threshold, which accepts more; set ``classifier.threshold`` there if that matters.
    """
    m = list(classes).index(MASKED)
    return choose_threshold(
        np.asarray(probs)[:, m], np.asarray(labels) == m, false_accept_cost=false_accept_cost
    )


def choose_threshold(
    p_masked: np.ndarray, is_masked: np.ndarray, *, false_accept_cost: float, lowest: float = 0.5
) -> float:
    """The gate threshold with the least cost on held-out data, where a false accept costs
    ``false_accept_cost`` false rejects.

    An unmasked face let in is worse than a masked one asked to step closer,
    so the threshold moves up from ``lowest`` (0.5: the arg-max for two classes)
    until the extra rejects outweigh the accepts they prevent. Candidates are
    the midpoints between neighbouring scores, which leaves the most margin on
    both sides; among equal costs the lowest threshold wins. Choose it on the
    validation split, never on the test split it is then measured on.
    """
    p = np.asarray(p_masked, dtype=np.float64)
    masked = np.asarray(is_masked, dtype=bool)
    if not masked.any() or masked.all():
        return lowest
    scores = np.unique(p[p >= lowest])
    candidates = np.concatenate([[lowest], (scores[:-1] + scores[1:]) / 2, scores[-1:] + 1e-6])
    candidates = candidates[candidates < 1.0]
    cost = [false_accept_cost * np.sum(p[~masked] >= t) + np.sum(p[masked] < t) for t in candidates]
    return float(round(candidates[int(np.argmin(cost))], 4))
