"""edge/ must run on a Pi that has no TensorFlow: prove no edge entry point imports it."""

import subprocess
import sys
import textwrap

from conftest import REPO


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def test_edge_modules_and_cli_do_not_import_tensorflow(tmp_path):
    r = _fresh(f"""
        import importlib, pkgutil, sys
        import maskgate.edge
        for m in pkgutil.iter_modules(maskgate.edge.__path__):
            importlib.import_module("maskgate.edge." + m.name)
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


def test_edge_source_never_names_tensorflow():
    """A static guard for imports inside functions that the runtime check cannot reach."""
    offenders = [
        p.name
        for p in (REPO / "edge").glob("*.py")
        if any(
            w in p.read_text() for w in ("import tensorflow", "import keras", "from keras", "from tensorflow")
        )
    ]
    assert offenders == []
