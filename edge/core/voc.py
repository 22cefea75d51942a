"""Pascal VOC annotations: the face boxes of scene images.

Training turns them into face crops, and the scenes benchmark scores the
gate's detections against them; both read them here.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from .errors import DataError
from .geometry import Box


def parse_voc(xml_path: Path) -> tuple[str, list[tuple[str, Box]]]:
    """Image file name and (label, box) pairs of one VOC annotation."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise DataError(f"{xml_path}: not valid XML ({e})") from e
    except OSError as e:
        raise DataError(f"{xml_path}: cannot be read ({e.strerror or e})") from e
    filename = (root.findtext("filename") or "").strip()
    if not filename:
        raise DataError(f"{xml_path}: no <filename>")
    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        bb = obj.find("bndbox")
        if not name or bb is None:
            continue
        try:
            box = tuple(int(round(float(bb.findtext(k)))) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            continue
        objects.append((name, box))
    return filename, objects


def annotation_files(root: Path) -> list[Path]:
    """The .xml files of a VOC folder (``annotations/``), or a clear error."""
    ann = Path(root) / "annotations"
    if not ann.is_dir():
        raise DataError(f"VOC directory {root} must contain annotations/ ({ann} is missing)")
    files = sorted(ann.glob("*.xml"))
    if not files:
        raise DataError(f"VOC directory {root}: no .xml files in annotations/")
    return files
