"""The one base of every settings model, and the one way a validation error becomes words.

Every configuration (the gate's TOML tree, each command's options, the stages'
run settings) is a pydantic model on ``Section``: unknown keys are errors and a
validated value cannot change under a running gate. ``error_lines`` names each
problem by its key path (or, on the command line, by its flag), worded by the
field's own description.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, ValidationError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def error_lines(
    e: ValidationError, root: type[BaseModel], *, name: Callable[[str], str] | None = None
) -> list[str]:
    """``key.path: what is wrong (got value)``, one per error; ``name`` renames a key path (a flag)."""
    return [_describe(err, root, name or (lambda key: key)) for err in e.errors()]


def describe_error(e: ValidationError, root: type[BaseModel]) -> str:
    """The first error only, for callers that stop at one."""
    return error_lines(e, root)[0]


def _describe(err: dict, root: type[BaseModel], name: Callable[[str], str]) -> str:
    model, path, rest, field = root, [], list(err["loc"]), None
    while rest and isinstance(model, type) and issubclass(model, BaseModel) and rest[0] in model.model_fields:
        field = model.model_fields[rest[0]]
        path.append(str(rest.pop(0)))
        model = field.annotation
    if err["type"] == "extra_forbidden":
        return f"{name('.'.join(path + [str(x) for x in rest[:1]]))}: unknown key"
    key = name(".".join(path)) if path else "(top level)"
    got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
    if err["type"] in ("model_type", "model_attributes_type"):
        return f"{key}: expected a table of settings ([{'.'.join(path)}] in TOML){got}"
    if rest and path and field is not None and field.description:
        # inside a tuple or a union: say what the whole value should look like
        return f"{key}: expected {field.description}{got}"
    return f"{key}: {err['msg'].removeprefix('Value error, ')}{got}"
