"""Building subcommands from settings models, and the gate configuration every device command shares.

A command's options are the fields of its pydantic model: the model stays the
one source of defaults, bounds and help, and the parsed values are validated by
it, so a bad value is one line naming its flag whichever command it came in by.
Nothing here imports numpy or the libraries the commands use: ``--help`` must
be instant on a Pi.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined

from ..core.errors import ConfigError
from ..core.settings import error_lines
from ..gate.config import DEFAULT_PATH, GateConfig, load, parse_override

# A command group whose first word may be left out: ``maskgate convert --model RUN`` is
# ``maskgate convert classifier --model RUN``. Filled by the commands' register functions.
DEFAULT_TARGETS: dict[str, str] = {}


def set_default_target(command: str, target: str) -> None:
    """Let ``maskgate COMMAND --option ...`` stand for ``maskgate COMMAND TARGET --option ...``."""
    DEFAULT_TARGETS[command] = target


def expand_default_targets(argv: Sequence[str]) -> list[str]:
    """``argv`` with a group's default target put in where the user went straight to its options."""
    argv = list(argv)
    for i, word in enumerate(argv):
        if word.startswith("-"):
            continue
        target = DEFAULT_TARGETS.get(word)
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if target is not None and nxt is not None and nxt.startswith("--") and nxt != "--help":
            argv.insert(i + 1, target)
        break  # only the command word, the first positional, is looked at
    return argv


def add_config_command(
    sub: argparse._SubParsersAction,
    name: str,
    model: type[BaseModel],
    *,
    handler,
    help: str,
    description: str | None = None,
    aliases: Sequence[str] = (),
) -> argparse.ArgumentParser:
    """A subcommand whose options are the fields of ``model``.

    ``handler(config, args)`` receives the validated configuration, so every
    command validates the same way and reports a bad value as one line.
    A field without a default is a required flag.
    """
    p = sub.add_parser(name, help=help, description=description or help, aliases=list(aliases))
    add_model_options(p, model)
    p.set_defaults(handler=lambda args: handler(config_from_args(model, args), args))
    return p


def add_model_options(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """One ``--kebab-case`` option per field of ``model``.

    A field may name its own flag with ``json_schema_extra={"flag": "--x"}``, another
    accepted spelling with ``{"alias_flags": ["--y"]}``, and take several values after
    it with ``{"many": True}``.
    """
    required = parser.add_argument_group("required")
    for name, field in model.model_fields.items():
        extra = _extra(field)
        flags = [_flag(name, field), *extra.get("alias_flags", ())]
        help_text = field.description or ""
        # A field marked ``many`` takes one or more values after its flag (``--source a.jpg b.jpg``, a
        # shell glob); other list fields parse one comma-separated value themselves (``--sizes``).
        many = {"nargs": "+"} if extra.get("many") else {}
        metavar = extra.get("metavar") or _metavar(
            typing.get_args(field.annotation)[0] if many else field.annotation
        )
        if field.is_required():
            required.add_argument(*flags, dest=name, required=True, help=help_text, metavar=metavar, **many)
            continue
        shown = show_default(field.get_default(call_default_factory=True))
        default = "" if shown is None else f" (default: {shown})"
        if field.annotation is bool:
            parser.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text + default)  # fmt: skip
        else:
            parser.add_argument(*flags, dest=name, default=argparse.SUPPRESS, **many,
                                metavar=metavar, help=help_text + default)  # fmt: skip


def show_default(value: Any) -> str | None:
    """A default as a user would type it on the command line (None: nothing to show)."""
    if value is None or value is PydanticUndefined:
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return f"{value[0]}x{value[1]}"
    if isinstance(value, list | tuple):
        return ",".join(show_default(v) or "" for v in value)
    return str(value)


def _extra(field) -> dict:
    return field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}


def _flag(name: str, field) -> str:
    return _extra(field).get("flag") or "--" + name.replace("_", "-")


def _metavar(annotation) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if isinstance(annotation, types.UnionType) and args else annotation
    if typing.get_origin(base) is typing.Literal:
        return "{" + ",".join(map(str, typing.get_args(base))) + "}"
    if typing.get_origin(base) is list:  # one comma-separated value: say its form
        (item,) = typing.get_args(base) or (None,)
        if typing.get_origin(item) is tuple:
            return "WxH[,WxH...]"
        return {int: "N[,N...]", float: "X[,X...]"}.get(item, "VALUE[,VALUE...]")
    return {int: "N", float: "X", Path: "PATH", str: "TEXT"}.get(base, "VALUE")


def config_from_args(model: type[BaseModel], args: argparse.Namespace):
    """Validate parsed options into ``model``; every problem becomes a part of one line naming its flag."""
    values = {k: getattr(args, k) for k in model.model_fields if hasattr(args, k)}
    try:
        return model(**values)
    except ValidationError as e:

        def flag(key: str) -> str:
            head = key.split(".")[0]
            return _flag(head, model.model_fields[head]) if head in model.model_fields else "options"

        raise ConfigError("; ".join(error_lines(e, model, name=flag))) from None


SHORTCUTS = {
    "source": ("source.uri", "sets source.uri: picamera, a camera index, video, URL, image, folder or glob"),
    "bundle": ("classifier.bundle", "sets classifier.bundle: a classifier bundle folder"),
    "detector": ("detector.backend", "sets detector.backend (retinaface-int8, ssd-int8, ssd-opencv, unet)"),
}


def add_gate_options(
    p: argparse.ArgumentParser,
    *,
    default_note: str,
    source_required: bool = False,
    shortcuts: Sequence[str] = ("source", "bundle", "detector"),
) -> None:
    """``--config`` and ``--set``, and the shortcut flags for common settings.

    Every device command and tool reads the gate's settings this one way, so a tool
    never carries a copy of a gate setting with another default.
    """
    p.add_argument("--config", type=Path, metavar="PATH", help=f"TOML configuration file ({default_note})")
    for name in shortcuts:
        _, help_text = SHORTCUTS[name]
        kind, metavar = (Path, "PATH") if name == "bundle" else (str, name.upper())
        p.add_argument(f"--{name}", type=kind, help=help_text, metavar=metavar,
                       **({"required": True} if name == "source" and source_required else {}))  # fmt: skip
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override one setting of the gate's configuration, e.g. --set detector.confidence=0.6 "
        "(repeatable)",
    )


SYSTEM_NOTE = f"default: {DEFAULT_PATH} if present"


def gate_config(
    args: argparse.Namespace, *, system_default: bool = True, shortcuts: Sequence[str] = tuple(SHORTCUTS)
) -> tuple[GateConfig, str]:
    """The configuration from ``--config`` (or the system default) with the command line on top."""
    overrides = [parse_override(text) for text in getattr(args, "overrides", [])]
    for name in shortcuts:
        value = getattr(args, name, None)
        if value is not None:
            overrides.append((SHORTCUTS[name][0], str(value)))
    if getattr(args, "max_frames", None) is not None:
        overrides.append(("source.max_frames", args.max_frames))
    return load(getattr(args, "config", None), overrides, system_default=system_default)
