"""The one split of the shared VOC scenes between choosing and reporting.

Everything chosen on scenes (detector confidences, the gate's
``min_detection_score``, int8 calibration and verification of detectors, the
segmenter's training and validation) uses the ``tune`` half; every figure that
reports how well the shipped defaults do uses the ``report`` half and nothing
else. A scene's side is a pure function of its file name (the first byte of
the name's SHA-256), so it needs no file to agree on, is the same on every
machine and for any subset of scenes, and a new scene never moves an old one.
``models/scenes-split.txt`` lists the sides of the 700 shared scenes for the
record (``python -m maskgate.edge.core.scene_split DIR`` writes that list).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable
from pathlib import Path

TUNE = "tune"
REPORT = "report"
SIDES = (TUNE, REPORT)


def side(name: str) -> str:
    """``tune`` or ``report`` for a scene, by its file name (not its path: folders move)."""
    return REPORT if hashlib.sha256(Path(name).name.encode("utf-8")).digest()[0] >= 128 else TUNE


def select(names: Iterable[str], which: str) -> list[str]:
    """The names of ``names`` on side ``which``, in their order."""
    if which not in SIDES:
        raise ValueError(f"scene split side must be one of {', '.join(SIDES)}, not {which!r}")
    return [n for n in names if side(n) == which]


def listing(names: Iterable[str]) -> str:
    """The written-down split: one ``side<TAB>name`` line per scene, sorted by name."""
    return "".join(f"{side(n)}\t{Path(n).name}\n" for n in sorted(Path(n).name for n in names))


if __name__ == "__main__":  # pragma: no cover - writes the record kept in models/
    folder = Path(sys.argv[1])
    sys.stdout.write(listing(p.name for p in folder.glob("*.jpg")))
