"""A seeded, stratified train/val/test split that never splits one photo.

Copies of one photo on both sides of a split inflate test accuracy, and the
public face-mask data is full of them: byte-identical files, re-encodes and
pre-augmented flips. Examples are first joined into groups (same bytes, near
same difference hash, same scene, same augmentation family), then whole groups
are dealt to the splits, class by class, largest first, each to the split
furthest below its quota. A group of several classes (the faces of one scene)
is dealt with its rarest class and counted by its faces of that class.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskgate.edge.core import splits
from maskgate.edge.core.errors import DataError
from maskgate.edge.core.labels import order_classes
from maskgate.edge.core.splits import (
    SPLITS,
    Entry,
    read_manifest,  # noqa: F401 - part of this module's interface
)

from .dataset import Sample, family_of, locate


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _popcount64(x: np.ndarray) -> np.ndarray:
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(axis=-1)


def group_samples(
    samples: Sequence[Sample], *, near_duplicate_bits: int, family_pattern: str | None
) -> list[int]:
    """Group id per sample; samples sharing an id must share a split.

    Groups never cross classes: a masked and an unmasked picture of one
    person are different examples, not copies.
    """
    uf = _UnionFind(len(samples))
    pattern = re.compile(family_pattern) if family_pattern else None
    first: dict[tuple[str, ...], int] = {}
    for i, s in enumerate(samples):
        keys = [("sha", s.label, s.sha256)]
        if s.scene is not None:
            keys.append(("scene", s.scene))  # every face of a scene, whatever its class
        fam = family_of(s, pattern)
        if fam is not None:
            keys.append(("family", fam))
        for k in keys:
            if k in first:
                uf.union(first[k], i)
            else:
                first[k] = i

    if near_duplicate_bits > 0:
        by_class: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(samples):
            by_class[s.label].append(i)
        for idx in by_class.values():
            h = np.array([samples[i].dhash for i in idx], dtype=np.uint64)
            hm = np.array([samples[i].dhash_mirror for i in idx], dtype=np.uint64)
            for a in range(len(idx)):
                d = np.minimum(_popcount64(h[a + 1 :] ^ h[a]), _popcount64(hm[a + 1 :] ^ h[a]))
                for b in np.nonzero(d <= near_duplicate_bits)[0]:
                    uf.union(idx[a], idx[a + 1 + int(b)])
    return [uf.find(i) for i in range(len(samples))]


@dataclass(frozen=True)
class Split:
    assignment: list[str]  # split name per sample
    groups: list[int]

    def indices(self, name: str) -> list[int]:
        return [i for i, a in enumerate(self.assignment) if a == name]


def split_samples(
    samples: Sequence[Sample],
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    near_duplicate_bits: int = 5,
    family_pattern: str | None = None,
) -> Split:
    groups = group_samples(samples, near_duplicate_bits=near_duplicate_bits, family_pattern=family_pattern)
    fractions = {"train": 1.0 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
    rng = np.random.default_rng(seed)

    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    # A scene group can hold several classes; it is dealt with the rarest of them, and counted by its
    # faces of that class, so the few scenes that hold a rare class (mask_weared_incorrect: ~3 % of
    # VOC faces) share it out between the splits like any other class, instead of landing wherever
    # their many masked neighbours go.
    frequency = Counter(s.label for s in samples)
    group_class = {
        g: min({samples[i].label for i in m}, key=lambda c: (frequency[c], c)) for g, m in members.items()
    }
    size = {g: sum(samples[i].label == group_class[g] for i in m) for g, m in members.items()}

    assignment = [""] * len(samples)
    for cls in order_classes(set(group_class.values())):
        cls_groups = [g for g in members if group_class[g] == cls]
        if len(cls_groups) < 3:
            n = sum(size[g] for g in cls_groups)
            raise DataError(
                f"class '{cls}' has {n} image(s) in {len(cls_groups)} distinct photo group(s); "
                "a train/val/test split needs at least 3"
            )
        total = sum(size[g] for g in cls_groups)
        order = rng.permutation(len(cls_groups))
        cls_groups = sorted((cls_groups[i] for i in order), key=lambda g: -size[g])
        filled = dict.fromkeys(SPLITS, 0)
        # Every split gets at least one group before quotas decide.
        for name, g in zip(("val", "test"), sorted(cls_groups[-2:], key=lambda g: size[g]), strict=True):
            filled[name] += size[g]
            for i in members[g]:
                assignment[i] = name
        for g in cls_groups[:-2]:
            name = max(SPLITS, key=lambda s: fractions[s] * total - filled[s])
            filled[name] += size[g]
            for i in members[g]:
                assignment[i] = name
    return Split(assignment=assignment, groups=groups)


def split_counts(samples: Sequence[Sample], split: Split) -> dict[str, dict[str, int]]:
    classes = order_classes({s.label for s in samples})
    counts = {name: dict.fromkeys(classes, 0) for name in SPLITS}
    for s, a in zip(samples, split.assignment, strict=True):
        counts[a][s.label] += 1
    return counts


def write_manifest(
    path: Path, samples: Sequence[Sample], split: Split, *, roots: dict[str, Path], seed: int
) -> None:
    """The split as ``split.json``: enough to rebuild each split's examples from the data roots."""
    entries = []
    for s, a, g in zip(samples, split.assignment, split.groups, strict=True):
        root, rel = locate(s.path, roots)
        entries.append(
            Entry(path=rel, root=root, label=s.label, split=a, box=s.box, group=g, sha256=s.sha256)
        )
    splits.write_manifest(path, entries, roots=roots, seed=seed, counts=split_counts(samples, split))
