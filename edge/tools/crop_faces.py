"""``maskgate crop-faces``: cut the faces out of raw photos, optionally sorted by the current model.

A public face-mask project built its training set this way: a face detector over photos, each face
saved with a margin, then sorted into class folders by hand or by a first model. This is that tool, on the
device's own detector, crop rule (``preprocess.expand_box``) and classifier, so a crop is the region
the gate would classify. With ``--classify`` the output is a ``maskgate train --data`` folder (one
subfolder per class of the bundle) whose labels are the model's guesses, to be checked by a person
before training on them.

Crops are lossless PNGs named ``<source stem>_face<NN>.png``, ``NN`` the face's rank in the
detector's output (best first); ``crops.csv`` gives each crop's source, boxes, scores and label, and
``summary.json`` the counts and every skipped file with its reason. The output folder appears only
when the run completes.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..core import atomic
from ..core.errors import ConfigError, DataError, ImageReadError, OutputExistsError
from ..core.geometry import crop, expand_box
from ..core.imageio import read_image
from ..core.preprocess import prepare_face
from ..core.sysinfo import resolve_threads
from ..gate.classifier import classifier_from_bundle
from ..gate.config import GateConfig
from ..gate.sources import image_paths
from .config import CropFacesConfig

logger = logging.getLogger(__name__)

INDEX = "crops.csv"
SUMMARY = "summary.json"
# crops.csv: boxes in pixels of the source image (the detector's, then grown by the margin); then one
# probability column per class of the classifier with --classify.
COLUMNS = ["crop", "source", "face", "x1", "y1", "x2", "y2", "crop_x1", "crop_y1", "crop_x2", "crop_y2",
           "detection_score", "label", "probability"]  # fmt: skip


def source_paths(source: str) -> list[Path]:
    """The images ``--source`` names, as ``detect`` reads them; a wrong path is one clear line."""
    if not Path(source).exists() and not glob.has_magic(source):
        raise ConfigError(f"--source {source}: no such file or folder")
    try:
        return image_paths(source)
    except ConfigError as e:
        raise ConfigError(f"--source {source}: {str(e).rsplit(': ', 1)[-1]}") from None


class _Names:
    """Crop names that lead back to their source: the file's stem, or its whole name if stems clash."""

    def __init__(self) -> None:
        self._owner: dict[str, Path] = {}

    def stem(self, path: Path) -> str:
        for candidate in (path.stem, path.name.replace(".", "_")):
            if self._owner.setdefault(candidate, path) == path:
                return candidate
        n = 2
        while self._owner.setdefault(f"{path.stem}-{n}", path) != path:  # one name in two folders
            n += 1
        return f"{path.stem}-{n}"


