"""``maskgate train`` and ``maskgate evaluate``, registered with the edge CLI via an entry point."""

from __future__ import annotations

import argparse

from maskgate.edge.cli import add_model_options, config_from_args

from .config import EvaluateConfig, TrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune MobileNetV2 on a folder of face images",
        description="Fine-tune an ImageNet MobileNetV2 on face crops; writes a complete run directory.",
    )
    add_model_options(p, TrainConfig, required=("data", "out"))
    p.set_defaults(handler=_train)

    p = sub.add_parser(
        "evaluate",
        help="score a trained model on a folder of faces or on its run's own split",
        description="Score a trained model: on a folder with one subfolder per class (--data), "
        "or on a split of the run it came from (--split test).",
    )
    add_model_options(p, EvaluateConfig, required=("model", "json_out"))
    p.set_defaults(handler=_evaluate)


def _train(args: argparse.Namespace) -> int:
    cfg = config_from_args(TrainConfig, args)
    from .run import train

    train(cfg, progress=args.quiet == 0)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    cfg = config_from_args(EvaluateConfig, args)
    from .evaluate import evaluate
    from .report import percent

    metrics = evaluate(cfg, progress=args.quiet == 0)
    print(
        f"accuracy {percent(metrics['accuracy'])}  FAR {percent(metrics['far'])}  "
        f"FRR {percent(metrics['frr'])}  n {metrics['n']}  -> {cfg.json_out}"
    )
    return 0
