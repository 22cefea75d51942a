"""RetinaFace post-processing in numpy: anchors, box and landmark decoding, suppression.

RetinaFace-MobileNet0.25 (biubug6/Pytorch_Retinaface) is a single-shot multibox
detector: three feature maps (strides 8, 16, 32), two square anchors per cell
(16/32, 64/128 and 256/512 px), and per anchor a box offset, two class logits and
five landmark offsets. Only the network runs on LiteRT; turning its outputs into
faces happens here, with that repository's semantics: anchors row-major over the
cells, the anchor size innermost; offsets encoded against the anchor's centre and
size with variances 0.1 (centres, landmarks) and 0.2 (sizes); greedy NMS over the
best ``top_k`` candidates (``core.geometry.nms``). Everything is vectorised and the
anchors of a frame size are computed once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..core.geometry import nms
from .base import SizeCache, softmax


@dataclass(frozen=True)
class AnchorSpec:
    """The anchor layout of RetinaFace-MobileNet0.25 as trained (its ``cfg_mnet``)."""

    min_sizes: tuple[tuple[float, ...], ...] = ((16.0, 32.0), (64.0, 128.0), (256.0, 512.0))
    steps: tuple[int, ...] = (8, 16, 32)
    variances: tuple[float, float] = (0.1, 0.2)
    clip: bool = False

    def feature_shapes(self, width: int, height: int) -> list[tuple[int, int]]:
        """(rows, columns) of each feature map for an input of ``width`` x ``height``."""
        return [(math.ceil(height / s), math.ceil(width / s)) for s in self.steps]

    def anchors(self, width: int, height: int) -> np.ndarray:
        """N x 4 anchors (centre x, centre y, width, height), normalised to the input, in the network's
        output order: map by map, cells row-major, anchor sizes innermost."""
        parts = []
        maps = zip(self.feature_shapes(width, height), self.steps, self.min_sizes, strict=True)
        for (rows, cols), step, sizes in maps:
            ys, xs = (np.arange(rows) + 0.5) * step / height, (np.arange(cols) + 0.5) * step / width
            cy, cx = np.meshgrid(ys, xs, indexing="ij")
            a = len(sizes)
            sw = np.asarray(sizes, np.float64) / width
            sh = np.asarray(sizes, np.float64) / height
            grid = np.stack(
                [
                    np.repeat(cx[..., None], a, axis=-1),
                    np.repeat(cy[..., None], a, axis=-1),
                    np.broadcast_to(sw, (rows, cols, a)),
                    np.broadcast_to(sh, (rows, cols, a)),
                ],
                axis=-1,
            )
            parts.append(grid.reshape(-1, 4))
        out = np.concatenate(parts)
        return np.clip(out, 0.0, 1.0) if self.clip else out


def flatten_heads(heads: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The network's nine NHWC head outputs (loc0, conf0, landmarks0, loc1, ...) as N x 4 offsets,
    N x 2 logits and N x 10 landmark offsets in anchor order: level by level, cells row-major,
    anchors innermost (the ONNX model's own three outputs, before its softmax)."""
    loc, conf, marks = (
        np.concatenate([np.asarray(h).reshape(-1, k) for h in heads[j::3]]) for j, k in enumerate((4, 2, 10))
    )
    return loc, conf, marks


def decode_boxes(loc: np.ndarray, anchors: np.ndarray, variances: tuple[float, float]) -> np.ndarray:
    """N x 4 offsets against N x 4 anchors as normalised x1, y1, x2, y2."""
    centre = anchors[:, :2] + loc[:, :2] * variances[0] * anchors[:, 2:]
    size = anchors[:, 2:] * np.exp(loc[:, 2:] * variances[1])
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)


def decode_landmarks(pre: np.ndarray, anchors: np.ndarray, variances: tuple[float, float]) -> np.ndarray:
    """N x 10 landmark offsets (five x, y pairs) as normalised points: eyes, nose tip, mouth corners."""
    points = pre.reshape(-1, 5, 2) * variances[0] * anchors[:, None, 2:] + anchors[:, None, :2]
    return points.reshape(-1, 10)


@dataclass
class RetinaFaceOutput:
    """Network outputs to faces: rows of [score, x1, y1, x2, y2, 10 landmark coordinates], normalised,
    best first."""

    spec: AnchorSpec = AnchorSpec()
    nms_threshold: float = 0.4
    top_k: int = 5000
    keep_top_k: int = 750
    confidence_threshold: float = 0.02

    _anchors: SizeCache = field(default_factory=SizeCache, repr=False)

    def anchors(self, width: int, height: int) -> np.ndarray:
        return self._anchors.get((width, height), lambda: self.spec.anchors(width, height))

    def __call__(
        self, loc: np.ndarray, conf: np.ndarray, landmarks: np.ndarray, width: int, height: int, *,
        probabilities: bool = False,
    ) -> np.ndarray:  # fmt: skip
        """``loc`` N x 4, ``conf`` N x 2 (logits, or ``probabilities``), ``landmarks`` N x 10."""
        anchors = self.anchors(width, height)
        n = len(anchors)
        conf = np.asarray(conf, np.float64).reshape(n, -1)
        scores = (conf if probabilities else softmax(conf))[:, 1]
        keep = np.nonzero(scores > self.confidence_threshold)[0]
        if not len(keep):
            return np.zeros((0, 15))
        # only the candidates' offsets are decoded: a frame has thousands of anchors and a few faces
        loc = np.asarray(loc).reshape(n, -1)[keep].astype(np.float64)
        boxes = decode_boxes(loc, anchors[keep], self.spec.variances)
        order = nms(boxes, scores[keep], self.nms_threshold, self.top_k)[: self.keep_top_k]
        chosen = keep[order]
        marks = np.asarray(landmarks).reshape(n, -1)[chosen].astype(np.float64)
        points = decode_landmarks(marks, anchors[chosen], self.spec.variances)
        return np.concatenate([scores[chosen, None], boxes[order], points], axis=1)
