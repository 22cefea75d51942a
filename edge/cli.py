"""The ``maskgate`` command.

Subcommands import their implementation only when they run, so the edge
commands never load TensorFlow and ``maskgate --help`` is quick. Stages
other than edge add their subcommands through the ``maskgate.commands``
entry-point group (see pyproject.toml): edge/ never imports train/ or
convert/, they register with it.

A ``MaskgateError`` ends the program with one line on stderr and exit
status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import types
import typing
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path

from .errors import ConfigError, MaskgateError

logger = logging.getLogger("maskgate")

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
COMMAND_GROUP = "maskgate.commands"

# Which extra brings a module, for the one-line hint when it is missing.
EXTRA_OF = {
    "tensorflow": "train", "keras": "train", "sklearn": "train", "matplotlib": "train", "h5py": "train",
    "cv2": "edge", "PIL": "edge", "gpiozero": "edge", "ai_edge_litert": "edge", "tflite_runtime": "edge",
    "picamera2": "pi", "libcamera": "pi", "lgpio": "pi",
}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose - args.quiet)
    try:
        return int(args.handler(args) or 0)
    except MaskgateError as e:
        print(f"maskgate: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except ModuleNotFoundError as e:
        extra = EXTRA_OF.get((e.name or "").split(".")[0])
        if extra is None:
            raise
        print(
            f"maskgate: error: '{args.command}' needs the module {e.name}: pip install 'maskgate[{extra}]'",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("maskgate: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into `head` and the like: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="maskgate",
        description="Face-mask gate for Raspberry Pi-class boards: train, convert, run, benchmark.",
    )
    parser.add_argument("--version", action="version", version=f"maskgate {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less log output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = sub.add_parser("models", help="third-party model files: fetch and verify")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    p = msub.add_parser("fetch", help="copy or download every manifest file into the cache, verified")
    p.add_argument("--mirror", type=Path, help="local folder holding the files (default $MASKGATE_MIRROR)")
    p.add_argument("--manifest", type=Path, help="manifest to use (default: the one shipped in models/)")
    p.add_argument("--for", dest="stage", choices=("edge", "train", "convert"),
                   help="only the files this stage needs (a device: edge); default all")  # fmt: skip
    p.set_defaults(handler=_models_fetch)
    p = msub.add_parser("list", help="show each manifest file and whether the cache holds it verified")
    p.add_argument("--manifest", type=Path, help="manifest to use (default: the one shipped in models/)")
    p.set_defaults(handler=_models_list)

    from . import commands

    commands.register(sub)
    for ep in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        ep.load()(sub)
    return parser


def add_config_command(sub, name: str, model, *, required: Sequence[str], handler, help: str,
                       description: str | None = None) -> argparse.ArgumentParser:  # fmt: skip
    """A subcommand whose options are the fields of ``model``.

    ``handler(config, args)`` receives the validated configuration, so every
    command validates the same way and reports a bad value as one line.
    """
    p = sub.add_parser(name, help=help, description=description or help)
    add_model_options(p, model, required=required)
    p.set_defaults(handler=lambda args: handler(config_from_args(model, args), args))
    return p


def add_model_options(parser: argparse.ArgumentParser, model, *, required: Sequence[str] = ()) -> None:
    """One ``--kebab-case`` option per pydantic field.

    The model stays the one source of defaults, bounds and help; values are
    passed through as given and validated by the model (``config_from_args``).
    A field may name its own flag with ``json_schema_extra={"flag": "--x"}``, and take several
    values after it with ``{"many": True}``.
    """
    for name, field in model.model_fields.items():
        flag = _flag(name, field)
        help_text = field.description or ""
        # A field marked ``many`` takes one or more values after its flag (``--image a.jpg b.jpg``, a
        # shell glob); other list fields parse one comma-separated value themselves (``--sizes``).
        many = {"nargs": "+"} if _extra(field).get("many") else {}
        if name in required:
            parser.add_argument(flag, dest=name, required=True, help=help_text, metavar=name.upper(), **many)
            continue
        default = "" if field.default is None else f" (default: {field.default})"
        if field.annotation is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text + default)  # fmt: skip
        else:
            parser.add_argument(flag, dest=name, default=argparse.SUPPRESS, **many,
                                metavar=_metavar(field.annotation), help=help_text + default)  # fmt: skip


def _extra(field) -> dict:
    return field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}


def _flag(name: str, field) -> str:
    return _extra(field).get("flag") or "--" + name.replace("_", "-")


def _metavar(annotation) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if isinstance(annotation, types.UnionType) and args else annotation
    if typing.get_origin(base) is typing.Literal:
        return "{" + ",".join(map(str, typing.get_args(base))) + "}"
    return {int: "N", float: "X", Path: "PATH", str: "TEXT"}.get(base, "VALUE")


def config_from_args(model, args: argparse.Namespace):
    """Validate parsed options into ``model``; the first problem becomes one line naming its flag."""
    from pydantic import ValidationError

    values = {k: getattr(args, k) for k in model.model_fields if hasattr(args, k)}
    try:
        return model(**values)
    except ValidationError as e:
        err = e.errors()[0]
        loc = err["loc"]
        where = _flag(str(loc[0]), model.model_fields[loc[0]]) if loc else "options"
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
        if args.stage is not None and args.stage not in item.used_by:
            continue
        try:
            path, state = fetch.fetch_one(item, mirror=mirror)
        except (fetch.NotInMirror, fetch.DownloadFailed) as e:
            if not item.optional:
                print(f"maskgate: error: {e}", file=sys.stderr)
                failed += 1
            else:  # needed only by a non-default option (e.g. another training backbone)
                print(f"{e}; skipped, optional ({item.purpose})")
            continue
        except MaskgateError as e:
            print(f"maskgate: error: {e}", file=sys.stderr)
            failed += 1
            continue
        print(f"{item.name}: {state.value} ({path})")
    return EXIT_USER_ERROR if failed else 0


def _models_list(args: argparse.Namespace) -> int:
    from . import fetch

    for item in fetch.load_manifest(args.manifest).values():
        state = "verified" if fetch.is_cached(item) else "missing, optional" if item.optional else "missing"
        state += " (MD5)" if state == "verified" and item.algorithm == "MD5" else ""
        print(f"{item.name}: {state} — {item.purpose} [{item.license}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
