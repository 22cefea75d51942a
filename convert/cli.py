"""``maskgate convert``, registered with the edge CLI via an entry point."""

from __future__ import annotations

import argparse

from maskgate.edge.cli import add_config_command

from .config import ConvertConfig


def register(sub: argparse._SubParsersAction) -> None:
    add_config_command(
        sub, "convert", ConvertConfig, required=("model", "out"), handler=_convert,
        help="quantise a trained model to a verified int8 TFLite bundle",
        description="Convert a training run to full-integer int8 TFLite, verify it against the float "
        "model on the run's test split, and write a model bundle; refuse if int8 loses too much accuracy.",
    )  # fmt: skip


def _convert(cfg: ConvertConfig, args: argparse.Namespace) -> int:
    from .run import convert

    convert(cfg)
    return 0
