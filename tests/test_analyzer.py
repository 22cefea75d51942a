"""The frame analyzer: detector boxes to labelled faces, with the shipped int8 classifier."""

from __future__ import annotations

import numpy as np
import pytest

from fakes import FixedDetector
from maskgate.edge.core.bundle import default_bundle_path, load_bundle
from maskgate.edge.detectors.base import Detection
from maskgate.edge.detectors.config import DetectorConfig
from maskgate.edge.gate.analyzer import FrameAnalyzer
from maskgate.edge.gate.config import ClassifierConfig, DecisionConfig

pytestmark = pytest.mark.arm64  # in `make check-arm64`'s subset (pyproject.toml)


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(default_bundle_path())


def frame() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)


def test_every_reported_face_is_classified_in_one_batch(bundle, monkeypatch):
    dets = [
        Detection((10, 10, 60, 70), 0.9),
        Detection((100, 20, 130, 50), 0.25),
        Detection((300, 200, 330, 240), 0.6),
    ]
    analyzer = FrameAnalyzer(FixedDetector(dets), bundle, margin=0.15)
    batches = []
    predict = analyzer.classifier.predict
    monkeypatch.setattr(
        analyzer.classifier, "predict", lambda faces: batches.append(len(faces)) or predict(faces)
    )
    result = analyzer.analyze(frame())
    assert batches == [3]  # all faces of the frame in one invocation
    assert [f.box for f in result.faces] == [d.box for d in dets]
    for f in result.faces:
        assert f.label in bundle.classes and 0.0 <= f.score <= 1.0 and 0.0 <= f.p_masked <= 1.0
        assert f.masked == (f.p_masked >= bundle.threshold)
    t = result.timings
    assert t.total == pytest.approx(t.detect + t.preprocess + t.classify) and t.classify > 0


def test_the_gate_never_classifies_faint_or_distant_faces(bundle, monkeypatch):
    dets = [
        Detection((10, 10, 60, 70), 0.9),
        Detection((100, 20, 160, 90), 0.3),
        Detection((200, 10, 220, 30), 0.95),
    ]
    analyzer = FrameAnalyzer(FixedDetector(dets), bundle, margin=0.15, min_score=0.5, min_height=40)
    analysis = analyzer.analyze(frame())
    assert [f.box for f in analysis.faces] == [(10, 10, 60, 70)]
    assert analysis.too_small == 1  # the distant face is counted (the kiosk asks it to step closer)
    empty = FrameAnalyzer(FixedDetector([Detection((0, 0, 0, 0), 0.9)]), bundle, margin=0.1).analyze(frame())
    assert empty.faces == []  # a degenerate box is dropped, not cropped


def test_from_config_takes_the_decision_filters_only_for_the_gate(monkeypatch):
    monkeypatch.setattr("maskgate.edge.gate.analyzer.make_detector", lambda cfg: FixedDetector([]))
    decision = DecisionConfig(min_face_px=55, min_detection_score=0.7)
    gate = FrameAnalyzer.from_config(DetectorConfig(), ClassifierConfig(), decision)
    batch = FrameAnalyzer.from_config(DetectorConfig(), ClassifierConfig())
    assert (gate.min_height, gate.min_score) == (55, 0.7) and (batch.min_height, batch.min_score) == (0, 0.0)
    assert gate.threshold == load_bundle(default_bundle_path()).threshold
    assert FrameAnalyzer.from_config(DetectorConfig(), ClassifierConfig(threshold=0.6)).threshold == 0.6
