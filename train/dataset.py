"""Find the images of a dataset, read each once, and describe what was found.

Two layouts: a folder per class (class = folder name) and Pascal VOC scenes,
whose face boxes become crops. Scanning reads every file (by content, not by
extension), records its SHA-256 for duplicate detection and the dataset hash,
and a difference hash for near-duplicate grouping. Files that cannot be read
are skipped and listed, never fatal: real datasets always hold a few.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from maskgate.edge.core.errors import DataError, ImageReadError
from maskgate.edge.core.geometry import Box, crop, expand_box
from maskgate.edge.core.imageio import decode_image
from maskgate.edge.core.labels import order_classes
from maskgate.edge.core.preprocess import prepare_face
from maskgate.edge.core.sysinfo import resolve_threads
from maskgate.edge.core.voc import annotation_files, parse_voc


@dataclass(frozen=True)
class Sample:
    """One training example: a whole image file, or a box inside a scene."""

    path: Path
    label: str
    box: Box | None = None  # a VOC face box, already grown by the margin and clamped
    scene: str | None = None  # VOC scenes: crops of one scene share a group
    # Set by scanning, for grouping; samples rebuilt from a split manifest go without.
    sha256: str = ""
    dhash: int = 0  # 64-bit difference hash of the example's pixels
    dhash_mirror: int = 0  # the same of its mirror image: flipped copies are one photo


@dataclass
class ScanResult:
    samples: list[Sample]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    voc_skipped: Counter = field(default_factory=Counter)  # reason -> count of VOC boxes left out
    ignored_classes: list[str] = field(default_factory=list)  # class folders not read (not trained)

    @property
    def classes(self) -> list[str]:
        return order_classes({s.label for s in self.samples})

    def counts(self) -> dict[str, int]:
        c = Counter(s.label for s in self.samples)
        return {k: c[k] for k in self.classes}


def dhash(image_bgr: np.ndarray) -> tuple[int, int]:
    """64-bit difference hash of an image and of its mirror image.

    Survives re-encoding, resizing and mild colour changes, which byte
    hashes do not; used only to keep copies of one photo on one side of the split.
    """
    import cv2

    gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(gray, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)

    def bits(a: np.ndarray) -> int:
        return int.from_bytes(np.packbits((a[:, 1:] > a[:, :-1]).ravel()).tobytes(), "big")

    return bits(small), bits(small[:, ::-1])


def content_hash(samples: Iterable[Sample], roots: Mapping[str, Path]) -> str:
    """SHA-256 over sorted (relative path, box, label, file digest): names the data a run saw."""
    lines = []
    for s in samples:
        _, rel = locate(s.path, roots)
        box = ",".join(map(str, s.box)) if s.box else ""
        lines.append(f"{rel}\t{box}\t{s.label}\t{s.sha256}")
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def locate(path: Path, roots: Mapping[str, Path]) -> tuple[str, str]:
    """The name of the root ``path`` lies under and its POSIX path relative to it.

    Reports and manifests name files this way, so they stay valid when the
    data moves and carry no absolute paths of the machine that trained.
    """
    resolved = path.resolve()
    for name, root in roots.items():
        try:
            return name, resolved.relative_to(root.resolve()).as_posix()
        except ValueError:
            continue
    return "", path.as_posix()


def _files_below(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _map_threads(fn, items: Sequence, *, workers: int, desc: str, unit: str, progress: bool):
    """``fn`` over ``items`` on a thread pool (OpenCV decoding releases the GIL), in order, with a bar."""
    with ThreadPoolExecutor(resolve_threads(workers)) as pool:
        yield from tqdm(pool.map(fn, items), total=len(items), desc=desc, unit=unit, disable=not progress)


def scan_folder(
    root: Path,
    *,
    classes: Collection[str] | None = None,
    max_per_class: int | None = None,
    seed: int = 0,
    workers: int = 0,
    progress: bool = True,
) -> ScanResult:
    """Scan a folder-per-class dataset; with ``classes``, only those class folders."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"data directory {root} does not exist")
    if not root.is_dir():
        raise DataError(f"data path {root} is not a directory")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(
            f"data directory {root} has no class folders (expected e.g. with_mask/, without_mask/)"
        )
    ignored = []
    if classes is not None:
        ignored = [d.name for d in class_dirs if d.name not in classes]
        class_dirs = [d for d in class_dirs if d.name in classes]
        if not class_dirs:
            raise DataError(f"data directory {root} has none of the class folders {', '.join(classes)}")

    jobs: list[tuple[Path, str]] = []
    for d in class_dirs:
        files = _files_below(d)
        if max_per_class is not None and len(files) > max_per_class:
            files = [files[i] for i in np.random.default_rng(seed).permutation(len(files))[:max_per_class]]
            files.sort()
        jobs.extend((f, d.name) for f in files)
    if not jobs:
        raise DataError(f"data directory {root} has class folders but no files in them")

    def read(job: tuple[Path, str]) -> Sample | tuple[str, str]:
        path, label = job
        try:
            data = path.read_bytes()
            image = decode_image(data, str(path))
        except (ImageReadError, OSError) as e:
            return str(path), _reason(e)
        h, hm = dhash(image)
        return Sample(path, label, sha256=hashlib.sha256(data).hexdigest(), dhash=h, dhash_mirror=hm)

    result = ScanResult(samples=[], ignored_classes=ignored)
    for item in _map_threads(
        read, jobs, workers=workers, desc=f"scan {root.name}", unit="img", progress=progress
    ):
        if isinstance(item, Sample):
            result.samples.append(item)
        else:
            result.skipped.append(item)
    if not result.samples:
        raise DataError(f"data directory {root}: none of {len(jobs)} files is a readable image")
    return result


