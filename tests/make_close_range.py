"""Close-range frames for the benchmark: faces the classifier never saw, pasted large on a 640x480 background.

The shared scenes are crowds of small faces; a gate sees one or two people close to its camera. These
frames stand for that: face crops of ../shared/data/faces scaled to 140-260 px high and pasted, one or
two per frame, on a smooth random background, with a Pascal VOC annotation per frame (the pasted
rectangle is the face's box, the class folder its label), so `maskgate bench --voc` and `maskgate score`
run on them as on the scenes.

Which faces: only the **test split** of the shipped classifier's training run, neither trained on nor
used to choose its threshold. That split is not shipped with the bundle, but it is a pure function of
the data and `maskgate train`'s split settings (defaults, seed 1337); it is recomputed here
(`train.run.prepare_data`, no TensorFlow) and checked against the dataset digest the bundle records
(`source.dataset_content_hash` in models/classifier/metadata.json), so a different data folder or split
is refused rather than silently leaking training faces in. Of the test split, only tight face crops are
used: longer side under 300 px and aspect ratio (width / height) 0.6-1.6 (the dataset's larger images
are portraits with shoulders, groups and scenes, whose face is not the whole picture and so would have
no right box). Every choice after that (order, sizes, places, background) comes from `--seed`.

    python tests/make_close_range.py --faces ../shared/data/faces --out runs/close-range   # seed 18
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from xml.sax.saxutils import escape

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 640, 480
FACE_PX = (140, 260)  # pasted face height
MAX_SIDE = 300  # longer side of a crop that is a face, not a portrait or a scene
ASPECT = (0.6, 1.6)
TWO_FACES = 0.35  # share of frames with two people


def classifier_test_faces(faces: Path, bundle: Path) -> list[tuple[Path, str]]:
    """(path, label) of the classifier's test-split images, after checking the split is its run's."""
    from maskgate.train.config import TrainConfig
    from maskgate.train.dataset import content_hash
    from maskgate.train.run import prepare_data

    meta = json.loads((bundle / "metadata.json").read_text())
    size = meta["input"]["size"][0]
    data = prepare_data(TrainConfig(data=faces, out=Path("unused"), input_size=size), progress=False)
    found, recorded = content_hash(data.samples, data.roots), meta["source"]["dataset_content_hash"]
    if found != recorded:
        sys.exit(
            f"make_close_range: {faces} is not the data {bundle.name} was trained on "
            f"(digest {found[:12]}, the bundle records {recorded[:12]}); its test split cannot be rebuilt"
        )
    return [(s.path, s.label) for s in data.part("test")]


def tight(image: np.ndarray) -> bool:
    h, w = image.shape[:2]
    return max(h, w) < MAX_SIDE and ASPECT[0] <= w / h <= ASPECT[1]


def background(rng: np.random.Generator) -> np.ndarray:
    """A smooth random colour field with a little grain: no face, no edge a detector could take for one."""
    base = rng.integers(60, 196, 3)  # one muted colour per frame, a wall or a door, with gentle shading
    coarse = np.clip(base + rng.integers(-40, 41, (3, 4, 3)), 0, 255).astype(np.uint8)
    field = cv2.resize(coarse, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    grain = rng.normal(0, 6, (HEIGHT, WIDTH, 3)).astype(np.int16)
    return np.clip(field + grain, 0, 255).astype(np.uint8)


def place(rng: np.random.Generator, sizes: list[tuple[int, int]]) -> list[tuple[int, int]] | None:
    """Top-left corners for faces of (w, h) side by side without overlap, or None if they do not fit."""
    total = sum(w for w, _ in sizes)
    if total > WIDTH:
        return None
    gaps = rng.dirichlet(np.ones(len(sizes) + 1)) * (WIDTH - total)
    corners, x = [], 0.0
    for (w, h), gap in zip(sizes, gaps, strict=False):
        x += gap
        corners.append((int(x), int(rng.integers(0, HEIGHT - h + 1))))
        x += w
    return corners


def annotation(name: str, objects: list[tuple[str, tuple[int, int, int, int]]]) -> str:
    out = io.StringIO()
    out.write(f"<annotation>\n  <folder>images</folder>\n  <filename>{escape(name)}</filename>\n")
    out.write(f"  <size><width>{WIDTH}</width><height>{HEIGHT}</height><depth>3</depth></size>\n")
    for label, (x1, y1, x2, y2) in objects:
        out.write(
            f"  <object>\n    <name>{label}</name>\n    <difficult>0</difficult>\n"
            f"    <bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox>\n"
            "  </object>\n"
        )
    out.write("</annotation>\n")
    return out.getvalue()


def make(faces: Path, out: Path, *, seed: int, bundle: Path) -> dict:
    from maskgate.edge.core import atomic
    from maskgate.edge.core.imageio import read_image

    rng = np.random.default_rng(seed)
    candidates = []
    for path, label in classifier_test_faces(faces, bundle):
        try:
            image = read_image(path)
        except Exception:  # the loader's own skips: unreadable files are not faces to paste
            continue
        if tight(image):
            candidates.append((path, label, image))
    order = rng.permutation(len(candidates))
    rows, frames, i = [], 0, 0
    with atomic.staged_dir(out) as stage:
        (stage / "images").mkdir()
        (stage / "annotations").mkdir()
        while i < len(order):
            n = 2 if rng.random() < TWO_FACES and i + 1 < len(order) else 1
            chosen = [candidates[k] for k in order[i : i + n]]
            sizes = []
            for _, _, image in chosen:
                h = int(rng.integers(FACE_PX[0], FACE_PX[1] + 1))
                sizes.append((round(image.shape[1] * h / image.shape[0]), h))
            corners = place(rng, sizes)
            if corners is None:  # two wide faces: this frame takes the first alone
                chosen, sizes, n = chosen[:1], sizes[:1], 1
                corners = place(rng, sizes)
            frame = background(rng)
            name = f"close{frames:04d}.jpg"
            objects = []
            for (path, label, image), (w, h), (x, y) in zip(chosen, sizes, corners, strict=True):
                interp = cv2.INTER_AREA if h < image.shape[0] else cv2.INTER_CUBIC
                frame[y : y + h, x : x + w] = cv2.resize(image, (w, h), interpolation=interp)
                objects.append((label, (x, y, x + w, y + h)))
                rows.append({"frame": name, "source": path.relative_to(faces).as_posix(), "label": label,
                             "box": f"{x},{y},{x + w},{y + h}"})  # fmt: skip
            cv2.imwrite(str(stage / "images" / name), frame, [cv2.IMWRITE_JPEG_QUALITY, 92])
            (stage / "annotations" / f"close{frames:04d}.xml").write_text(annotation(name, objects))
            frames += 1
            i += n
        with open(stage / "sources.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["frame", "source", "label", "box"])
            writer.writeheader()
            writer.writerows(rows)
        labels = {c: sum(r["label"] == c for r in rows) for c in sorted({r["label"] for r in rows})}
        summary = {"frames": frames, "faces": len(rows), "labels": labels, "seed": seed,
                   "eligible_test_faces": len(candidates)}  # fmt: skip
        (stage / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--faces", type=Path, required=True, help="the faces dataset the classifier was trained on"
    )
    p.add_argument("--out", type=Path, required=True, help="VOC folder to create (images/, annotations/)")
    p.add_argument("--seed", type=int, default=18, help="seed of every choice after the split (18)")
    p.add_argument(
        "--bundle", type=Path, default=REPO / "models" / "classifier", help="the classifier bundle"
    )
    args = p.parse_args(argv)
    summary = make(args.faces, args.out, seed=args.seed, bundle=args.bundle)
    print(f"{summary['frames']} frames, {summary['faces']} faces {summary['labels']}, seed {args.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
