"""The unet detector's geometry on the device: boxes to masks, masks to boxes, and its configuration."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_one_line_error, maskgate
from maskgate.edge.core.errors import ConfigError
from maskgate.edge.core.preprocess import prepare_scene
from maskgate.edge.detectors.config import DetectorConfig
from maskgate.edge.detectors.registry import make_detector
from maskgate.edge.detectors.unet import boxes_to_mask, mask_detections
from maskgate.edge.gate.config import build


def test_boxes_become_mask_pixels_in_the_stretched_geometry():
    # a 400x200 frame stretched to 8x8: one mask pixel is 50 px wide and 25 px high
    mask = boxes_to_mask([(100, 50, 200, 100)], 400, 200, 8)
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (2, 3, 2, 3)
    assert mask.dtype == np.uint8 and mask.sum() == 4


def test_a_scene_without_faces_has_an_empty_mask_and_no_detections():
    mask = boxes_to_mask([], 160, 120, 32)
    assert mask.shape == (32, 32) and not mask.any()
    assert mask_detections(mask.astype(np.float32), 160, 120, threshold=0.5, min_area=1) == []


def test_tiny_and_outside_boxes():
    # a face thinner than a mask pixel still leaves the pixel at its centre; a box off the frame adds nothing
    mask = boxes_to_mask([(101, 101, 103, 103), (500, 0, 600, 50)], 400, 400, 8)
    assert np.argwhere(mask).tolist() == [[2, 2]]


def test_components_become_frame_boxes_scored_by_mean_probability():
    prob = np.zeros((16, 16), np.float32)
    prob[2:6, 1:5] = 0.9  # 16 px blob
    prob[2:4, 3:5] = 0.7
    prob[10:14, 8:14] = 0.6  # 24 px blob, fainter
    prob[0, 15] = 0.99  # one-pixel speckle: below min_area
    prob[12, 2] = 0.4  # below the threshold
    dets = mask_detections(prob, 320, 160, threshold=0.5, min_area=4)
    assert [d.box for d in dets] == [(20, 20, 100, 60), (160, 100, 280, 140)]  # x by 20, y by 10
    assert dets[0].score == pytest.approx((12 * 0.9 + 4 * 0.7) / 16)
    assert dets[1].score == pytest.approx(0.6)
    # diagonal neighbours are one face (8-connectivity); min_face_px filters in frame pixels
    prob = np.zeros((8, 8), np.float32)
    prob[[1, 2], [1, 2]] = 1.0
    assert len(mask_detections(prob, 80, 80, threshold=0.5, min_area=1)) == 1
    assert mask_detections(prob, 80, 80, threshold=0.5, min_area=1, min_face_px=21) == []


def test_mask_and_boxes_are_inverse():
    boxes = [(40, 30, 88, 78), (200, 60, 260, 140)]
    mask = boxes_to_mask(boxes, 320, 240, 64)
    found = sorted(
        d.box for d in mask_detections(mask.astype(np.float32), 320, 240, threshold=0.5, min_area=1)
    )
    for got, want in zip(found, sorted(boxes), strict=True):
        assert max(abs(a - b) for a, b in zip(got, want, strict=True)) <= 5  # one mask pixel: 5 x 3.75 px


def test_prepare_scene_stretches_to_rgb():
    frame = np.zeros((120, 160, 3), np.uint8)
    frame[:, :80] = (255, 0, 0)  # left half blue in BGR
    x = prepare_scene(frame, 32)
    assert x.shape == (32, 32, 3) and x.dtype == np.uint8
    assert tuple(x[5, 2]) == (0, 0, 255) and tuple(x[5, 30]) == (0, 0, 0)  # RGB, halves kept


def test_unet_settings_are_validated():
    cfg = build({"detector": {"backend": "unet", "mask_threshold": 0.4, "min_component_px": 20}})
    assert cfg.detector.backend == "unet" and cfg.detector.segmenter_bundle is None
    with pytest.raises(ConfigError, match="detector.mask_threshold"):
        build({"detector": {"mask_threshold": 1.0}})
    with pytest.raises(ConfigError, match="detector.min_component_px"):
        build({"detector": {"min_component_px": 0}})


def test_unet_without_its_bundle_says_how_to_make_one(tmp_path, monkeypatch):
    """The shipped bundle is the default; an installation without it, or a wrong path, is one line."""
    from maskgate.edge.detectors import unet

    monkeypatch.setattr(unet, "default_bundle_path", lambda kind: tmp_path / "models" / kind)
    with pytest.raises(
        ConfigError, match="none is installed at .*segmenter: train one .*maskgate convert segmenter"
    ):
        make_detector(DetectorConfig(backend="unet"))
    image = tmp_path / "a.png"
    import cv2

    cv2.imwrite(str(image), np.zeros((40, 40, 3), np.uint8))
    r = maskgate(
        "detect", "--source", str(image), "--jsonl", str(tmp_path / "f.jsonl"), "--detector", "unet",
        "--set", f"detector.segmenter_bundle={tmp_path / 'nowhere'}",
    )  # fmt: skip
    assert_one_line_error(r, "nowhere not found")
    assert not (tmp_path / "f.jsonl").exists()
