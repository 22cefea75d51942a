"""`maskgate crop-faces` on real scenes with OpenCV's SSD, a faceless image and a corrupt file.

The crops must be exactly the source pixels of the grown boxes, lie on annotated faces, be named
after their source and face rank, and be counted consistently in crops.csv, summary.json and the
printed table; a bad run leaves no output folder.
"""

from __future__ import annotations

import csv
import json
import re
import shutil

import cv2
import numpy as np
import pytest

from conftest import SHARED, assert_one_line_error, maskgate
from maskgate.edge.cli import main
from maskgate.edge.core.voc import parse_voc

SCENES = SHARED / "data" / "scenes"
SAMPLE = ["maksssksksss0.jpg", "maksssksksss1.jpg", "maksssksksss2.jpg"]
SSD = ["--detector", "ssd-opencv"]


@pytest.fixture
def photos(shared_models, tmp_path, monkeypatch):
    """Three real scenes, one image without a face and one corrupt file; the SSD from the mirror."""
    if not (SCENES / "images" / SAMPLE[0]).is_file():
        pytest.skip(f"shared scenes not found at {SCENES}")
    monkeypatch.setenv("MASKGATE_MIRROR", str(shared_models))
    d = tmp_path / "photos"
    d.mkdir()
    for name in SAMPLE:
        shutil.copy(SCENES / "images" / name, d / name)
    cv2.imwrite(str(d / "wall.png"), np.full((240, 320, 3), (90, 120, 150), np.uint8))
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return d


def _rows(out):
    with open(out / "crops.csv", newline="") as f:
        return list(csv.DictReader(f))


def _iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_classified_crops_are_the_source_pixels_sorted_by_class(photos, tmp_path, capsys):
    out = tmp_path / "crops"
    assert main(["-q", "crop-faces", "--source", str(photos), "--out", str(out), "--classify", *SSD]) == 0
    rows = _rows(out)
    summary = json.loads((out / "summary.json").read_text())
    assert {p.name for p in out.iterdir()} == {"with_mask", "without_mask", "crops.csv", "summary.json"}
    assert len(rows) == summary["faces_written"] >= 4
    assert sum(1 for _ in out.rglob("*.png")) == len(rows)
    for row in rows:
        source = photos / row["source"].rsplit("/", 1)[-1]
        stem, face = re.fullmatch(r"(\w+)/(\w+)_face(\d\d)\.png", row["crop"]).group(2, 3)
        assert source.stem == stem and int(face) == int(row["face"])  # the name leads back to its source
        assert row["crop"].split("/")[0] == row["label"] in ("with_mask", "without_mask")
        p = {c: float(row[f"p_{c}"]) for c in ("with_mask", "without_mask")}
        assert float(row["probability"]) == max(p.values()) == p[row["label"]]
        box = [int(row[k]) for k in ("x1", "y1", "x2", "y2")]
        grown = [int(row[k]) for k in ("crop_x1", "crop_y1", "crop_x2", "crop_y2")]
        assert box[3] - box[1] >= 32 and float(row["detection_score"]) >= 0.5
        assert grown[0] <= box[0] < box[2] <= grown[2] and grown[1] <= box[1] < box[3] <= grown[3]
        image = cv2.imread(str(source))
        crop = cv2.imread(str(out / row["crop"]))
        assert np.array_equal(crop, image[grown[1] : grown[3], grown[0] : grown[2]])  # lossless, exact
        truth = [b for _, b in parse_voc(SCENES / "annotations" / f"{source.stem}.xml")[1]]
        assert max(_iou(box, t) for t in truth) >= 0.4  # a real face, not a false positive
    assert summary["images"] == 5 and summary["images_read"] == 4
    assert summary["faces_per_image"]["0"] == 1 and summary["images_without_faces"][0].endswith("wall.png")
    assert sum(summary["faces_per_image"].values()) == 4
    assert summary["faces_found"] == len(rows) + sum(summary["faces_skipped"].values())
    assert summary["written_per_class"] == {
        c: sum(r["label"] == c for r in rows) for c in ("with_mask", "without_mask")
    }
    assert [u["image"].rsplit("/", 1)[-1] for u in summary["unreadable"]] == ["broken.jpg"]
    printed = capsys.readouterr().out
    assert f"faces written        {len(rows)} -> {out}/" in printed
    assert "1 image(s) with no face" in printed and "broken.jpg" in printed


