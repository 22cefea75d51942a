"""The one base of every settings model, and the one way a validation error becomes words.

Every configuration (the gate's TOML tree, each command's options, the stages'
run settings) is a pydantic model on ``Section``: unknown keys are errors and a
validated value cannot change under a running gate. ``error_lines`` names each
problem by its key path (or, on the command line, by its flag), worded by the
field's own description.
"""

from __future__ import annotations

import stat
import types
import typing
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def error_lines(
    e: ValidationError, root: type[BaseModel], *, name: Callable[[str], str] | None = None
) -> list[str]:
    """``key.path: what is wrong (got value)``, one per error; ``name`` renames a key path (a flag)."""
    return [describe(err, root, name=name) for err in e.errors()]


def describe(err: dict, root: type[BaseModel], *, name: Callable[[str], str] | None = None) -> str:
    """One pydantic error as a line, its key path walked through ``root``'s nested models and lists."""
    name = name or (lambda key: key)
    model, path, rest, field = root, [], list(err["loc"]), None
    while rest:
        optional = [a for a in typing.get_args(model) if a is not type(None)]
        if typing.get_origin(model) in (typing.Union, types.UnionType) and len(optional) == 1:
            model = optional[0]  # X | None: walk into X
        if isinstance(model, type) and issubclass(model, BaseModel) and rest[0] in model.model_fields:
            field = model.model_fields[rest[0]]
            model = field.annotation
        elif isinstance(rest[0], int) and typing.get_origin(model) is list:
            (model,) = typing.get_args(model) or (None,)  # into the list's items
        else:
            break
        path.append(str(rest.pop(0)))
    if err["type"] == "extra_forbidden":  # the key is the input's own: quoted unless printable, so one line
        unknown = [str(x) if str(x).isprintable() else repr(str(x)) for x in rest[:1]]
        return f"{name('.'.join(path + unknown))}: unknown key"
    key = name(".".join(path)) if path else "(top level)"
    if err["type"] == "missing":
        about = field.description if field is not None and not rest else None
        return f"lacks {about} ({key})" if about else f"lacks {key}"
    got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict | list) else ""
    if err["type"] in ("model_type", "model_attributes_type"):
        return f"{key}: expected a table of settings ([{'.'.join(path)}] in TOML){got}"
    if rest and path and field is not None and field.description:
        # inside a tuple or a union: say what the whole value should look like
        return f"{key}: expected {field.description}{got}"
    return f"{key}: {err['msg'].removeprefix('Value error, ')}{got}"


def read_private_file(path: Path, key: str) -> str:
    """A secret named by the setting ``key`` (a token, a password, a key), read from ``path``; a file
    its group or others may read is refused, so the secret is the service user's alone."""
    from .errors import ConfigError

    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{key} {path}: cannot be read: {getattr(e, 'strerror', None) or e}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{key} {path}: readable by others (mode {stat.S_IMODE(mode):o}); chmod 600")
    return text
