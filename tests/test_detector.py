"""Face detection: box post-processing by hand, and the real OpenCV SSD on real scenes."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SHARED
from maskgate.edge.core.errors import FetchError, ModelFileError
from maskgate.edge.core.imageio import read_image
from maskgate.edge.core.sizes import network_size
from maskgate.edge.core.voc import parse_voc
from maskgate.edge.detectors.base import boxes_from_normalized
from maskgate.edge.detectors.config import DetectorConfig
from maskgate.edge.detectors.registry import make_detector

SCENES = SHARED / "data" / "scenes"


@pytest.mark.arm64
def test_boxes_are_scaled_clamped_filtered_and_sorted():
    rows = np.array(
        [
            [0.60, 0.10, 0.10, 0.30, 0.50],  # 40 x 80 px: kept
            [0.90, -0.1, 0.50, 0.20, 1.20],  # spills over the frame: clamped to it
            [0.40, 0.50, 0.50, 0.70, 0.90],  # below the confidence
            [0.95, 0.50, 0.50, 0.50, 0.90],  # zero width: dropped
            [0.80, 0.50, 0.10, 0.55, 0.12],  # 4 px high: below min_face_px
            [0.99, 1.20, 1.20, 1.50, 1.50],  # entirely outside: degenerate after clamping
            [np.nan, 0.1, 0.1, 0.2, 0.2],  # garbage from the network
        ],
        np.float32,
    )
    dets = boxes_from_normalized(rows, 200, 200, confidence=0.5, min_face_px=10)
    assert [d.box for d in dets] == [(0, 100, 40, 200), (20, 20, 60, 100)]
    assert [round(d.score, 2) for d in dets] == [0.9, 0.6]
    assert boxes_from_normalized(np.zeros((0, 5)), 10, 10, confidence=0.5, min_face_px=1) == []


@pytest.mark.arm64
def test_network_size():
    assert network_size((300, 300), 640, 480) == (300, 300)
    assert network_size("frame", 640, 480) == (640, 480)


@pytest.mark.arm64
def test_detector_files_come_verified_from_the_fetch_step(monkeypatch):
    # no mirror and no network in the test environment: one clear line, not a cv2 crash
    monkeypatch.setattr("maskgate.edge.core.fetch.DOWNLOAD_TIMEOUT_S", 0.5)
    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(FetchError, match="deploy.prototxt: cannot download"):
        make_detector(DetectorConfig(backend="ssd-opencv"))


@pytest.mark.arm64
def test_a_corrupt_detector_file_is_refused(tmp_path):
    from maskgate.edge.detectors.ssd import SsdOpenCvDetector

    proto, weights = tmp_path / "deploy.prototxt", tmp_path / "w.caffemodel"
    proto.write_text("name: 'broken'\nlayer { nonsense")
    weights.write_bytes(b"\0" * 100)
    with pytest.raises(ModelFileError, match="w.caffemodel cannot be loaded"):
        SsdOpenCvDetector(proto, weights)


@pytest.fixture
def scene():
    xml = SCENES / "annotations" / "maksssksksss0.xml"
    if not xml.is_file():
        pytest.skip(f"shared scenes not found at {SCENES}")
    name, objects = parse_voc(xml)
    return read_image(SCENES / "images" / name), [b for _, b in objects]


def test_real_ssd_finds_annotated_faces(shared_models, monkeypatch, scene):
    from maskgate.edge.core.geometry import iou_matrix

    monkeypatch.setenv("MASKGATE_MIRROR", str(shared_models))
    image, truth = scene
    h, w = image.shape[:2]
    for size in [(300, 300), "frame"]:
        dets = make_detector(
            DetectorConfig(backend="ssd-opencv", input_size=size, confidence=0.3, threads=1)
        ).detect(image)
        assert dets, size
        for d in dets:
            x1, y1, x2, y2 = d.box
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and 0.3 <= d.score <= 1
        assert (
            iou_matrix([d.box for d in dets], truth).max(axis=1) >= 0.4
        ).mean() >= 0.5  # mostly real faces
