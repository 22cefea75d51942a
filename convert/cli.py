"""``maskgate convert``, registered with the edge CLI via an entry point."""

from __future__ import annotations

import argparse

from maskgate.edge.cli import add_model_options, config_from_args

from .config import ConvertConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="quantise a trained model to a verified int8 TFLite bundle",
        description="Convert a training run to full-integer int8 TFLite, verify it against the float "
        "model on the run's test split, and write a model bundle; refuse if int8 loses too much accuracy.",
    )
    add_model_options(p, ConvertConfig, required=("model", "out"))
    p.set_defaults(handler=_convert)


def _convert(args: argparse.Namespace) -> int:
    cfg = config_from_args(ConvertConfig, args)
    from .run import convert

    convert(cfg)
    return 0