def _reason(e: Exception) -> str:
    text = str(e)
    return text.split(": ", 1)[1] if ": " in text else text


def scan_voc(
    root: Path,
    *,
    classes: Sequence[str],
    margin: float,
    min_size: int,
    workers: int = 0,
    progress: bool = True,
) -> ScanResult:
    """Turn VOC scenes into face-crop samples of the given classes."""
    root = Path(root)
    images_dir = root / "images"
    if not images_dir.is_dir():
        raise DataError(
            f"VOC directory {root} must contain images/ and annotations/ ({images_dir} is missing)"
        )
    xmls = annotation_files(root)

    wanted = set(classes)

    def read(xml_path: Path) -> tuple[list[Sample], list[tuple[str, str]], Counter]:
        skipped: Counter = Counter()
        try:
            filename, objects = parse_voc(xml_path)
        except DataError as e:
            return [], [(str(xml_path), _reason(e))], skipped
        image_path = images_dir / filename
        try:
            data = image_path.read_bytes()
            image = decode_image(data, str(image_path))
        except (ImageReadError, OSError) as e:
            return [], [(str(image_path), _reason(e))], skipped
        h, w = image.shape[:2]
        samples = []
        for label, box in objects:
            if label not in wanted:
                skipped[f"class {label} not trained"] += 1
                continue
            if box[3] - box[1] < min_size:
                skipped[f"face under {min_size} px"] += 1
                continue
            grown = expand_box(box, margin, w, h)
            if grown is None:
                skipped["box outside the image"] += 1
                continue
            face = crop(image, grown)
            fh, fhm = dhash(face)
            digest = hashlib.sha256(data + repr(grown).encode()).hexdigest()
            samples.append(
                Sample(image_path, label, grown, filename, sha256=digest, dhash=fh, dhash_mirror=fhm)
            )
        return samples, [], skipped

    result = ScanResult(samples=[])
    scans = _map_threads(
        read, xmls, workers=workers, desc=f"scan {root.name}", unit="scene", progress=progress
    )
    for samples, skipped, counts in scans:
        result.samples.extend(samples)
        result.skipped.extend(skipped)
        result.voc_skipped.update(counts)
    return result


def load_example(sample: Sample, size: int) -> np.ndarray:
    """The model input for one sample: decode, crop if a scene, preprocess as on the device."""
    from maskgate.edge.core.imageio import read_image

    image = read_image(sample.path)
    if sample.box is not None:
        image = crop(image, sample.box)
    return prepare_face(image, size)


def merge(*results: ScanResult) -> ScanResult:
    merged = ScanResult(samples=[])
    for r in results:
        merged.samples.extend(r.samples)
        merged.skipped.extend(r.skipped)
        merged.voc_skipped.update(r.voc_skipped)
        merged.ignored_classes.extend(r.ignored_classes)
    return merged


def drop_label_conflicts(result: ScanResult) -> ScanResult:
    """Drop files whose exact bytes appear under two classes, and report them.

    Such a file cannot be right in both places, and kept it would sit on two
    sides of the split with contradictory labels.
    """
    labels: dict[str, set[str]] = {}
    for s in result.samples:
        if s.box is None:
            labels.setdefault(s.sha256, set()).add(s.label)
    bad = {h for h, ls in labels.items() if len(ls) > 1}
    if not bad:
        return result
    kept = [s for s in result.samples if s.box is not None or s.sha256 not in bad]
    dropped = [
        (str(s.path), f"same bytes also filed under {' and '.join(sorted(labels[s.sha256] - {s.label}))}")
        for s in result.samples
        if s.box is None and s.sha256 in bad
    ]
    return ScanResult(kept, result.skipped + dropped, result.voc_skipped, result.ignored_classes)


def family_of(sample: Sample, pattern: re.Pattern[str] | None) -> str | None:
    """Family key for pre-augmented copies that no hash can tie to their source photo."""
    if pattern is None or sample.box is not None:
        return None
    m = pattern.search(sample.path.name)
    return f"{sample.label}/{m.group(0)}" if m else None
