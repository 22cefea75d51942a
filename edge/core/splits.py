"""A training run's split manifest (``split.json``): its one format, writer and reader.

Classifier runs and segmenter runs both write one; conversion rebuilds
calibration, validation and test data from it, ``maskgate evaluate --split``
rebuilds a split, and the device side needs it too: the scenes benchmark
(``maskgate score --exclude-seen RUN``) leaves out the scenes a model trained
on. So the format lives here, beside the device code, as plain JSON (no numpy).

One row per example: a file of a class folder, a face box of a VOC scene, or
a VOC scene without faces (no box). Paths are relative to named data roots,
so a manifest stays valid when the data moves and carries no absolute paths
but the roots'. Rows may carry a file digest (``sha256``, classifier examples)
or an image size (``size``, segmenter scenes); readers need neither.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import atomic
from .errors import DataError

MANIFEST = "split.json"  # its name in a run directory
SPLITS = ("train", "val", "test")
VERSION = 1


@dataclass(frozen=True)
class Entry:
    """One row of a manifest."""

    path: str  # POSIX path relative to the root below
    root: str  # a key of the manifest's roots ("data", "voc")
    label: str
    split: str
    box: tuple | None = None  # (x1, y1, x2, y2) in the image's pixels; None for a whole file or scene
    group: int | None = None  # rows of one group were kept on one side of the split
    sha256: str | None = None  # the file's digest (classifier examples)
    size: tuple[int, int] | None = None  # the image's width and height (segmenter scenes)

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "path": self.path,
            "root": self.root,
            "box": list(self.box) if self.box else None,
            "label": self.label,
            "split": self.split,
            "group": self.group,
        }
        if self.sha256 is not None:
            row["sha256"] = self.sha256
        if self.size is not None:
            row["size"] = list(self.size)
        return row

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> Entry:
        return cls(
            path=row["path"],
            root=row["root"],
            label=row["label"],
            split=row["split"],
            box=tuple(row["box"]) if row["box"] else None,
            group=row.get("group"),
            sha256=row.get("sha256"),
            size=tuple(row["size"]) if row.get("size") else None,
        )


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest; ``counts`` is whatever its writer counted (classes, or scenes and faces)."""

    roots: dict[str, Path]
    entries: list[Entry]
    seed: int | None = None
    kind: str | None = None  # "scenes" for a segmenter run; None for a classifier run
    counts: dict[str, Any] | None = None

    def select(self, split: str | None = None, *, root: str | None = None) -> list[Entry]:
        return [
            e
            for e in self.entries
            if (split is None or e.split == split) and (root is None or e.root == root)
        ]

    def file_of(self, entry: Entry) -> Path:
        """Where an entry's image is now (relative to the working directory if its root is unnamed)."""
        return self.roots.get(entry.root, Path()) / entry.path


def write_manifest(
    path: Path,
    entries: Iterable[Entry],
    *,
    roots: Mapping[str, Path],
    seed: int,
    counts: Mapping[str, Any],
    kind: str | None = None,
    method: str | None = None,
) -> None:
    """Write ``split.json`` atomically; roots are stored resolved, so rows resolve from any directory.

    ``method``, if given, says in words how rows were dealt to the splits (for a reader; no reader needs it).
    """
    doc: dict[str, Any] = {"version": VERSION}
    if kind is not None:
        doc["kind"] = kind
    if method is not None:
        doc["method"] = method
    doc |= {
        "seed": seed,
        "roots": {k: str(Path(v).resolve()) for k, v in roots.items()},
        "counts": dict(counts),
        "samples": [e.to_json() for e in entries],
    }
    atomic.write_text(path, json.dumps(doc, indent=1) + "\n")


def load_manifest(path: Path) -> Manifest:
    """Parse a manifest of either kind of run; anything unreadable is one ``DataError`` line."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        return Manifest(
            roots={k: Path(v) for k, v in doc["roots"].items()},
            entries=[Entry.from_json(r) for r in doc["samples"]],
            seed=doc.get("seed"),
            kind=doc.get("kind"),
            counts=doc.get("counts"),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(f"split manifest {path} is unreadable: {e!r}") from e


def read_manifest(
    path: Path, split: str | None = None, *, root: str | None = None
) -> list[tuple[Path, str, tuple | None]]:
    """(image path, label, box) of a manifest's rows, optionally of one split and one data root."""
    manifest = load_manifest(path)
    return [(manifest.file_of(e), e.label, e.box) for e in manifest.select(split, root=root)]
