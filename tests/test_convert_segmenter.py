"""`maskgate convert segmenter`: a tiny run to an int8 bundle the device's unet backend runs, and refusals."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from conftest import assert_one_line_error, maskgate
from maskgate.edge.cli import main
from maskgate.edge.core.bundle import CHECKSUMS, default_bundle_path, load_bundle
from maskgate.edge.core.errors import ModelFileError
from maskgate.edge.core.preprocess import prepare_scene
from maskgate.edge.detectors.base import Detection
from maskgate.edge.detectors.config import DetectorConfig
from maskgate.edge.detectors.registry import make_detector

pytestmark = [pytest.mark.tf, pytest.mark.slow]  # all of it needs the tiny U-Net run (unet_run)


@pytest.fixture(scope="module")
def segmenter_bundle(unet_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "seg"
    args = ["-q", "convert", "segmenter", "--model", str(unet_run), "--out", str(out), "--samples", "8"]
    assert main([*args, "--latency-runs", "2", "--tolerance", "1.0"]) == 0
    return out


def test_the_bundle_is_int8_verified_and_runs_on_the_device(segmenter_bundle, unet_run):
    b = load_bundle(segmenter_bundle, kind="segmenter")
    meta = b.metadata.model_dump(mode="json")
    assert meta["input"]["dtype"] == "uint8" and meta["input"]["size"] == [64, 64]
    assert meta["input"]["quantization"] == {"scale": 1.0, "zero_point": 0}  # pixels go in untouched
    assert meta["output"]["dtype"] == "uint8"
    v = meta["metrics"]["verification"]
    assert v["scenes"] == 1 and {"float_vs_truth", "int8_vs_truth", "int8_vs_float"} <= set(v)
    assert 0.0 <= v["int8_vs_truth"]["dice"] <= 1.0 and v["probability_diff_max"] < 0.5
    assert {"model.tflite", "model_float32.tflite", "report.md", CHECKSUMS} <= {
        p.name for p in segmenter_bundle.iterdir()
    }

    det = make_detector(DetectorConfig(backend="unet", segmenter_bundle=segmenter_bundle, confidence=0.01))
    scene = cv2.imread(str(sorted((unet_run.parent / "voc" / "images").iterdir())[0]))
    x = prepare_scene(scene, 64)
    prob = det.mask(x)
    assert prob.shape == (64, 64) and prob.dtype == np.float32 and 0 <= prob.min() <= prob.max() <= 1
    # the mask the Keras model gives, within int8 steps
    import keras

    model = keras.models.load_model(unet_run / "model.keras", compile=False)
    keras_prob = model.predict(x[None].astype(np.float32), verbose=0)[0, ..., 0]
    assert np.abs(keras_prob - prob).mean() < 0.05
    dets = det.detect(scene)
    h, w = scene.shape[:2]
    assert all(isinstance(d, Detection) and 0 <= d.box[0] < d.box[2] <= w and d.box[3] <= h for d in dets)


def test_a_corrupt_segmenter_bundle_is_refused(segmenter_bundle, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(segmenter_bundle, bad)
    data = bytearray((bad / "model.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "model.tflite").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="model.tflite is corrupt or was modified"):
        make_detector(DetectorConfig(backend="unet", segmenter_bundle=bad))
    with pytest.raises(ModelFileError, match="a detector bundle is needed"):
        load_bundle(segmenter_bundle, kind="detector")  # kinds are not interchangeable
    # a classifier or SSD bundle given as the segmenter: refused by kind
    with pytest.raises(ModelFileError, match="holds a classifier; a segmenter bundle is needed"):
        make_detector(DetectorConfig(backend="unet", segmenter_bundle=default_bundle_path("classifier")))


def test_refusal_writes_nothing(unet_run, tmp_path, monkeypatch, capsys):
    import keras

    # a float model that calls every pixel face has a Dice above 0 on scenes with faces;
    # an int8 model that finds nothing (simulated) loses all of it
    run = tmp_path / "run"
    shutil.copytree(unet_run, run)
    model = keras.models.load_model(run / "model.keras", compile=False)
    logit = model.get_layer("logit")
    kernel, bias = logit.get_weights()
    logit.set_weights([kernel * 0, bias * 0 + 10])
    model.save(run / "model.keras")
    monkeypatch.setattr(
        "maskgate.edge.detectors.unet.UnetDetector.mask", lambda self, x: np.zeros((64, 64), np.float32)
    )
    out = tmp_path / "seg"
    r_code = main(["-q", "convert", "segmenter", "--model", str(run), "--out", str(out), "--no-float32",
                   "--samples", "8", "--latency-runs", "0"])  # fmt: skip
    assert r_code == 2 and not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "below float's" in err[0] and "no bundle written" in err[0], err
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_conversion_mistakes_are_one_line(unet_run, tmp_path):
    r = maskgate("convert", "segmenter", "--model", str(tmp_path / "none"), "--out", str(tmp_path / "b"))
    assert_one_line_error(r, "not found", "train-unet run")
    classifier_like = tmp_path / "clf"
    classifier_like.mkdir()
    (classifier_like / "model.keras").write_bytes(b"x")
    (classifier_like / "config.json").write_text(json.dumps({"input_size": 64}))
    r = maskgate("convert", "segmenter", "--model", str(classifier_like), "--out", str(tmp_path / "b"))
    assert_one_line_error(r, "not a segmenter run")
    r = maskgate("convert", "segmenter", "--model", str(unet_run), "--out", str(tmp_path / "b"), "--voc",
                 str(tmp_path / "moved"))  # fmt: skip
    assert_one_line_error(r, "moved not found", "--voc")
    damaged = tmp_path / "damaged"
    shutil.copytree(unet_run, damaged)
    (damaged / "model.keras").write_bytes((unet_run / "model.keras").read_bytes()[:5000])
    r = maskgate("convert", "segmenter", "--model", str(damaged), "--out", str(tmp_path / "b"))
    assert_one_line_error(r, "model.keras cannot be loaded")
    assert not (tmp_path / "b").exists()
