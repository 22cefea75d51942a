"""Boxes and labels drawn on frames, for ``detect --annotate`` and snapshots."""

from __future__ import annotations

import numpy as np

from ..core.labels import MASKED, UNMASKED

GREEN, RED, AMBER = (60, 180, 60), (40, 40, 220), (0, 170, 255)


def annotate(image: np.ndarray, faces, *, by_decision: bool = False) -> np.ndarray:
    """A copy of ``image`` with each face's box and ``label score`` drawn, and its landmarks as dots.

    Boxes are coloured by the likeliest class, or with ``by_decision`` by what the gate counts
    (``masked``: p(masked) at or above the threshold), as the live view shows them."""
    import cv2

    out = image.copy()
    thick = max(1, round(min(out.shape[:2]) / 300))
    for f in faces:
        masked = getattr(f, "masked", None) if by_decision else None
        if masked is not None:
            color = GREEN if masked else RED
        else:
            color = GREEN if f.label == MASKED else RED if f.label == UNMASKED else AMBER
        x1, y1, x2, y2 = f.box
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thick)
        for x, y in getattr(f, "landmarks", None) or ():
            cv2.circle(out, (int(x), int(y)), thick + 1, color, -1, cv2.LINE_AA)
        text = f"{f.label} {f.score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, thick)
        ty = y1 - 4 if y1 - th - base - 4 >= 0 else y2 + th + 4
        cv2.rectangle(out, (x1, ty - th - 2), (x1 + tw + 2, ty + base - 2), color, -1)
        cv2.putText(
            out,
            text,
            (x1 + 1, ty - 2),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4 * thick,
            (255, 255, 255),
            thick,
            cv2.LINE_AA,
        )
    return out
