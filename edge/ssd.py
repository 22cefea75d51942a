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

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SIZE_MULTIPLE = 4  # input sides the rebuilt network reproduces OpenCV's outputs at (Caffe's pooling rounding)
MEAN_BGR = (104.0, 177.0, 123.0)  # the published model's training mean, subtracted inside the int8 model


def describe_preprocessing() -> dict[str, Any]:
    """What a detector bundle records, so the device can check it prepares frames alike."""
    return {
        "color_order": "BGR",
        "input_range": [0, 255],
        "resize": "cv2.resize INTER_LINEAR to the input size (as cv2.dnn.blobFromImage)",
        "mean_inside_model": list(MEAN_BGR),
        "size_multiple": SIZE_MULTIPLE,
    }


def parse_sizes(value: Any) -> Any:
    """``"300x300,640x480"`` (a command line) as [(300, 300), (640, 480)]; other values pass through."""
    if not isinstance(value, str):
        return value
    try:
        return [tuple(int(v) for v in part.lower().split("x")) for part in value.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"expected sizes as WIDTHxHEIGHT[,WIDTHxHEIGHT...], got {value!r}") from None


def check_sizes(sizes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sizes the int8 detector takes as they are: no silent rounding between two backends' figures."""
    for w, h in sizes:
        if fit_size(w, h) != (w, h):
            raise ValueError(f"{w}x{h}: sides must be multiples of {SIZE_MULTIPLE}, at least 32")
    return sizes


def fit_size(width: int, height: int) -> tuple[int, int]:
    """The nearest input size the network takes (both sides multiples of 4, at least 32)."""
    return tuple(max(32, int(round(v / SIZE_MULTIPLE)) * SIZE_MULTIPLE) for v in (width, height))


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
    def from_dict(cls, d: dict[str, Any]) -> Head:
        return cls(
            tuple(d["min_sizes"]),
            tuple(d["max_sizes"]),
            tuple(d["aspect_ratios"]),
            bool(d["flip"]),
            bool(d["clip"]),
            tuple(d["variances"]),
            float(d["step"]),
            float(d["offset"]),
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


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, top_k: int) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression over the ``top_k`` best scores, best first."""
    order = np.argsort(-scores, kind="stable")[:top_k]
    boxes = boxes[order]
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep = []
    alive = np.ones(len(order), bool)
    for i in range(len(order)):
        if not alive[i]:
            continue
        keep.append(order[i])
        rest = np.nonzero(alive[i + 1 :])[0] + i + 1
        if not len(rest):
            break
        iw = np.clip(
            np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None
        )
        ih = np.clip(
            np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None
        )
        inter = iw * ih
        union = area[i] + area[rest] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
        alive[rest[iou > iou_threshold]] = False
    return np.asarray(keep, dtype=int)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class DetectionOutput:
    """What Caffe's DetectionOutput layer does for a one-class (face) SSD."""

    heads: Sequence[Head]
    nms_threshold: float = 0.45
    top_k: int = 400
    keep_top_k: int = 200
    confidence_threshold: float = 0.01

    PRIOR_CACHE = 4  # input sizes whose priors are kept: "frame" over photos of many sizes must not grow

    def __post_init__(self) -> None:
        self._priors: OrderedDict[tuple, np.ndarray] = OrderedDict()

    def priors(self, shapes: Sequence[tuple[int, int]], width: int, height: int) -> np.ndarray:
        key = (tuple(shapes), width, height)
        if key in self._priors:
            self._priors.move_to_end(key)
        else:
            self._priors[key] = np.concatenate(
                [h.priors(fh, fw, width, height) for h, (fh, fw) in zip(self.heads, shapes, strict=True)]
            )
            while len(self._priors) > self.PRIOR_CACHE:
                self._priors.popitem(last=False)
        return self._priors[key]

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