def test_flat_crops_with_min_size_and_margin(photos, tmp_path, capsys):
    loose, strict = tmp_path / "loose", tmp_path / "strict"
    args = ["-q", "crop-faces", "--source", str(photos), *SSD, "--set", "detector.margin=0"]
    assert main([*args, "--out", str(loose), "--min-size", "1"]) == 0
    assert main([*args, "--out", str(strict), "--min-size", "45"]) == 0
    loose_rows, strict_rows = _rows(loose), _rows(strict)
    assert all("/" not in r["crop"] and r["label"] == "" for r in loose_rows)  # flat, unclassified
    heights = [int(r["y2"]) - int(r["y1"]) for r in loose_rows]
    assert all(
        [r[k] for k in ("x1", "y1", "x2", "y2")] == [r[f"crop_{k}"] for k in ("x1", "y1", "x2", "y2")]
        for r in loose_rows
    )  # fmt: skip - no margin: the crop is the box
    assert [r["crop"] for r in strict_rows] == [r["crop"] for r, h in zip(loose_rows, heights, strict=True)
                                                if h >= 45]  # fmt: skip
    small = sum(h < 45 for h in heights)
    assert small > 0 and json.loads((strict / "summary.json").read_text())["faces_skipped"] == {
        "below 45 px": small
    }
    assert f"{small} face(s) below 45 px" in capsys.readouterr().out


def test_bad_sources_and_options_are_one_line_and_leave_nothing(photos, tmp_path, capsys):
    corrupt_only = tmp_path / "corrupt"
    corrupt_only.mkdir()
    shutil.copy(photos / "broken.jpg", corrupt_only / "a.jpg")
    existing = tmp_path / "existing"
    existing.mkdir()
    cases = [
        (["--source", str(tmp_path / "nowhere")], "o1", "--source", "no such file or folder"),
        (["--source", str(tmp_path / "nowhere" / "*.jpg")], "o2", "--source", "no images found"),
        (["--source", str(corrupt_only)], "o3", "none of 1 file(s) is a readable image"),
        (["--source", str(photos), "--bundle", str(tmp_path)], "o4", "--bundle", "--classify"),
        (["--source", str(photos), "--classify", "--bundle", str(tmp_path)], "o5", "not a maskgate bundle"),
        (["--source", str(photos), "--set", "detector.margin=2"], "o6", "detector.margin"),
        (["--source", str(photos), "--detector", "yolo"], "o7", "detector.backend", "yolo"),
        (
            ["--source", str(photos), "--set", f"detector.bundle={tmp_path}"],
            "o8",
            "not a maskgate bundle",
        ),
        (["--source", str(photos)], "existing", "already exists"),
    ]
    for args, out, *fragments in cases:
        assert main(["-q", "crop-faces", *args, "--out", str(tmp_path / out)]) == 2, fragments
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and all(f in err[0] for f in fragments), (fragments, err)
        assert out == "existing" or not (tmp_path / out).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_a_failure_midway_leaves_no_output(photos, tmp_path, monkeypatch):
    from maskgate.edge.tools import crop_faces

    calls = []

    def fail_on_second(path, image):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt

    real = crop_faces._write_png
    monkeypatch.setattr(crop_faces, "_write_png", lambda p, im: (fail_on_second(p, im), real(p, im)))
    assert main(["-q", "crop-faces", "--source", str(photos), "--out", str(tmp_path / "o"), *SSD]) == 130
    assert len(calls) == 2 and not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_a_bad_source_from_the_command_line(tmp_path):
    r = maskgate("crop-faces", "--source", str(tmp_path / "none"), "--out", str(tmp_path / "o"))
    assert_one_line_error(r, "--source", "no such file or folder")
    assert not (tmp_path / "o").exists()
