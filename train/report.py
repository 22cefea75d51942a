"""Plots and the Markdown report of a run: what a reviewer opens first."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; a training box has no display
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402


def plot_history(history: Sequence[dict[str, Any]], path: Path) -> None:
    """Loss and accuracy per epoch, with the start of fine-tuning marked."""
    epochs = list(range(1, len(history) + 1))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(epochs, [h.get(key) for h in history], "o-", label=f"train {key}")
        ax.plot(epochs, [h.get(f"val_{key}") for h in history], "o-", label=f"val {key}")
        starts = [
            e
            for e, h, prev in zip(epochs[1:], history[1:], history[:-1], strict=True)
            if h["phase"] != prev["phase"]
        ]
        for s in starts:
            ax.axvline(s - 0.5, color="grey", linestyle="--", label="fine-tuning starts")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(
    confusion: list[list[int]], class_names: Sequence[str], path: Path, *, threshold: float | None = None
) -> None:
    """A confusion matrix of the arg-max class, as ``classification_metrics`` counts it.

    The gate decides by p(with_mask) against its threshold, not by the arg-max,
    so the printed FAR and FRR can disagree with this matrix; the title says
    which one it counts, and, given ``threshold``, what FAR and FRR count.
    """
    import numpy as np

    many = len(class_names) > 2  # long names side by side overlap: slant them
    fig, ax = plt.subplots(figsize=(5.5, 5) if many else (4.5, 4))
    ConfusionMatrixDisplay(np.array(confusion), display_labels=list(class_names)).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation=30 if many else "horizontal"
    )
    title = "test split, confusion of the arg-max class"
    if threshold is not None:
        title += f"\n(FAR and FRR: p(with_mask) >= {threshold:g})"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("predicted (arg-max)")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def percent(x: float | None) -> str:
    """A rate as '1.23 %', or 'n/a' where it is undefined (no examples of that kind)."""
    return "n/a" if x is None else f"{100 * x:.2f} %"


def markdown_report(
    *,
    config: dict[str, Any],
    metrics: dict[str, Any],
    counts: dict[str, dict[str, int]],
    skipped: Sequence[tuple[str, str]],
    voc_skipped: dict[str, int],
    errors: Sequence[dict[str, Any]],
    dataset_hash: str,
    wall_time_s: float,
    interrupted: bool,
    history: Sequence[dict[str, Any]],
) -> str:
    names = metrics["class_names"]
    lines = [
        "# maskgate training run",
        "",
        "**Interrupted**: training was stopped by the user; the best checkpoint so far was evaluated."
        if interrupted
        else "",
        "## Test split",
        "",
        *metrics_tables(metrics, threshold_note=_threshold_source(config)),
        "![confusion matrix of the arg-max class](confusion.png)",
        "",
        "![training curves](curves.png)",
        "",
    ]
    scene = metrics.get("scene_crops")
    if scene:
        lines += [
            "## Test split, scene crops only",
            "",
            "The faces of the test split cropped from the VOC scenes (`--voc`), scored alone: "
            "the faces a gate camera sees, unlike the folder images.",
            "",
            *metrics_tables(scene),
            "Confusion of the arg-max class (FAR and FRR above count the decision threshold):",
            "",
            "| true \\ predicted (arg-max) | " + " | ".join(names) + " |",
            "| --- |" + " --- |" * len(names),
            *[
                f"| {n} | " + " | ".join(map(str, row)) + " |"
                for n, row in zip(names, scene["confusion"], strict=True)
            ],
            "",
        ]
    lines += ["## Data", "", f"Dataset content hash (SHA-256): `{dataset_hash}`", ""]
    lines += ["| split | " + " | ".join(names) + " | total |", "| --- |" + " --- |" * (len(names) + 1)]
    for split, per in counts.items():
        lines.append(
            f"| {split} | " + " | ".join(str(per.get(n, 0)) for n in names) + f" | {sum(per.values())} |"
        )
    lines += ["", f"Skipped files: {len(skipped)}", ""]
    lines += [f"- `{p}`: {r}" for p, r in skipped[:200]]
    if voc_skipped:
        lines += ["", "VOC boxes left out: " + ", ".join(f"{r}: {n}" for r, n in sorted(voc_skipped.items()))]
    lines += ["", "## Training", "", f"Wall time: {wall_time_s / 60:.1f} min, {len(history)} epochs.", ""]
    lines += ["| epoch | phase | loss | accuracy | val_loss | val_accuracy | lr |", "| --- |" + " --- |" * 6]
    for i, h in enumerate(history, 1):
        lines.append(
            f"| {i} | {h['phase']} | {h['loss']:.4f} | {h['accuracy']:.4f} | "
            f"{h['val_loss']:.4f} | {h['val_accuracy']:.4f} | {h['learning_rate']:.2e} |"
        )
    lines += ["", f"## Misclassified test images ({len(errors)})", ""]
    lines += [
        f"- `{e['path']}`{' box ' + str(e['box']) if e['box'] else ''}: true {e['label']}, "
        f"predicted {e['predicted']} ({e['score']:.3f})"
        for e in errors[:100]
    ]
    lines += ["", "## Configuration", "", "```json"]
    import json

    lines += [json.dumps(config, indent=2, default=str), "```", ""]
    return "\n".join(line for line in lines) + "\n"


def metrics_tables(metrics: dict[str, Any], *, threshold_note: str = "") -> list[str]:
    """The summary and per-class tables of ``classification_metrics`` output, as Markdown lines."""
    note = f" ({threshold_note})" if threshold_note else ""
    lines = [
        "| metric | value |",
        "| --- | --- |",
        f"| accuracy | {percent(metrics['accuracy'])} |",
        f"| macro F1 | {metrics['macro_f1']:.4f} |",
        f"| FAR (unmasked accepted) | {percent(metrics.get('far'))} ({metrics.get('false_accepts')}) |",
        f"| FRR (masked rejected) | {percent(metrics.get('frr'))} ({metrics.get('false_rejects')}) |",
        f"| ROC-AUC | {metrics['roc_auc']:.5f} |"
        if metrics.get("roc_auc") is not None
        else "| ROC-AUC | n/a |",
        f"| images | {metrics['n']} |",
        f"| decision threshold | {metrics['threshold']}{note} |",
        "",
        "| class | precision | recall | F1 | support |",
        "| --- | --- | --- | --- | --- |",
    ]
    for n in metrics["class_names"]:
        c = metrics["per_class"][n]
        lines.append(f"| {n} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} | {c['support']} |")
    return [*lines, ""]


def _threshold_source(config: dict) -> str:
    from .metrics import FROM_VALIDATION

    if config.get("threshold_source") == FROM_VALIDATION:
        return f"chosen on the validation split; a false accept costs {config['false_accept_cost']:g} rejects"
    return "set with --threshold"
