"""AIZOO FaceMaskDetection's post-processing in numpy: anchors, box decoding, suppression.

The network (AIZOOTech/FaceMaskDetection, MIT, 2020) is a small SSD at 260x260 that
predicts, per anchor, a box offset and two sigmoid class scores (mask, no mask). Its
anchors, as its ``utils/anchor_generator.py`` lays them out: five feature maps of 33, 17,
9, 5 and 3 cells a side; at every cell, the map's two sizes at aspect ratio 1, then its
first size at ratios 0.62 and 0.42 (width ``s * sqrt(r)``, height ``s / sqrt(r)``: tall
boxes), four anchors per cell, cells row-major, anchors innermost. Offsets are SSD's
centre-size coding with variances 0.1 (centres) and 0.2 (sizes). Its inference keeps an
anchor whose better class score is above 0.5 and runs one class-agnostic NMS at IoU 0.4
over all of them, each box keeping its better class; so does this module
(``core.geometry.nms``). Coordinates are normalised to the input, which the network sees
stretched to 260x260, so they are normalised to the frame as well.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...core.geometry import nms


@dataclass(frozen=True)
class AnchorSpec:
    """The anchor layout the published model was trained with."""

    feature_maps: tuple[int, ...] = (33, 17, 9, 5, 3)
    sizes: tuple[tuple[float, float], ...] = (
        (0.04, 0.056),
        (0.08, 0.11),
        (0.16, 0.22),
        (0.32, 0.45),
        (0.64, 0.72),
    )
    ratios: tuple[float, ...] = (1.0, 0.62, 0.42)
    variances: tuple[float, float] = (0.1, 0.2)

    def shapes(self, level: int) -> np.ndarray:
        """A x 2 (width, height) of one map's anchors in their order: every size at the first
        ratio, then the first size at each other ratio."""
        sizes, (r0, *rest) = self.sizes[level], self.ratios
        pairs = [(s, r0) for s in sizes] + [(sizes[0], r) for r in rest]
        s, r = np.asarray(pairs, np.float64).T
        return np.stack([s * np.sqrt(r), s / np.sqrt(r)], axis=-1)

    def anchors(self) -> np.ndarray:
        """N x 4 anchors (centre x, centre y, width, height), normalised, in the network's order."""
        parts = []
        for level, f in enumerate(self.feature_maps):
            centres = (np.arange(f) + 0.5) / f
            cy, cx = np.meshgrid(centres, centres, indexing="ij")  # rows are y: row-major cells
            wh = self.shapes(level)
            a = len(wh)
            grid = np.concatenate(
                [
                    np.stack([np.repeat(cx[..., None], a, -1), np.repeat(cy[..., None], a, -1)], -1),
                    np.broadcast_to(wh, (f, f, a, 2)),
                ],
                axis=-1,
            )
            parts.append(grid.reshape(-1, 4))
        return np.concatenate(parts)


ANCHORS = AnchorSpec()


def decode(
    offsets: np.ndarray, anchors: np.ndarray, variances: tuple[float, float] = (0.1, 0.2)
) -> np.ndarray:
    """N x 4 boxes (x1, y1, x2, y2), normalised, from N x 4 offsets against N x 4 centre-size anchors."""
    d = np.asarray(offsets, np.float64)
    centre = anchors[:, :2] + d[:, :2] * variances[0] * anchors[:, 2:]
    size = anchors[:, 2:] * np.exp(d[:, 2:] * variances[1])
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)


@dataclass(frozen=True)
class Decoded:
    """The faces of one frame, best first: normalised boxes, the better class score, its class."""

    boxes: np.ndarray  # K x 4, x1, y1, x2, y2 in 0..1 of the frame (not clamped)
    scores: np.ndarray  # K, the better of the two sigmoid scores
    classes: np.ndarray  # K, 0 mask, 1 no mask (the model's order)
    class_scores: np.ndarray  # K x 2, both scores


class Postprocess:
    """Raw outputs to faces, with the published thresholds; the anchors are made once."""

    def __init__(self, spec: AnchorSpec = ANCHORS, *, confidence: float = 0.5, iou: float = 0.4) -> None:
        self.spec = spec
        self.anchors = spec.anchors()
        self.confidence = confidence
        self.iou = iou

    def __call__(self, offsets: np.ndarray, scores: np.ndarray) -> Decoded:
        """``offsets`` N x 4 and ``scores`` N x 2 (the batch axis already gone)."""
        offsets = np.asarray(offsets, np.float32).reshape(-1, 4)
        scores = np.asarray(scores, np.float32).reshape(-1, 2)
        if len(offsets) != len(self.anchors) or len(scores) != len(self.anchors):
            raise ValueError(
                f"expected {len(self.anchors)} anchors' outputs, "
                f"got {len(offsets)} boxes and {len(scores)} scores"
            )
        best = scores.max(axis=1)
        # Only anchors above the confidence are decoded: the rest can neither be reported nor
        # suppress one that is (the published code filters before its NMS too).
        alive = np.flatnonzero(best > self.confidence)
        boxes = decode(offsets[alive], self.anchors[alive], self.spec.variances)
        kept = nms(boxes, best[alive], self.iou, len(alive)) if len(alive) else np.zeros(0, int)
        keep = alive[kept]
        return Decoded(boxes[kept], best[keep], scores[keep].argmax(axis=1), scores[keep])
