"""`maskgate convert detector`: the Keras rebuild against OpenCV, a small conversion, refusal, mistakes."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import SHARED, assert_one_line_error, maskgate
from maskgate.edge.cli import main

SCENES = SHARED / "data" / "scenes" / "images"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    if not (SCENES / "maksssksksss0.jpg").is_file():
        pytest.skip(f"shared scenes not found at {SCENES}")
    d = tmp_path_factory.mktemp("scenes")
    for p in sorted(SCENES.glob("*.jpg"))[:24]:
        shutil.copy(p, d / p.name)
    return d


def convert_args(out, scenes, *, verify_images: int, latency_runs: int) -> list[str]:
    """A conversion small enough for the test suite: 8 calibration images, one input size."""
    return [
        "convert",
        "detector",
        "--out",
        str(out),
        "--representative",
        str(scenes),
        "--samples",
        "8",
        "--verify-images",
        str(verify_images),
        "--sizes",
        "300x300",
        "--latency-runs",
        str(latency_runs),
        "--no-float32",
    ]


@pytest.fixture
def ssd_files(shared_models, monkeypatch):
    monkeypatch.setenv("MASKGATE_MIRROR", str(shared_models))
    return shared_models / "deploy.prototxt", shared_models / "res10_300x300_ssd_iter_140000.caffemodel"


@pytest.mark.tf
def test_keras_rebuild_reproduces_opencvs_raw_outputs(ssd_files, scenes):
    from maskgate.convert.caffe import build_keras
    from maskgate.convert.detector import raw_difference
    from maskgate.edge.core.imageio import read_image
    from maskgate.edge.detectors.ssd import SsdOpenCvDetector

    model, names = build_keras(*ssd_files)
    unfolded, _ = build_keras(*ssd_files, fold=False)
    assert len(names) == 12 and len(model.layers) < len(unfolded.layers)  # BatchNorm/Scale folded away
    opencv = SsdOpenCvDetector(*ssd_files, threads=1)
    images = [read_image(p) for p in sorted(scenes.iterdir())[:2]]
    for m in (model, unfolded):
        assert raw_difference(m, opencv, images, names, [(300, 300), (400, 300)]) < 1e-3


@pytest.mark.tf
def test_a_small_conversion_gives_a_bundle_the_device_runs(ssd_files, scenes, tmp_path):
    from maskgate.edge.core.bundle import load_bundle
    from maskgate.edge.core.imageio import read_image
    from maskgate.edge.detectors.ssd import SsdInt8Detector, SsdOpenCvDetector

    out = tmp_path / "det"
    args = ["-q", *convert_args(out, scenes, verify_images=16, latency_runs=2), "--tolerance", "0.8"]
    assert main(args) == 0
    b = load_bundle(out, kind="detector")
    v = b.metadata.metrics.verification["300x300"]
    assert v["opencv_faces"] > 0 and v["recall"] >= 0.8 and v["score_correlation"] > 0.9
    assert b.metadata.input.dtype == "uint8" and len(b.metadata.ssd.outputs) == 12
    # each output feeds the head the metadata says: three heads share a shape, so compare values
    image = read_image(scenes / "maksssksksss0.jpg")
    opencv = SsdOpenCvDetector(*ssd_files, threads=1)
    names = [n for h in b.metadata.ssd.heads for n in (h.name, h.name.replace("_loc", "_conf"))]
    reference = [r.transpose(0, 2, 3, 1) for r in opencv.raw(image, outputs=names)]
    locs, logits, _ = SsdInt8Detector(b).raw(image)
    for ours, theirs in zip(
        [x for pair in zip(locs, logits, strict=True) for x in pair], reference, strict=True
    ):
        assert ours.shape == theirs.shape and np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.95
    faces = SsdInt8Detector(b).detect(image)
    assert faces and all(0 <= f.box[0] < f.box[2] for f in faces)
    assert "ssd-int8" in (out / "report.md").read_text()


@pytest.mark.tf
def test_too_few_faces_found_refuses_and_writes_nothing(ssd_files, scenes, tmp_path, monkeypatch, capsys):
    def poor(images, sizes, bundle, cfg, opencv):
        return {
            "300x300": {
                "images": 1,
                "opencv_faces": 10,
                "found": 5,
                "recall": 0.5,
                "score_correlation": 0.5,
                "found_within_margin": 5,
                "recall_within_margin": 0.5,
                "score_diff_mean": 0.2,
                "int8_only_boxes": 0,
            }
        }

    monkeypatch.setattr("maskgate.convert.detector.verify", poor)
    out = tmp_path / "det"
    args = convert_args(out, scenes, verify_images=10, latency_runs=0)
    assert main(args) == 2
    assert "finds 50.0 % of OpenCV's faces, below --tolerance 97.0 %" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == []  # no bundle, no staging folder


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--sizes", "301x300"], "--sizes: Value error, 301x300: sides must be multiples of 4"),
        (["--sizes", "big"], "--sizes: Value error, expected sizes as WIDTHxHEIGHT"),
        pytest.param(
            ["--representative", "no/such/dir"],
            "--representative no/such/dir is not a directory",
            marks=pytest.mark.tf,  # checked by the command, after it has imported TensorFlow
        ),
    ],
)
def test_convert_detector_mistakes_are_one_line(tmp_path, extra, message):
    r = maskgate("convert", "detector", "--out", str(tmp_path / "d"), *extra)
    assert_one_line_error(r, message.replace("Value error, ", ""))
    assert not (tmp_path / "d").exists()


def test_rows_of_the_verification_match_the_definition():
    from maskgate.edge.tools.scoring import match_scored

    ref = [((0, 0, 10, 10), 0.9), ((50, 50, 60, 60), 0.6)]
    got = [((1, 1, 10, 10), 0.85), ((100, 100, 110, 110), 0.7)]
    assert match_scored(ref, got) == (2, 1, [(0.9, 0.85)])
    assert match_scored(ref, got, iou=0.9)[1] == 0
