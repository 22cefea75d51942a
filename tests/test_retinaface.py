"""The retinaface-int8 detector: input geometry, the shipped bundle, landmarks, bundles it refuses."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import SHARED
from maskgate.edge.core.bundle import default_bundle_path, load_bundle, write_checksums
from maskgate.edge.core.errors import ModelFileError
from maskgate.edge.core.geometry import iou_matrix
from maskgate.edge.core.imageio import read_image
from maskgate.edge.core.metadata import DetectorMetadata
from maskgate.edge.core.preprocess import RETINAFACE_MEAN_BGR, prepare_retinaface, retinaface_geometry
from maskgate.edge.detectors.base import boxes_from_normalized
from maskgate.edge.detectors.config import DetectorConfig
from maskgate.edge.detectors.registry import make_detector
from maskgate.edge.detectors.retinaface import RetinaFaceDetector

SCENES = SHARED / "data" / "scenes" / "images"


@pytest.fixture(scope="module")
def rf_bundle():
    return load_bundle(default_bundle_path("retinaface"), kind="detector")


@pytest.mark.parametrize(
    "frame, input_size, expected",
    [
        ((400, 300), "frame", (1.0, (400, 300), (416, 320))),  # own size, padded to multiples of 32
        ((416, 320), "frame", (1.0, (416, 320), (416, 320))),  # already a multiple: no padding
        ((1920, 1080), "frame", (1 / 3, (640, 360), (640, 384))),  # a 1080p camera costs 640 px
        ((10, 7), "frame", (1.0, (10, 7), (32, 32))),
        ((400, 300), (320, 320), (0.8, (320, 240), (320, 320))),  # fixed: fit inside, aspect kept
    ],
)
@pytest.mark.arm64
def test_the_input_geometry(frame, input_size, expected):
    scale, scaled, padded = retinaface_geometry(*frame, input_size, 640)
    assert scale == pytest.approx(expected[0]) and (scaled, padded) == expected[1:]


@pytest.mark.arm64
def test_frames_are_padded_with_the_mean_colour_right_and_bottom():
    image = np.full((300, 400, 3), 7, np.uint8)
    x, scale = prepare_retinaface(image)
    assert x.shape == (320, 416, 3) and x.dtype == np.uint8 and scale == 1.0
    assert (x[:300, :400] == 7).all()  # the frame itself is untouched, at the top left
    assert (x[300:] == RETINAFACE_MEAN_BGR).all() and (x[:, 400:] == RETINAFACE_MEAN_BGR).all()


@pytest.mark.arm64
def test_landmarks_travel_with_their_box():
    rows = np.array([[0.9, 0.1, 0.1, 0.3, 0.5, *([0.2, 0.25] * 5)], [0.1, 0.5, 0.5, 0.6, 0.6, *([0.5] * 10)]])
    dets = boxes_from_normalized(rows, 200, 100, confidence=0.5, min_face_px=1)
    assert len(dets) == 1 and dets[0].box == (20, 10, 60, 50)
    assert dets[0].landmarks == ((40, 25),) * 5
    plain = boxes_from_normalized(rows[:, :5], 200, 100, confidence=0.5, min_face_px=1)
    assert plain[0].landmarks is None and plain[0].box == dets[0].box


@pytest.mark.arm64
def test_shipped_bundle_is_int8_small_verified_and_described(rf_bundle):
    meta = rf_bundle.metadata
    assert meta.network == "retinaface" and meta.input.size is None and meta.input.max_side == 640
    assert meta.input.size_multiple == 32 and meta.input.dtype == "uint8"
    total = sum(p.stat().st_size for p in rf_bundle.path.iterdir())
    assert total <= 4_000_000 and rf_bundle.float_model_path is not None
    v = meta.metrics.verification
    assert v["recall"] >= v["tolerance"] >= 0.9
    assert meta.retinaface.steps == [8, 16, 32] and sorted(meta.retinaface.outputs) == list(range(9))
    assert "WIDER FACE" in meta.source["origin"] and meta.source["rebuild_max_abs_diff"] < 1e-3


@pytest.mark.arm64
def test_the_default_configuration_runs_retinaface_on_the_frames_own_size(rf_bundle):
    det = make_detector(DetectorConfig(backend="retinaface-int8"))
    assert isinstance(det, RetinaFaceDetector) and det.input_size == "frame" and det.max_side == 640
    blank = np.full((300, 400, 3), 128, np.uint8)
    assert det.detect(blank) == []  # nothing in a grey frame, at any size
    assert det.detect(np.zeros((37, 53, 3), np.uint8)) == []


@pytest.mark.arm64
def test_a_fixed_input_size_must_fit_the_network(rf_bundle):
    with pytest.raises(ModelFileError, match="multiples of 32, or 'frame'"):
        RetinaFaceDetector(rf_bundle, input_size=(300, 300))
    assert (
        RetinaFaceDetector(rf_bundle, input_size=(320, 256)).detect(np.zeros((240, 320, 3), np.uint8)) == []
    )


@pytest.mark.arm64
def test_the_detectors_refuse_each_others_bundles(rf_bundle):
    ssd = load_bundle(default_bundle_path("detector"), kind="detector")
    with pytest.raises(ModelFileError, match="holds an ssd detector; detector.backend retinaface-int8 needs"):
        RetinaFaceDetector(ssd)
    from maskgate.edge.detectors.ssd import SsdInt8Detector

    with pytest.raises(ModelFileError, match="holds a retinaface detector; .* ssd-int8 needs an SSD bundle"):
        SsdInt8Detector(rf_bundle)
    with pytest.raises(ModelFileError, match="holds a detector; a classifier bundle is needed"):
        load_bundle(rf_bundle.path, kind="classifier")


def _edited(bundle, tmp_path, edit):
    b = tmp_path / "b"
    shutil.copytree(bundle.path, b)
    edit(b)
    return b


def _edit_metadata(change):
    def edit(b):
        meta = json.loads((b / "metadata.json").read_text())
        change(meta)
        (b / "metadata.json").write_text(json.dumps(meta))
        write_checksums(b)

    return edit


def _swap(order, i, j):
    order = list(order)
    order[i], order[j] = order[j], order[i]
    return order


@pytest.mark.arm64
def test_damaged_retinaface_bundles_are_rejected_in_one_line(rf_bundle, tmp_path):
    def flip_a_byte(b):
        data = bytearray((b / "model.tflite").read_bytes())
        data[2000] ^= 1
        (b / "model.tflite").write_bytes(bytes(data))

    ssd_spec = json.loads((default_bundle_path("detector") / "metadata.json").read_text())["ssd"]
    cases = [
        (flip_a_byte, "model.tflite is corrupt or was modified"),
        (_edit_metadata(lambda m: m["retinaface"].update(outputs=[0] * 9)), "outputs must order the 9"),
        (_edit_metadata(lambda m: m["retinaface"].update(steps=[8, 16])), "3 anchor size lists for 2 steps"),
        (_edit_metadata(lambda m: m.update(ssd=ssd_spec)), "exactly one network"),
        (_edit_metadata(lambda m: m["preprocessing"].update(padding="zeros")), "other preprocessing"),
        (
            _edit_metadata(lambda m: m["retinaface"].update(outputs=_swap(m["retinaface"]["outputs"], 0, 3))),
            "but the metadata makes it level 0's box offsets",
        ),  # loc0 and loc1 swapped: wrong anchors
        (_edit_metadata(lambda m: m["retinaface"]["min_sizes"].__setitem__(0, [16.0])), "level 0's"),
    ]
    for i, (edit, message) in enumerate(cases):
        with pytest.raises(ModelFileError, match=message) as e:
            load_bundle(_edited(rf_bundle, tmp_path / str(i), edit))
        assert "\n" not in str(e.value)


@pytest.mark.arm64
def test_metadata_names_exactly_one_network(rf_bundle):
    data = rf_bundle.metadata.model_dump(mode="json")
    with pytest.raises(ValueError, match="exactly one network"):
        DetectorMetadata.model_validate({k: v for k, v in data.items() if k != "retinaface"})


@pytest.fixture
def scenes():
    if not SCENES.is_dir():
        pytest.skip(f"shared scenes not found at {SCENES}")
    return [read_image(SCENES / f"maksssksksss{i}.jpg") for i in (0, 1, 2, 4)]


@pytest.mark.arm64
def test_int8_finds_the_float_models_faces_with_landmarks_inside_them(rf_bundle, scenes):
    int8 = RetinaFaceDetector(rf_bundle, confidence=0.5, threads=1)
    ref = RetinaFaceDetector(rf_bundle, confidence=0.5, threads=1, float_model=True)
    found = total = 0
    for image in scenes:
        want, got = ref.detect(image), int8.detect(image)
        total += len(want)
        if want and got:
            found += int((iou_matrix([d.box for d in want], [d.box for d in got]).max(axis=1) >= 0.5).sum())
        for d in got:
            x1, y1, x2, y2 = d.box
            assert len(d.landmarks) == 5
            assert all(x1 - 4 <= x <= x2 + 4 and y1 - 4 <= y <= y2 + 4 for x, y in d.landmarks)
            (rx, ry), (lx, ly) = d.landmarks[:2]
            assert rx < lx  # the right eye (the person's) is on the image's left
    assert total >= 8 and found / total >= 0.85
    big = np.ascontiguousarray(np.repeat(np.repeat(scenes[1], 3, axis=0), 3, axis=1))  # 1200 px wide
    faces = int8.detect(big)  # scaled down to 640 px, boxes back in the big frame's pixels
    small = int8.detect(scenes[1])
    assert faces and max(d.box[2] for d in faces) > max(d.box[2] for d in small) * 2


def test_each_input_size_is_planned_once_and_the_plans_are_bounded(rf_bundle, scenes, monkeypatch):
    from maskgate.edge.detectors import retinaface

    det = RetinaFaceDetector(rf_bundle, confidence=0.3)
    loads = []
    real = retinaface.load_interpreter
    monkeypatch.setattr(retinaface, "load_interpreter", lambda *a, **k: loads.append(a) or real(*a, **k))
    frames = [scenes[1], np.ascontiguousarray(scenes[1].transpose(1, 0, 2))]  # two input sizes
    first = [det.detect(f) for f in frames]
    assert all(first) and first[0] != first[1]  # faces in both, and not the same boxes
    for _ in range(3):  # back and forth between two sizes: planned once each, same faces each time
        assert [det.detect(f) for f in frames] == first
    assert len(loads) == 1  # the detector's own interpreter took the first size
    for side in range(64, 64 + 32 * (retinaface.PLANNED_SIZES + 2), 32):
        det.detect(np.zeros((side, 64, 3), np.uint8))
    assert len(det._planned._items) == retinaface.PLANNED_SIZES
    assert [det.detect(f) for f in frames] == first  # evicted sizes are planned again, alike
    fresh = RetinaFaceDetector(rf_bundle, confidence=0.3)
    assert [fresh.detect(f) for f in frames] == first
    det.close()
    with pytest.raises(ModelFileError, match="was closed"):
        det.detect(frames[0])


@pytest.mark.arm64
def test_the_configuration_refuses_what_the_backend_would_and_names_every_backends_score():
    from maskgate.edge.core.errors import ConfigError
    from maskgate.edge.detectors.config import BACKENDS, GATE_MIN_SCORE
    from maskgate.edge.gate.config import build

    assert set(GATE_MIN_SCORE) == set(BACKENDS)
    with pytest.raises(
        ConfigError, match="input_size .300, 300.: retinaface-int8 takes sides that are multiples of"
    ):
        build({"detector": {"input_size": [300, 300]}})
    assert build({"detector": {"backend": "ssd-int8", "input_size": [300, 300]}}).detector.input_size == (
        300,
        300,
    )
