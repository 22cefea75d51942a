"""What every training run directory holds, written the same way for the classifier and the U-Net.

A run directory is what a reviewer opens and what conversion reads, so its
common files have one writer: ``labels.txt``, ``config.json`` (the resolved
options plus what they resolved to: weights file and digest, preprocessing,
the command), ``metrics.json``, ``environment.json``, ``history.csv`` and
``report.md``. Each trainer adds its own (plots, ``dataset.json``,
``split.json``, overlays). Files are written into the staging directory of
``atomic.staged_dir``, so the run appears complete or not at all.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from maskgate.edge.core import atomic, fetch, sysinfo
from maskgate.edge.core.errors import OutputExistsError
from maskgate.edge.core.settings import Section

LABELS = "labels.txt"  # class names in output order, one a line
CHECKPOINT = "checkpoint.keras"  # the classifier's best model while it trains; gone from a finished run
MODEL = "model.keras"
REPORT = "report.md"


def check_new(out: Path) -> None:
    """Refuse an ``--out`` that exists or cannot be created, before minutes of work."""
    if out.exists():
        raise OutputExistsError(f"output directory {out} already exists; choose another --out")
    atomic.check_creatable(out, "--out")


def command_line() -> str | None:
    """How the run was started, when it was started as ``maskgate`` (not from Python)."""
    return shlex.join(["maskgate", *sys.argv[1:]]) if sys.argv and "maskgate" in sys.argv[0] else None


def run_config(
    cfg: Section,
    fields: Mapping[str, Any],
    *,
    weights: Path | None,
    preprocessing: Mapping[str, Any],
) -> dict[str, Any]:
    """``config.json``: the options as given, the trainer's ``fields``, then what the run used.

    The weights' digest names the exact file a run started from, whichever
    mirror or path it came through.
    """
    return (
        cfg.model_dump(mode="json")
        | dict(fields)
        | {
            "weights_file": str(weights) if weights else None,
            "weights_sha256": fetch.digest(weights.read_bytes()) if weights else None,
            "preprocessing": dict(preprocessing),
            "command": command_line(),
        }
    )


def write_json(path: Path, obj: Any) -> None:
    """JSON as every output of the stage is written: indented for a reader, atomically, paths as text."""
    atomic.write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def write_history(run: Path, history: Sequence[Mapping[str, Any]]) -> None:
    """``history.csv``, one row per epoch of every phase, columns as the first row has them."""
    if not history:
        return
    keys = list(history[0])
    rows = [",".join(keys)] + [",".join(str(h.get(k, "")) for k in keys) for h in history]
    atomic.write_text(run / "history.csv", "\n".join(rows) + "\n")


def write_run_files(
    run: Path,
    *,
    labels: Sequence[str],
    config: Mapping[str, Any],
    metrics: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    report: str,
) -> None:
    """The files every run directory has, whatever was trained."""
    atomic.write_text(run / LABELS, "\n".join(labels) + "\n")
    write_json(run / "metrics.json", metrics)
    write_json(run / "config.json", config)
    write_json(
        run / "environment.json", {"libraries": sysinfo.library_versions(), "machine": sysinfo.machine()}
    )
    write_history(run, history)
    atomic.write_text(run / REPORT, report)
