"""One frame in, labelled faces out: detector, crops, classifier.

``detect`` and ``run`` both go through ``FrameAnalyzer``, so the faces a
batch run reports are the faces the gate decides on. All faces of a
frame are classified in one batched invocation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..core.bundle import Bundle, default_bundle_path, load_bundle
from ..core.geometry import Box, crop, expand_box
from ..core.labels import INCORRECT, MASKED
from ..core.preprocess import prepare_face
from ..core.sysinfo import resolve_threads
from ..detectors.base import FaceDetector
from ..detectors.config import DetectorConfig
from ..detectors.registry import make_detector
from .classifier import classifier_from_bundle
from .config import ClassifierConfig, DecisionConfig


@dataclass(frozen=True)
class Face:
    box: Box  # the detector's box in frame pixels (before the crop margin)
    detection_score: float
    label: str  # the likeliest class, as accuracy counts it
    score: float  # probability of ``label``
    p_masked: float  # p(with_mask), plus p(incorrect) where that counts as masked
    masked: bool  # what the gate counts: p_masked >= threshold, as FAR and FRR count it
    landmarks: tuple[tuple[int, int], ...] | None = None  # eyes, nose tip, mouth corners (RetinaFace)

    def as_json(self) -> dict:
        row = {
            "box": list(self.box),
            "label": self.label,
            "score": round(self.score, 4),
            "detection_score": round(self.detection_score, 4),
        }
        if self.landmarks is not None:
            row["landmarks"] = [list(p) for p in self.landmarks]
        return row


@dataclass
class Timings:
    """Milliseconds spent per stage on one frame."""

    detect: float = 0.0
    preprocess: float = 0.0
    classify: float = 0.0

    @property
    def total(self) -> float:
        return self.detect + self.preprocess + self.classify


@dataclass
class Analysis:
    faces: list[Face]
    timings: Timings = field(default_factory=Timings)
    too_small: int = 0  # confident detections lower than min_face_px: people too far to decide on


class FrameAnalyzer:
    """Detector plus classifier, loaded once; ``analyze`` is the per-frame hot path."""

    def __init__(
        self,
        detector: FaceDetector,
        bundle: Bundle,
        *,
        margin: float,
        threads: int = 0,
        threshold: float | None = None,
        incorrect_is_masked: bool = False,
        min_score: float = 0.0,
        min_height: int = 0,
        classifier=None,
    ) -> None:
        self.detector = detector
        # The gate decides only on sure, near faces: the rest is dropped before it costs a crop
        # and a classification (``detect`` keeps everything the detector reports).
        self.min_score = min_score
        self.min_height = min_height
        self.bundle = bundle
        # Any object with predict(N x S x S x 3 uint8) -> probabilities, input_size and close() will do:
        # the benchmark passes float and Keras classifiers this way.
        self.classifier = classifier or classifier_from_bundle(bundle, num_threads=resolve_threads(threads))
        self.classes = bundle.classes
        self.margin = margin
        self.threshold = bundle.threshold if threshold is None else threshold
        counted = [MASKED] + ([INCORRECT] if incorrect_is_masked and INCORRECT in self.classes else [])
        self._masked_idx = [self.classes.index(c) for c in counted]

    @classmethod
    def from_config(
        cls, detector: DetectorConfig, classifier: ClassifierConfig, decision: DecisionConfig | None = None
    ) -> FrameAnalyzer:
        """The analyzer a configuration describes; with ``decision``, only faces the gate decides on."""
        bundle = load_bundle(classifier.bundle or default_bundle_path(), kind="classifier")
        return cls(
            make_detector(detector),
            bundle,
            margin=detector.margin,
            threads=classifier.threads,
            threshold=classifier.threshold,
            incorrect_is_masked=classifier.incorrect_is_masked,
            min_score=(decision.min_detection_score or 0.0) if decision else 0.0,
            min_height=decision.min_face_px if decision else 0,
        )

    def analyze(self, image: np.ndarray) -> Analysis:
        t0 = time.perf_counter()
        detections = self.detector.detect(image)
        t1 = time.perf_counter()
        h, w = image.shape[:2]
        kept, crops, too_small = [], [], 0
        for d in detections:
            if d.score < self.min_score:
                continue
            if d.box[3] - d.box[1] < self.min_height:
                too_small += 1
                continue
            grown = expand_box(d.box, self.margin, w, h)
            if grown is not None:
                kept.append(d)
                crops.append(prepare_face(crop(image, grown), self.classifier.input_size))
        t2 = time.perf_counter()
        probs = self.classifier.predict(np.stack(crops)) if crops else np.zeros((0, len(self.classes)))
        t3 = time.perf_counter()
        faces = []
        for d, p in zip(kept, probs, strict=True):
            k = int(p.argmax())
            p_masked = float(p[self._masked_idx].sum())
            faces.append(
                Face(
                    d.box,
                    d.score,
                    self.classes[k],
                    float(p[k]),
                    p_masked,
                    p_masked >= self.threshold,
                    d.landmarks,
                )
            )
        ms = 1000.0
        return Analysis(faces, Timings((t1 - t0) * ms, (t2 - t1) * ms, (t3 - t2) * ms), too_small)

    def close(self) -> None:
        self.detector.close()
        self.classifier.close()
