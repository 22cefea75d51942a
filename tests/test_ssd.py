"""The int8 face detector: priors, decoding and NMS by hand; against OpenCV on real frames; its bundle."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import SHARED
from maskgate.edge.core.bundle import default_bundle_path, load_bundle, write_checksums
from maskgate.edge.core.errors import ModelFileError
from maskgate.edge.core.geometry import iou_matrix, nms
from maskgate.edge.core.imageio import read_image
from maskgate.edge.core.sizes import fit_size
from maskgate.edge.detectors.config import DetectorConfig
from maskgate.edge.detectors.registry import make_detector
from maskgate.edge.detectors.ssd import SsdInt8Detector
from maskgate.edge.detectors.ssd_decoding import DetectionOutput, Head, decode

SCENES = SHARED / "data" / "scenes" / "images"


def head(**kw) -> Head:
    base = dict(min_sizes=(30.0,), max_sizes=(60.0,), aspect_ratios=(2.0,), flip=True, clip=False,
                variances=(0.1, 0.1, 0.2, 0.2), step=8.0, offset=0.5)  # fmt: skip
    return Head(**(base | kw))


@pytest.mark.arm64
def test_anchor_sizes_follow_caffe_order():
    # min box, sqrt(min*max) box, then each aspect ratio and its flip
    sizes = head().box_sizes()
    s2 = np.sqrt(2.0)
    expected = [(30, 30), (np.sqrt(1800), np.sqrt(1800)), (30 * s2, 30 / s2), (30 / s2, 30 * s2)]
    assert np.asarray(sizes) == pytest.approx(np.asarray(expected))
    assert len(head(aspect_ratios=(2.0, 3.0)).box_sizes()) == 6
    assert np.asarray(head(flip=False, max_sizes=()).box_sizes()) == pytest.approx(
        np.array([[30, 30], [30 * s2, 30 / s2]])
    )


@pytest.mark.arm64
def test_priors_by_hand():
    p = head(max_sizes=(), aspect_ratios=()).priors(2, 3, width=24, height=16)  # one 30 px box per cell
    assert p.shape == (6, 8)
    # cell (row 1, column 2): centre (2.5 * 8, 1.5 * 8) = (20, 12) px
    assert p[5, :4] == pytest.approx([(20 - 15) / 24, (12 - 15) / 16, (20 + 15) / 24, (12 + 15) / 16])
    assert (p[:, 4:] == [0.1, 0.1, 0.2, 0.2]).all()
    assert head(max_sizes=(), aspect_ratios=(), clip=True).priors(2, 3, 24, 16)[:, :4].min() == 0.0


@pytest.mark.arm64
def test_center_size_decoding_by_hand():
    prior = np.array([[0.2, 0.2, 0.4, 0.6, 0.1, 0.1, 0.2, 0.2]])  # centre (0.3, 0.4), 0.2 x 0.4
    assert decode(np.zeros((1, 4)), prior) == pytest.approx(prior[:, :4])
    # shift right by 0.1 * 1.0 * 0.2 = 0.02, double the width: exp(0.2 * ln2 / 0.2)
    moved = decode(np.array([[1.0, 0.0, np.log(2) / 0.2, 0.0]]), prior)
    assert moved == pytest.approx(np.array([[0.32 - 0.2, 0.2, 0.32 + 0.2, 0.6]]))


@pytest.mark.arm64
def test_nms_on_synthetic_boxes():
    boxes = np.array(
        [[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9.5], [21, 21, 29, 29]], float
    )
    scores = np.array([0.9, 0.8, 0.7, 0.95, 0.3])
    assert nms(boxes, scores, 0.45, top_k=400).tolist() == [3, 2]  # 0 and 1 overlap 3; 4 lies inside 2
    assert nms(boxes, scores, 0.99, top_k=400).tolist() == [3, 0, 1, 2, 4]
    assert nms(boxes, scores, 0.45, top_k=2).tolist() == [3]  # only the two best are candidates
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.45, 10).tolist() == []


@pytest.mark.arm64
def test_input_sizes_fit_the_network():
    assert fit_size(300, 300) == (300, 300)
    assert fit_size(401, 267) == (400, 268)
    assert fit_size(10, 10) == (32, 32)


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(default_bundle_path("detector"), kind="detector")


@pytest.mark.arm64
def test_shipped_detector_bundle_is_int8_and_small(bundle):
    assert bundle.kind == "detector" and bundle.float_model_path is None
    assert bundle.model_path.stat().st_size <= 4_000_000
    assert all(
        r["recall"] >= 0.97 for k, r in bundle.metadata.metrics.verification.items() if isinstance(r, dict)
    )


@pytest.mark.arm64
def test_the_detectors_bundles_are_told_apart(bundle):
    with pytest.raises(ModelFileError, match="holds a detector; a classifier bundle is needed"):
        load_bundle(bundle.path, kind="classifier")


def _copy(bundle, tmp_path, edit):
    b = tmp_path / "b"
    shutil.copytree(bundle.path, b)
    edit(b)
    return b


@pytest.mark.arm64
def test_damaged_detector_bundles_are_rejected(bundle, tmp_path):
    def flip_a_byte(b):
        data = bytearray((b / "model.tflite").read_bytes())
        data[1000] ^= 1
        (b / "model.tflite").write_bytes(bytes(data))

    with pytest.raises(ModelFileError, match="model.tflite is corrupt or was modified"):
        load_bundle(_copy(bundle, tmp_path / "1", flip_a_byte))

    def no_priors(b):
        meta = json.loads((b / "metadata.json").read_text())
        del meta["ssd"]["heads"]
        (b / "metadata.json").write_text(json.dumps(meta))
        write_checksums(b)

    with pytest.raises(ModelFileError, match="lacks the SSD's prior boxes"):
        load_bundle(_copy(bundle, tmp_path / "2", no_priors))

    def bgr_to_rgb(b):
        meta = json.loads((b / "metadata.json").read_text())
        meta["preprocessing"]["color_order"] = "RGB"
        (b / "metadata.json").write_text(json.dumps(meta))
        write_checksums(b)

    with pytest.raises(ModelFileError, match="other preprocessing"):
        load_bundle(_copy(bundle, tmp_path / "3", bgr_to_rgb))


@pytest.fixture
def opencv_ssd(shared_models, monkeypatch):
    if not SCENES.is_dir():
        pytest.skip(f"shared scenes not found at {SCENES}")
    monkeypatch.setenv("MASKGATE_MIRROR", str(shared_models))
    return make_detector(DetectorConfig(backend="ssd-opencv", confidence=0.3))


def test_numpy_post_processing_matches_opencvs_detection_output(opencv_ssd, bundle):
    """OpenCV's own head outputs through our priors, decoding and NMS give OpenCV's detections."""
    spec = bundle.metadata.ssd
    post = DetectionOutput([Head.from_spec(h) for h in spec.heads], spec.nms_threshold, spec.top_k,
                           spec.keep_top_k, spec.confidence_threshold)  # fmt: skip
    names = [h.name for h in spec.heads]
    layers = [n for loc in names for n in (loc, loc.replace("_loc", "_conf"))]
    for name in ("maksssksksss0.jpg", "maksssksksss1.jpg", "maksssksksss2.jpg"):
        image = read_image(SCENES / name)
        for size in [(300, 300), (640, 480)]:
            opencv_ssd.input_size = size
            reference = opencv_ssd.raw(image)[:, 2:7]
            heads = [h.transpose(0, 2, 3, 1) for h in opencv_ssd.raw(image, outputs=layers)]
            ours = post(heads[0::2], heads[1::2], *size)
            ref = reference[reference[:, 0] > 0.05]
            assert ours[ours[:, 0] > 0.05] == pytest.approx(ref, abs=1e-5)


def test_int8_detector_finds_opencvs_faces(opencv_ssd, bundle):
    int8 = SsdInt8Detector(bundle, confidence=0.3, threads=1)
    found = total = 0
    for name in ("maksssksksss0.jpg", "maksssksksss1.jpg", "maksssksksss2.jpg", "maksssksksss4.jpg"):
        image = read_image(SCENES / name)
        ref, got = opencv_ssd.detect(image), int8.detect(image)
        total += len(ref)
        if ref and got:
            found += int((iou_matrix([d.box for d in ref], [d.box for d in got]).max(axis=1) >= 0.5).sum())
    assert total >= 5 and found / total >= 0.9
    odd = read_image(SCENES / "maksssksksss0.jpg")[:267, :401]  # a frame size that is no multiple of 4
    framed = SsdInt8Detector(bundle, input_size="frame", confidence=0.3).detect(odd)
    fitted = SsdInt8Detector(bundle, input_size=(400, 268), confidence=0.3).detect(odd)
    assert framed and framed == fitted  # "frame" runs at the nearest size the network takes
    assert all(0 <= d.box[0] < d.box[2] <= 401 and 0 <= d.box[1] < d.box[3] <= 267 for d in framed)
