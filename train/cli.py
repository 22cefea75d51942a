"""``maskgate train`` and ``maskgate evaluate``, registered with the edge CLI via an entry point."""

from __future__ import annotations

import argparse
import sys

from maskgate.edge.cli.options import add_config_command

from .config import EvaluateConfig, ExplainConfig, TrainConfig
from .segmentation.config import SegmentTrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    add_config_command(
        sub, "train", TrainConfig, handler=_train,
        help="fine-tune MobileNetV2 (or ResNet50) on a folder of face images",
        description="Fine-tune an ImageNet MobileNetV2 (or ResNet50, --backbone) on face crops, with two "
        "or three classes (--classes); writes a complete run directory.",
    )  # fmt: skip
    add_config_command(
        sub, "evaluate", EvaluateConfig, handler=_evaluate,
        help="score a trained model on a folder of faces or on its run's own split",
        description="Score a model (run, bundle or .tflite): on a folder with one subfolder per class "
        "(--data), or on a split of the run it came from (--split test).",
    )  # fmt: skip
    add_config_command(
        sub, "explain", ExplainConfig, handler=_explain,
        help="Grad-CAM heat maps: where in a face the classifier finds its evidence",
        description="For each face crop, write the face beside its Grad-CAM heat map for the predicted "
        "class (PNG), and an index, explain.json. Needs a run directory or .keras file.",
    )  # fmt: skip
    add_config_command(
        sub, "train-unet", SegmentTrainConfig, handler=_train_unet,
        help="train a U-Net face segmenter (MobileNetV2 encoder) on Pascal VOC scenes",
        description="Train a U-Net that marks face pixels in whole scenes, on masks drawn from VOC face "
        "boxes; split by scene, scored on held-out scenes (Dice, IoU, pixel precision and recall); writes a "
        "complete run directory for `maskgate convert segmenter`.",
    )  # fmt: skip


def _train(cfg: TrainConfig, args: argparse.Namespace) -> int:
    from .run import train

    train(cfg, progress=args.quiet == 0)
    return 0


def _train_unet(cfg: SegmentTrainConfig, args: argparse.Namespace) -> int:
    from .segmentation.run import train_unet

    train_unet(cfg, progress=args.quiet == 0)
    return 0


def _evaluate(cfg: EvaluateConfig, args: argparse.Namespace) -> int:
    from .evaluate import evaluate
    from .report import percent

    metrics = evaluate(cfg, progress=args.quiet == 0)
    skipped = metrics.get("skipped", [])
    print(
        f"accuracy {percent(metrics['accuracy'])}  FAR {percent(metrics['far'])}  "
        f"FRR {percent(metrics['frr'])}  n {metrics['n']}  -> {cfg.json_out}"
        + (f"; skipped {len(skipped)} unreadable file(s)" if skipped else "")
    )
    for row in skipped:
        print(f"  skipped {row['path']}: {row['reason']}", file=sys.stderr)
    return 0


def _explain(cfg: ExplainConfig, args: argparse.Namespace) -> int:
    from .explain import explain

    index = explain(cfg, progress=args.quiet == 0)
    print(
        f"{len(index['images'])} image(s) explained -> {cfg.out}/"
        + (f"; skipped {len(index['skipped'])} unreadable file(s)" if index["skipped"] else "")
    )
    for row in index["skipped"]:
        print(f"  skipped {row['image']}: {row['reason']}", file=sys.stderr)
    return 0
