"""Score ``maskgate detect`` output against Pascal VOC face boxes: the scenes benchmark.

The protocol (the edge runtime issue): ground-truth faces at least
``min_height`` px high count; ``mask_weared_incorrect`` is left out; a face is
*found* when a predicted box overlaps it with IoU >= ``iou``, each prediction
matching at most one face (greedy, best overlap first), and *right* when the
predicted label equals the annotated one. Predictions on faces that do not
count (too small, left-out class) are neither credited nor penalised.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import scene_split
from ..core.errors import DataError
from ..core.geometry import Box, greedy_match, iou_matrix
from ..core.labels import INCORRECT
from ..core.splits import read_manifest
from ..core.voc import annotation_files, parse_voc

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    box: Box
    label: str


def match_scored(
    reference: Sequence[tuple[Box, float]], candidate: Sequence[tuple[Box, float]], iou: float = 0.5
) -> tuple[int, int, list[tuple[float, float]]]:
    """One detector's boxes against another's: (reference boxes, found, (reference, candidate) scores)."""
    pairs = greedy_match(iou_matrix([b for b, _ in reference], [b for b, _ in candidate]), iou)
    return len(reference), len(pairs), [(reference[r][1], candidate[c][1]) for r, c in pairs]


def match_image(
    truth: list[tuple[str, Box]],
    predicted: list[Prediction],
    *,
    iou: float,
    min_height: int,
    skip_labels: Iterable[str] = (INCORRECT,),
) -> Counter:
    """Counts for one image: ``faces``, ``found``, ``right`` overall and per class, and ``extra`` boxes."""
    skip = set(skip_labels)
    pairs = greedy_match(iou_matrix([b for _, b in truth], [p.box for p in predicted]), iou)
    matched = dict(pairs)
    c: Counter = Counter()
    for i, (label, box) in enumerate(truth):
        if label in skip or box[3] - box[1] < min_height:
            continue
        c["faces"] += 1
        c[f"faces:{label}"] += 1
        if i in matched:
            c["found"] += 1
            c[f"found:{label}"] += 1
            if predicted[matched[i]].label == label:
                c["right"] += 1
                c[f"right:{label}"] += 1
    c["extra"] += len(predicted) - len(pairs)  # boxes on no annotated face at all
    return c


def read_jsonl(path: Path) -> tuple[dict[str, list[Prediction]], list[float]]:
    """Predictions per image name, and the per-frame latencies recorded with them."""
    predictions: dict[str, list[Prediction]] = {}
    latencies: list[float] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(f"--jsonl {path}: cannot be read ({e.strerror or e})") from e
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            name = row["image"]
            faces = [Prediction(tuple(int(v) for v in f["box"]), f["label"]) for f in row["faces"]]
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"--jsonl {path}, line {n}: not a maskgate detect line ({e})") from e
        predictions[name] = faces
        if isinstance(row.get("ms"), int | float):
            latencies.append(float(row["ms"]))
    return predictions, latencies


def seen_scenes(split_json: Path) -> set[str]:
    """Image names of the VOC scenes a training run used for training or validation.

    Chosen by root, not by box: a segmenter also trains on scenes without faces (rows with no box),
    and those must not be scored as unseen either.
    """
    rows = read_manifest(split_json, "train", root="voc") + read_manifest(split_json, "val", root="voc")
    return {path.name for path, _, _ in rows}


def score(
    voc: Path,
    predictions: dict[str, list[Prediction]],
    *,
    iou: float = 0.4,
    min_height: int = 32,
    exclude: set[str] = frozenset(),
    scenes: str | None = None,
) -> dict[str, Any]:
    """The scenes metric over every annotated image that ``predictions`` covers, minus ``exclude``.

    ``scenes`` (``tune`` or ``report``) keeps only the images on that side of
    ``core.scene_split``; figures that report how the defaults do use ``report``.
    """
    if scenes is not None and scenes not in scene_split.SIDES:
        raise ValueError(f"scenes must be one of {', '.join(scene_split.SIDES)}, not {scenes!r}")
    total: Counter = Counter()
    images = missing = excluded = other_side = 0
    for xml_path in annotation_files(voc):
        filename, truth = parse_voc(xml_path)
        if scenes is not None and scene_split.side(filename) != scenes:
            other_side += 1
            continue
        if filename in exclude:
            excluded += 1
            continue
        if filename not in predictions:
            missing += 1
            continue
        images += 1
        total += match_image(truth, predictions[filename], iou=iou, min_height=min_height)
    if not images:
        raise DataError(f"no image of {voc} appears in the detections; was detect run on its images/?")
    faces = total["faces"]
    classes = sorted({k.split(":", 1)[1] for k in total if k.startswith("faces:")})
    return {
        "images": images,
        "images_without_detections_line": missing,
        "images_excluded": excluded,
        "scenes": scenes or "all",
        "images_other_side": other_side,
        "faces": faces,
        "found": total["found"],
        "right": total["right"],
        "recall": total["found"] / faces if faces else None,
        "accuracy_on_found": total["right"] / total["found"] if total["found"] else None,
        "end_to_end_accuracy": total["right"] / faces if faces else None,
        "extra_boxes_per_image": total["extra"] / images,
        "per_class": {
            c: {
                "faces": total[f"faces:{c}"],
                "recall": total[f"found:{c}"] / total[f"faces:{c}"],
                "accuracy_on_found": (total[f"right:{c}"] / total[f"found:{c}"])
                if total[f"found:{c}"]
                else None,
            }
            for c in classes
        },
        "protocol": {"iou": iou, "min_height": min_height, "left_out": [INCORRECT]},
    }


def format_report(result: dict[str, Any]) -> str:
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f} %"

    lines = [
        ("" if result.get("scenes", "all") == "all" else f"{result['scenes']} scenes: ")
        + f"images {result['images']}, faces {result['faces']} (>= {result['protocol']['min_height']} px, "
        f"IoU >= {result['protocol']['iou']})",
        f"detection recall     {pct(result['recall'])}",
        f"accuracy on found    {pct(result['accuracy_on_found'])}",
        f"end-to-end accuracy  {pct(result['end_to_end_accuracy'])}",
        f"extra boxes / image  {result['extra_boxes_per_image']:.2f}",
    ]
    for c, v in result["per_class"].items():
        lines.append(
            f"  {c}: {v['faces']} faces, recall {pct(v['recall'])}, "
            f"accuracy on found {pct(v['accuracy_on_found'])}"
        )
    lat = result.get("latency_ms")
    if lat:
        lines.append(f"per-frame latency    p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms")
    return "\n".join(lines)
