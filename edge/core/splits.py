"""Reading a training run's split manifest (``split.json``, written by train/).

The device side needs it too: the scenes benchmark leaves out the scenes a
model trained on, so the reader lives here and training re-exports it.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import DataError


def read_manifest(
    path: Path, split: str | None = None, *, root: str | None = None
) -> list[tuple[Path, str, tuple | None]]:
    """(image path, label, box) of a manifest's samples, optionally of one split and one data root."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        roots = {k: Path(v) for k, v in doc["roots"].items()}
        rows = doc["samples"]
        out = []
        for r in rows:
            if (split is None or r["split"] == split) and (root is None or r["root"] == root):
                base = roots.get(r["root"], Path())
                out.append((base / r["path"], r["label"], tuple(r["box"]) if r["box"] else None))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(f"split manifest {path} is unreadable: {e!r}") from e
    return out
