"""Class names and their canonical order, shared by every stage.

The order is fixed rather than alphabetical so that ``with_mask`` is always
index 0 whatever other classes a dataset adds; the gate decision, FAR and FRR
all hinge on knowing which index means "masked".
"""

from __future__ import annotations

from collections.abc import Iterable

MASKED = "with_mask"
UNMASKED = "without_mask"
INCORRECT = "mask_weared_incorrect"  # spelled as in the public VOC dataset

CANONICAL_ORDER: tuple[str, ...] = (MASKED, UNMASKED, INCORRECT)


def order_classes(names: Iterable[str]) -> list[str]:
    """Known classes in canonical order first, then any others alphabetically."""
    names = set(names)
    known = [n for n in CANONICAL_ORDER if n in names]
    return known + sorted(names - set(known))
