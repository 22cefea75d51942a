"""VOC scenes as a segmenter sees them: whole images, face masks drawn from their boxes, split by scene.

Every scene is read once, stretched to the model's input by the device's own
``prepare_scene`` and given a mask drawn from its VOC boxes (all three
classes are faces) by ``boxes_to_mask``, the geometry the device inverts.
Scenes, not faces, are split (seeded): every face of a scene is on one side.
Conversion reads the split back (``read_split_scenes``) to calibrate on the
training scenes and verify on the test scenes, so both sides live here,
without TensorFlow.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskgate.edge.core import scene_split, splits
from maskgate.edge.core.errors import DataError, MaskgateError
from maskgate.edge.core.imageio import read_image
from maskgate.edge.core.preprocess import prepare_scene
from maskgate.edge.core.splits import SPLITS, Entry
from maskgate.edge.core.sysinfo import resolve_threads
from maskgate.edge.core.voc import annotation_files, parse_voc
from maskgate.edge.detectors.unet import boxes_to_mask

KIND = "scenes"  # the manifest's kind: rows are scenes (one per face), not face crops
ROOT = "voc"  # the manifest's one data root


@dataclass
class Scene:
    path: Path  # the image
    boxes: list[tuple[str, tuple[int, int, int, int]]]  # (VOC class, box in frame pixels)
    width: int = 0
    height: int = 0


def list_scenes(voc: Path) -> tuple[list[Scene], list[tuple[str, str]]]:
    """The annotated scenes of a VOC folder, with their images found; unusable ones skipped with a reason."""
    voc = Path(voc)
    if not voc.is_dir():
        raise DataError(f"--voc {voc} is not a directory")
    images = voc / "images"
    if not images.is_dir():
        raise DataError(f"VOC directory {voc} must contain images/ ({images} is missing)")
    scenes, skipped = [], []
    for xml in annotation_files(voc):
        try:
            filename, objects = parse_voc(xml)
        except DataError as e:
            skipped.append((xml.name, str(e)))
            continue
        path = images / filename
        if not path.is_file():
            skipped.append((xml.name, f"its image {filename} is not in images/"))
            continue
        scenes.append(Scene(path, objects))
    if not scenes:
        raise DataError(f"VOC directory {voc}: no annotated scene with its image")
    return scenes, skipped


def load_scenes(
    scenes: list[Scene], size: int, *, workers: int = 0
) -> tuple[list[Scene], np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """Decode and prepare every scene once (threads: OpenCV releases the GIL); unreadable ones skipped."""

    def load(scene: Scene):
        try:
            image = read_image(scene.path)
        except MaskgateError as e:
            return scene, None, str(e)
        scene.height, scene.width = image.shape[:2]
        mask = boxes_to_mask([b for _, b in scene.boxes], scene.width, scene.height, size)
        return scene, (prepare_scene(image, size), mask), None

    with ThreadPoolExecutor(resolve_threads(workers)) as pool:
        results = list(pool.map(load, scenes))
    kept = [(s, r) for s, r, _ in results if r is not None]
    skipped = [(s.path.name, err) for s, r, err in results if r is None]
    if not kept:
        raise DataError(f"none of {len(scenes)} scene image(s) could be read (e.g. {skipped[0][1]})")
    return (
        [s for s, _ in kept],
        np.stack([r[0] for _, r in kept]),
        np.stack([r[1] for _, r in kept]),
        skipped,
    )


def split_scenes(n: int, *, val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """Split name per scene: a seeded permutation dealt to test, val, then train; each gets one at least."""
    if n < 3:
        raise DataError(f"{n} scene(s); a train/val/test split needs at least 3")
    n_test = min(n - 2, max(1, round(n * test_fraction)))
    n_val = min(n - 1 - n_test, max(1, round(n * val_fraction)))
    assignment = ["train"] * n
    order = np.random.default_rng(seed).permutation(n)
    for k, i in enumerate(order):
        if k < n_test:
            assignment[i] = "test"
        elif k < n_test + n_val:
            assignment[i] = "val"
    return assignment


# How split_by_side deals scenes, in split.json's words.
SIDE_METHOD = (
    f"scene split (edge.core.scene_split): test = the '{scene_split.REPORT}' side; train and val = the "
    f"'{scene_split.TUNE}' side, dealt by a seeded permutation"
)


def split_by_side(names: list[str], *, val_fraction: float, seed: int) -> list[str]:
    """Split name per scene under the project's scene split (``edge.core.scene_split``).

    Scenes on the ``report`` side are the test split; those on the ``tune`` side
    are dealt by a seeded permutation to validation (``val_fraction`` of them,
    one at least) and training, so nothing a reported figure is measured on is
    trained or validated on.
    """
    tune = [i for i, name in enumerate(names) if scene_split.side(name) == scene_split.TUNE]
    n_report = len(names) - len(tune)
    if len(tune) < 2 or not n_report:
        raise DataError(
            f"{len(tune)} scene(s) on the '{scene_split.TUNE}' side and {n_report} on the "
            f"'{scene_split.REPORT}' side; --scene-split needs at least 2 and 1"
        )
    n_val = min(len(tune) - 1, max(1, round(len(tune) * val_fraction)))
    assignment = ["test"] * len(names)
    for k, j in enumerate(np.random.default_rng(seed).permutation(len(tune))):
        assignment[tune[j]] = "val" if k < n_val else "train"
    return assignment


def write_manifest(
    path: Path,
    scenes: list[Scene],
    assignment: list[str],
    *,
    voc: Path,
    seed: int,
    method: str | None = None,
) -> None:
    """The split in the manifest format of classifier runs (``edge.core.splits``): one row per face.

    Rows carry every box of a scene, so conversion rebuilds test masks from the
    manifest, and ``maskgate score --exclude-seen RUN`` leaves out the scenes
    this run trained or validated on. A scene without faces gets one row with no box.
    """
    entries = []
    for group, (scene, split) in enumerate(zip(scenes, assignment, strict=True)):
        rel = scene.path.relative_to(voc).as_posix()
        size = (scene.width, scene.height)
        for label, box in scene.boxes or [("none", None)]:
            entries.append(Entry(rel, ROOT, label, split, box=box, group=group, size=size))
    counts = {
        s: {
            "scenes": assignment.count(s),
            "faces": sum(len(sc.boxes) for sc, a in zip(scenes, assignment, strict=True) if a == s),
        }
        for s in SPLITS
    }
    splits.write_manifest(
        path, entries, roots={ROOT: voc}, seed=seed, counts=counts, kind=KIND, method=method
    )


def read_split_scenes(path: Path, split: str, voc: Path | None = None) -> list[Scene]:
    """The scenes of one split of a segmenter run's manifest, boxes included (``voc`` overrides its root)."""
    if not Path(path).exists():
        raise DataError(f"split manifest {path} not found; is this a train-unet run?")
    manifest = splits.load_manifest(path)
    if voc is not None:
        root = Path(voc)
    elif ROOT in manifest.roots:
        root = manifest.roots[ROOT]
    else:
        raise DataError(f"split manifest {path} is unreadable: {KeyError(ROOT)!r}")
    by_path: dict[str, Scene] = {}
    try:
        for e in manifest.select(split, root=ROOT):
            scene = by_path.setdefault(e.path, Scene(root / e.path, []))
            if e.box:
                scene.boxes.append((e.label, tuple(int(v) for v in e.box)))
    except (ValueError, TypeError) as e:
        raise DataError(f"split manifest {path} is unreadable: {e!r}") from e
    if not root.is_dir():
        raise DataError(
            f"VOC folder {root} not found (the scenes of {path}); give --voc DIR where they are now"
        )
    if not by_path:
        raise DataError(f"split manifest {path} has no {split} scenes")
    return list(by_path.values())
