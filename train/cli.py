"""``maskgate train`` and ``maskgate evaluate``, registered with the edge CLI via an entry point."""

from __future__ import annotations

import argparse

from maskgate.edge.cli import add_config_command

from .config import EvaluateConfig, TrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    add_config_command(
        sub, "train", TrainConfig, required=("data", "out"), handler=_train,
        help="fine-tune MobileNetV2 on a folder of face images",
        description="Fine-tune an ImageNet MobileNetV2 on face crops; writes a complete run directory.",
    )  # fmt: skip
    add_config_command(
        sub, "evaluate", EvaluateConfig, required=("model", "json_out"), handler=_evaluate,
        help="score a trained model on a folder of faces or on its run's own split",
        description="Score a model (run, bundle or .tflite): on a folder with one subfolder per class "
        "(--data), or on a split of the run it came from (--split test).",
    )  # fmt: skip


def _train(cfg: TrainConfig, args: argparse.Namespace) -> int:
    from .run import train

    train(cfg, progress=args.quiet == 0)
    return 0


def _evaluate(cfg: EvaluateConfig, args: argparse.Namespace) -> int:
    from .evaluate import evaluate
    from .report import percent

    metrics = evaluate(cfg, progress=args.quiet == 0)
    print(
        f"accuracy {percent(metrics['accuracy'])}  FAR {percent(metrics['far'])}  "
        f"FRR {percent(metrics['frr'])}  n {metrics['n']}  -> {cfg.json_out}"
    )
    return 0
