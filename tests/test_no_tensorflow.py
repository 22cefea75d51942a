"""edge/ must run on a Pi that has no TensorFlow: prove no edge entry point imports it."""

import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, SHARED


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def test_edge_modules_and_cli_do_not_import_tensorflow(tmp_path):
    r = _fresh(f"""
        import importlib, pkgutil, sys
        import maskgate.edge
        walk = pkgutil.walk_packages(maskgate.edge.__path__, "maskgate.edge.")
        names = [m.name for m in walk if not m.name.endswith(".__main__")]  # __main__ runs the CLI
        assert "maskgate.edge.gate.service" in names and "maskgate.edge.core.bundle" in names, names
        for name in names:
            importlib.import_module(name)
        from maskgate.edge.cli import build_parser, main
        build_parser().parse_args(["train", "--data", "d", "--out", "o"])
        import os
        os.environ["MASKGATE_CACHE"] = {str(tmp_path)!r}
        main(["models", "list"])
        # scanning data and splitting are CPU-only too
        import maskgate.train.dataset, maskgate.train.split, maskgate.train.config
        bad = [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras")]
        print("LOADED", bad)
        assert not bad, bad
    """)
    assert r.returncode == 0, r.stderr
    assert "LOADED []" in r.stdout


FORBIDDEN = {"tensorflow", "keras", "tf_keras"}


def _imported_names(tree):
    """Top-level module names an AST imports: import statements and import_module/__import__ calls."""
    import ast

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module.split(".")[0]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                yield node.args[0].value.split(".")[0]


def test_edge_source_never_imports_tensorflow_or_train():
    """A static guard for imports inside functions that the runtime check cannot reach:
    no TensorFlow on the device, and edge/ never imports the stages that build on it."""
    import ast

    offenders = []
    for path in sorted((REPO / "edge").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        names = set(_imported_names(tree))
        offenders += [f"{path.name}: {n}" for n in names & FORBIDDEN]
        source = path.read_text()
        offenders += [f"{path.name}: {m}" for m in ("maskgate.train", "maskgate.convert") if m in source]
    assert offenders == []


def test_the_guard_sees_dynamic_imports():
    import ast

    tree = ast.parse("import importlib\nimportlib.import_module('tensorflow.lite')\n__import__('keras')")
    assert {"tensorflow", "keras"} <= set(_imported_names(tree))


def test_a_detect_run_loads_no_tensorflow(shared_models, tmp_path):
    """Not just importing: a whole detect run (SSD, int8 classifier, JSONL) on a real scene."""
    scene = SHARED / "data" / "scenes" / "images" / "maksssksksss0.jpg"
    if not scene.is_file():
        pytest.skip(f"shared scenes not found at {scene.parent}")
    out = tmp_path / "faces.jsonl"
    r = _fresh(f"""
        import os, sys
        os.environ["MASKGATE_MIRROR"] = {str(shared_models)!r}
        os.environ["MASKGATE_CACHE"] = {str(tmp_path / "cache")!r}
        from maskgate.edge.cli import main
        assert main(["-q", "detect", "--source", {str(scene)!r}, "--jsonl", {str(out)!r}]) == 0
        bad = [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras")]
        assert not bad, bad
    """)
    assert r.returncode == 0, r.stderr
    assert len(out.read_text().splitlines()) == 1
