"""The layout docs/architecture.md describes, enforced: which room may import which.

Inside edge/ imports point one way, core <- detectors <- gate <- (web | mqtt) <- tools <- cli: a
room imports only the rooms of the levels before it. web/ and mqtt/ are one level, the side
channels that observe the gate: neither imports the other. train/ and convert/ build on edge/;
edge/ never imports them, and train/ never imports convert/ (convert/ consumes train's runs).
Imports inside functions count: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

LEVELS = [("core",), ("detectors",), ("gate",), ("web", "mqtt"), ("tools",), ("cli",)]
ROOMS = [room for level in LEVELS for room in level]
LEVEL_OF = {room: i for i, level in enumerate(LEVELS) for room in level}
PACKAGE_DIRS = {"edge": REPO / "edge", "train": REPO / "train", "convert": REPO / "convert"}


def _module_name(path: Path) -> str:
    """``maskgate.edge.gate.service`` for edge/gate/service.py."""
    for stage, root in PACKAGE_DIRS.items():
        if path.is_relative_to(root):
            parts = [stage, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            return ".".join(["maskgate", *parts])
    raise AssertionError(path)


def imports_of(path: Path, text: str | None = None) -> set[str]:
    """Every maskgate module a file imports, absolute or relative, at any depth of the file."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text() if text is None else text, str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # ``from . import fetch`` imports the module maskgate.edge.core.fetch
            found |= {f"{target}.{a.name}" for a in node.names}
    return {m for m in found if m.startswith("maskgate.")}


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "edge" and parts[2] in ROOMS else None


def _files(stage: str) -> list[Path]:
    return sorted(PACKAGE_DIRS[stage].rglob("*.py"))


def room_violations(path: Path, text: str | None = None) -> list[str]:
    """The imports of an edge/ file that point to a later room."""
    room = _room(_module_name(path))
    if room is None:
        return []
    allowed = {r for r in ROOMS if LEVEL_OF[r] < LEVEL_OF[room]} | {room}
    return [
        f"{path.relative_to(REPO)} ({room}) imports {target} ({_room(target)})"
        for target in sorted(imports_of(path, text))
        if _room(target) is not None and _room(target) not in allowed
    ]


def test_rooms_inside_edge_import_only_the_rooms_before_them():
    assert [v for path in _files("edge") for v in room_violations(path)] == []


def test_edge_never_imports_train_or_convert_and_train_never_imports_convert():
    wrong = []
    for stage, forbidden in (
        ("edge", ("maskgate.train", "maskgate.convert")),
        ("train", ("maskgate.convert",)),
    ):
        for path in _files(stage):
            wrong += [
                f"{path.relative_to(REPO)} imports {t}" for t in imports_of(path) if t.startswith(forbidden)
            ]
    assert wrong == []


def test_every_edge_module_lives_in_a_room():
    """At most a handful of modules at edge/'s top: the package marker, nothing else."""
    top = sorted(p.name for p in (REPO / "edge").glob("*.py"))
    assert top == ["__init__.py"]
    assert sorted(
        p.name for p in (REPO / "edge").iterdir() if p.is_dir() and p.name != "__pycache__"
    ) == sorted(ROOMS)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from ..core.errors import ConfigError", "maskgate.edge.core.errors"),
        ("from . import fetch", "maskgate.edge.gate.fetch"),
        ("def f():\n    from maskgate.edge.tools import bench", "maskgate.edge.tools.bench"),
    ],
)
def test_the_checker_sees_relative_and_lazy_imports(source, expected):
    """The check cannot pass by not seeing: relative imports resolve, imports in functions count."""
    assert expected in imports_of(REPO / "edge" / "gate" / "service.py", source)


@pytest.mark.parametrize(
    ("path", "source", "flagged"),
    [
        ("edge/core/bundle.py", "from ..gate.classifier import classifier_from_bundle", True),
        ("edge/detectors/ssd.py", "def f():\n    from ..tools import bench", True),
        ("edge/gate/analyzer.py", "from ..detectors.registry import make_detector", False),
        ("edge/cli/main.py", "from ..tools.bench import run_bench", False),
        ("edge/mqtt/publisher.py", "from ..gate.live import LiveState", False),
        ("edge/mqtt/publisher.py", "from ..web.server import read_token", True),
        ("edge/web/server.py", "def f():\n    from ..mqtt import publisher", True),
        ("edge/gate/service.py", "from ..mqtt.publisher import MqttPublisher", True),
    ],
)
def test_the_checker_flags_backward_imports_only(path, source, flagged):
    assert bool(room_violations(REPO / path, source)) is flagged
