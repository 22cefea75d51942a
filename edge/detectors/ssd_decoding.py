"""SSD post-processing in numpy: prior boxes, box decoding, non-maximum suppression.

The int8 face detector (``ssd-int8``) runs only the network on LiteRT; turning
its head outputs into boxes happens here, with the semantics of Caffe's SSD
layers that OpenCV implements for the published model: ``PriorBox`` (min/max
sizes, aspect ratios with flip, fixed step and offset, variances),
``DetectionOutput`` with ``CENTER_SIZE`` coding, a confidence floor, ``top_k``
candidates into greedy NMS and ``keep_top_k`` kept. Everything is vectorised:
priors are computed once per input size and cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.geometry import nms
from ..core.metadata import SsdHead
from .base import SizeCache, softmax


@dataclass(frozen=True)
class Head:
    """One feature map's prior boxes, as the bundle's metadata records them."""

    min_sizes: tuple[float, ...]
    max_sizes: tuple[float, ...]
    aspect_ratios: tuple[float, ...]
    flip: bool
    clip: bool
    variances: tuple[float, ...]
    step: float
    offset: float

    @classmethod
    def from_spec(cls, spec: SsdHead) -> Head:
        """From a bundle's validated metadata."""
        return cls(
            tuple(spec.min_sizes),
            tuple(spec.max_sizes),
            tuple(spec.aspect_ratios),
            spec.flip,
            spec.clip,
            tuple(spec.variances),
            spec.step,
            spec.offset,
        )

    def box_sizes(self) -> list[tuple[float, float]]:
        """(width, height) of each anchor at a location, in Caffe's order."""
        ratios: list[float] = []
        for ar in self.aspect_ratios:
            for r in (ar, 1.0 / ar) if self.flip else (ar,):
                if abs(r - 1.0) > 1e-6 and all(abs(r - q) > 1e-6 for q in ratios):
                    ratios.append(r)
        sizes = []
        for i, s in enumerate(self.min_sizes):
            sizes.append((s, s))
            if i < len(self.max_sizes):
                m = float(np.sqrt(s * self.max_sizes[i]))
                sizes.append((m, m))
            sizes += [(s * float(np.sqrt(r)), s / float(np.sqrt(r))) for r in ratios]
        return sizes

    def priors(self, fh: int, fw: int, width: int, height: int) -> np.ndarray:
        """(fh*fw*A) x 8 rows: normalised x1, y1, x2, y2 and the four variances, row-major, anchor last."""
        step_w = self.step or width / fw
        step_h = self.step or height / fh
        cy, cx = np.meshgrid(
            (np.arange(fh) + self.offset) * step_h, (np.arange(fw) + self.offset) * step_w, indexing="ij"
        )
        wh = np.asarray(self.box_sizes(), np.float64)  # A x 2
        cx, cy = cx[..., None], cy[..., None]  # fh x fw x 1
        boxes = np.stack(
            [
                (cx - wh[:, 0] / 2) / width,
                (cy - wh[:, 1] / 2) / height,
                (cx + wh[:, 0] / 2) / width,
                (cy + wh[:, 1] / 2) / height,
            ],
            axis=-1,
        ).reshape(-1, 4)
        if self.clip:
            boxes = np.clip(boxes, 0.0, 1.0)
        variances = np.broadcast_to(np.asarray(self.variances, np.float64), (len(boxes), 4))
        return np.concatenate([boxes, variances], axis=1)


def decode(loc: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """CENTER_SIZE decoding of N x 4 offsets against N x 8 priors (box + variances) into x1, y1, x2, y2."""
    p = priors
    pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    pcx, pcy = (p[:, 0] + p[:, 2]) / 2, (p[:, 1] + p[:, 3]) / 2
    cx = p[:, 4] * loc[:, 0] * pw + pcx
    cy = p[:, 5] * loc[:, 1] * ph + pcy
    w = np.exp(p[:, 6] * loc[:, 2]) * pw
    h = np.exp(p[:, 7] * loc[:, 3]) * ph
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


@dataclass
class DetectionOutput:
    """What Caffe's DetectionOutput layer does for a one-class (face) SSD."""

    heads: Sequence[Head]
    nms_threshold: float = 0.45
    top_k: int = 400
    keep_top_k: int = 200
    confidence_threshold: float = 0.01

    def __post_init__(self) -> None:
        self._priors = SizeCache()

    def priors(self, shapes: Sequence[tuple[int, int]], width: int, height: int) -> np.ndarray:
        return self._priors.get(
            (tuple(shapes), width, height),
            lambda: np.concatenate(
                [h.priors(fh, fw, width, height) for h, (fh, fw) in zip(self.heads, shapes, strict=True)]
            ),
        )

    def __call__(
        self, locs: Sequence[np.ndarray], logits: Sequence[np.ndarray], width: int, height: int
    ) -> np.ndarray:
        """Rows of [score, x1, y1, x2, y2] (normalised), best first, from per-head NHWC outputs."""
        shapes = [(a.shape[1], a.shape[2]) for a in locs]
        loc = np.concatenate([a.reshape(-1, 4) for a in locs]).astype(np.float64)
        conf = softmax(np.concatenate([c.reshape(-1, 2) for c in logits]).astype(np.float64))[:, 1]
        candidates = np.nonzero(conf > self.confidence_threshold)[0]
        if not len(candidates):
            return np.zeros((0, 5))
        boxes = decode(loc[candidates], self.priors(shapes, width, height)[candidates])
        scores = conf[candidates]
        # Caffe: top_k and keep_top_k of -1 (or 0) mean no limit
        top_k = self.top_k if self.top_k > 0 else len(scores)
        keep = nms(boxes, scores, self.nms_threshold, top_k)
        keep = keep[: self.keep_top_k] if self.keep_top_k > 0 else keep
        return np.concatenate([scores[keep, None], boxes[keep]], axis=1)