def crop_faces(cfg: CropFacesConfig, gate: GateConfig, *, progress: bool = True) -> dict[str, Any]:
    """Detect, crop (and classify) the faces of every image of ``cfg.source`` into ``cfg.out``.

    The detector, its margin and the classifier are the gate's (``gate``): a crop is the region the
    gate would classify, and faces are kept from the detection score the gate decides on.

    Returns the summary also written to ``summary.json``. An unreadable image is skipped and listed;
    if no image at all is readable, nothing is written and ``DataError`` says so.
    """
    if Path(cfg.out).exists():
        raise OutputExistsError(f"--out {cfg.out} already exists; choose another folder or remove it")
    atomic.check_creatable(cfg.out, "--out")
    paths = source_paths(cfg.source)
    from ..detectors.registry import make_detector

    confidence = gate.decision.min_detection_score
    # min_face_px 1: faces below --min-size are counted as skipped, not lost unseen
    det_cfg = gate.detector.model_copy(update={"confidence": confidence, "min_face_px": 1})
    classes: list[str] = []
    per_image: Counter = Counter()  # faces found -> images
    written: Counter = Counter()  # folder ("" when flat) -> crops
    skipped_faces: Counter = Counter()  # reason -> faces
    unreadable: list[dict[str, str]] = []
    no_face: list[str] = []
    names = _Names()
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        detector = make_detector(det_cfg)
        stack.callback(detector.close)
        classifier = None
        if cfg.classify:
            from ..core.bundle import default_bundle_path, load_bundle

            bundle = load_bundle(gate.classifier.bundle or default_bundle_path(), kind="classifier")
            classifier = classifier_from_bundle(bundle, num_threads=resolve_threads(gate.classifier.threads))
            stack.callback(classifier.close)
            classes = bundle.classes
        staging = stack.enter_context(atomic.staged_dir(cfg.out))
        for name in classes:
            (staging / name).mkdir()
        index = stack.enter_context(open(staging / INDEX, "w", newline="", encoding="utf-8"))
        rows = csv.writer(index)
        rows.writerow([*COLUMNS, *(f"p_{c}" for c in classes)])
        bar = stack.enter_context(tqdm(paths, desc="crop-faces", unit="img", disable=not progress))
        for path in bar:
            try:
                image = read_image(path, max_pixels=int(gate.source.max_image_mp * 1e6))
            except ImageReadError as e:
                unreadable.append({"image": str(path), "reason": str(e).split(": ", 1)[-1]})
                continue
            detections = detector.detect(image)
            per_image[len(detections)] += 1
            if not detections:
                no_face.append(str(path))
                continue
            kept = _crops(image, detections, cfg.min_size, gate.detector.margin, skipped_faces)
            probs = [None] * len(kept)
            if classifier is not None and kept:
                faces = np.stack([prepare_face(face, classifier.input_size) for *_, face in kept])
                probs = classifier.predict(faces)
            stem = names.stem(path)
            for (k, d, grown, face), p in zip(kept, probs, strict=True):
                label, prob = ("", "") if p is None else (classes[int(p.argmax())], round(float(p.max()), 4))
                relative = f"{label + '/' if label else ''}{stem}_face{k:02d}.png"
                _write_png(staging / relative, face)
                written[label] += 1
                scores = [] if p is None else [round(float(x), 4) for x in p]
                rows.writerow(
                    [relative, str(path), k, *d.box, *grown, round(d.score, 4), label, prob, *scores]
                )
        if not per_image:
            first = f" (e.g. {Path(unreadable[0]['image']).name}: {unreadable[0]['reason']})"
            raise DataError(f"--source {cfg.source}: none of {len(paths)} file(s) is a readable image{first}")
        summary = {
            "source": cfg.source,
            "detector": gate.detector.backend,
            "confidence": confidence,
            "margin": gate.detector.margin,
            "min_size": cfg.min_size,
            "classifier": str(gate.classifier.bundle or "shipped") if cfg.classify else None,
            "images": len(paths),
            "images_read": sum(per_image.values()),
            "faces_found": sum(n * count for n, count in per_image.items()),
            "faces_per_image": {str(n): per_image[n] for n in sorted(per_image)},
            "faces_written": sum(written.values()),
            "written_per_class": {c: written[c] for c in classes} if classes else None,
            "faces_skipped": dict(skipped_faces),
            "images_without_faces": no_face,
            "unreadable": unreadable,
            "seconds": round(time.perf_counter() - start, 2),
        }
        atomic.write_text(staging / SUMMARY, json.dumps(summary, indent=2) + "\n")
        index.close()  # complete before the folder is moved into place
    return summary


def _crops(
    image: np.ndarray, detections: list, min_size: int, margin: float, skipped: Counter
) -> list[tuple]:
    """(rank, detection, grown box, crop) of each face kept; the others counted in ``skipped`` by reason."""
    h, w = image.shape[:2]
    kept = []
    for k, d in enumerate(detections):
        if d.box[3] - d.box[1] < min_size:
            skipped[f"below {min_size} px"] += 1
            continue
        grown = expand_box(d.box, margin, w, h)
        if grown is None:  # the detector clamps boxes to the image: one left empty lay outside it
            skipped["box outside the image"] += 1
            continue
        kept.append((k, d, grown, crop(image, grown)))
    return kept


def _write_png(path: Path, image: np.ndarray) -> None:
    import cv2

    ok, buf = cv2.imencode(".png", image)
    if not ok:  # OpenCV encodes any non-empty uint8 BGR image; this would be a bug
        raise RuntimeError(f"cannot encode {path.name} as PNG")
    path.write_bytes(buf.tobytes())


def format_summary(summary: dict[str, Any], out: Path) -> str:
    """The end-of-run table: what was read, found, written and skipped, and why."""
    dist = summary["faces_per_image"]
    width = max([len(str(v)) for v in dist.values()] + [len(k) for k in dist] + [2])
    lines = [
        f"images read          {summary['images_read']} of {summary['images']}",
        f"faces found          {summary['faces_found']}",
        "faces per image      " + " ".join(k.rjust(width) for k in dist),
        "  images             " + " ".join(str(v).rjust(width) for v in dist.values()),
        f"faces written        {summary['faces_written']} -> {out}/"
        + (
            "   " + "  ".join(f"{c}: {n}" for c, n in summary["written_per_class"].items())
            if summary["written_per_class"]
            else ""
        ),
    ]
    skipped = [f"{n} face(s) {reason}" for reason, n in summary["faces_skipped"].items()]
    if summary["images_without_faces"]:
        skipped.append(f"{len(summary['images_without_faces'])} image(s) with no face")
    if summary["unreadable"]:
        skipped.append(f"{len(summary['unreadable'])} unreadable file(s)")
    lines.append(f"skipped              {', '.join(skipped) or 'nothing'}")
    lines.append(f"time                 {summary['seconds']:.1f} s")
    lines += [f"  unreadable {u['image']}: {u['reason']}" for u in summary["unreadable"]]
    return "\n".join(lines)
