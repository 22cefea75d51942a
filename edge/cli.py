"""The ``maskgate`` command.

Each subcommand imports its implementation only when it runs, so the edge
commands never load TensorFlow and ``maskgate --help`` is instant. A
``MaskgateError`` ends the program with one line on stderr and exit status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path

from .errors import ConfigError, MaskgateError

logger = logging.getLogger("maskgate")

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose - args.quiet)
    try:
        return int(args.handler(args) or 0)
    except MaskgateError as e:
        print(f"maskgate: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("maskgate: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="maskgate", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"maskgate {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less log output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = sub.add_parser("models", help="third-party model files: fetch and verify")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    p = msub.add_parser("fetch", help="copy or download every manifest file into the cache, verified")
    p.add_argument("--mirror", type=Path, help="local folder holding the files (default $MASKGATE_MIRROR)")
    p.add_argument("--manifest", type=Path, help="manifest to use (default models/manifest.toml)")
    p.set_defaults(handler=_models_fetch)
    p = msub.add_parser("list", help="show each manifest file and whether the cache holds it verified")
    p.add_argument("--manifest", type=Path, help="manifest to use (default models/manifest.toml)")
    p.set_defaults(handler=_models_list)

    from maskgate.train.config import TrainConfig

    p = sub.add_parser(
        "train",
        help="fine-tune MobileNetV2 on a folder of face images",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_model_options(p, TrainConfig, required=("data", "out"))
    p.set_defaults(handler=_train, config_model=TrainConfig)

    p = sub.add_parser("evaluate", help="score a trained model on a folder of face images")
    p.add_argument("--model", type=Path, required=True, help="run directory or .keras file")
    p.add_argument("--data", type=Path, required=True, help="folder with one subfolder per class")
    p.add_argument("--json", type=Path, required=True, help="where to write the metrics")
    p.add_argument("--threshold", type=float, default=0.5, help="p(with_mask) the gate counts as masked")
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(handler=_evaluate)
    return parser


def add_model_options(parser: argparse.ArgumentParser, model, *, required: Sequence[str] = ()) -> None:
    """One ``--kebab-case`` option per pydantic field; the model stays the one source of
    defaults, bounds and help. Values are passed through as given and validated by the model."""
    for name, field in model.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = field.description or ""
        if name in required:
            parser.add_argument(flag, dest=name, required=True, help=help_text, metavar=name.upper())
            continue
        if _is_bool(field.annotation):
            parser.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=f"{help_text} (default: {field.default})",
            )
        else:
            parser.add_argument(
                flag,
                dest=name,
                default=argparse.SUPPRESS,
                metavar=_metavar(field.annotation),
                help=f"{help_text} (default: {field.default})",
            )


def _is_bool(annotation) -> bool:
    return annotation is bool


def _metavar(annotation) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if isinstance(annotation, types.UnionType) and args else annotation
    return {int: "N", float: "X", Path: "PATH", str: "TEXT"}.get(base, "VALUE")


def config_from_args(model, args: argparse.Namespace):
    """Validate the parsed options into ``model``; the first problem becomes one line naming the flag."""
    from pydantic import ValidationError

    values = {k: getattr(args, k) for k in model.model_fields if hasattr(args, k)}
    try:
        return model(**values)
    except ValidationError as e:
        err = e.errors()[0]
        loc = err["loc"]
        where = "--" + str(loc[0]).replace("_", "-") if loc else "options"
        raise ConfigError(f"{where}: {err['msg'].removeprefix('Value error, ')}") from None


def _setup_logging(level: int) -> None:
    logging.basicConfig(
        level=logging.WARNING if level < 0 else logging.DEBUG if level > 0 else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )


def _models_fetch(args: argparse.Namespace) -> int:
    from . import fetch

    files = fetch.load_manifest(args.manifest)
    mirror = fetch.mirror_dir(args.mirror)
    failed = 0
    for item in files.values():
        try:
            path, state = fetch.fetch_one(item, mirror=mirror)
        except MaskgateError as e:
            print(f"maskgate: error: {e}", file=sys.stderr)
            failed += 1
            continue
        print(f"{item.name}: {state.value} ({path})")
    return EXIT_USER_ERROR if failed else 0


def _models_list(args: argparse.Namespace) -> int:
    from . import fetch

    for item in fetch.load_manifest(args.manifest).values():
        state = "verified" if fetch.is_cached(item) else "missing"
        print(f"{item.name}: {state} — {item.purpose} [{item.license}]")
    return 0


def _train(args: argparse.Namespace) -> int:
    cfg = config_from_args(args.config_model, args)
    from maskgate.train.run import train

    train(cfg, progress=args.quiet == 0)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    if not 0.0 < args.threshold < 1.0:
        raise ConfigError(f"--threshold {args.threshold}: must be between 0 and 1")
    from maskgate.train.evaluate import evaluate, write_json

    metrics = evaluate(
        args.model, args.data, threshold=args.threshold, batch_size=args.batch_size, progress=args.quiet == 0
    )
    write_json(metrics, args.json)
    print(
        f"accuracy {metrics['accuracy']:.4f}  FAR {metrics['far']}  FRR {metrics['frr']}  "
        f"n {metrics['n']}  -> {args.json}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
