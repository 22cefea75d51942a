"""The AIZOO reference: its anchors and decoding against hand-computed boxes, the published model on a
real scene, `maskgate detect --reference aizoo` into `maskgate score`, and its files kept off the device.
"""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest

from conftest import SHARED, SHARED_MODELS, assert_one_line_error, maskgate
from maskgate.edge.core import fetch
from maskgate.edge.core.labels import MASKED, UNMASKED
from maskgate.edge.tools.peers.aizoo import PROTOTXT, WEIGHTS, AizooReference, faces_in_pixels
from maskgate.edge.tools.peers.aizoo_decoding import ANCHORS, Postprocess

SCENE = "maksssksksss0"  # three faces of both classes, each over 32 px high


def test_the_anchors_are_the_published_layout():
    a = ANCHORS.anchors()
    assert a.shape == (4 * (33**2 + 17**2 + 9**2 + 5**2 + 3**2), 4) == (5972, 4)
    c = 0.5 / 33
    # first cell of the 33-cell map: sizes 0.04 and 0.056 square, then 0.04 at ratios 0.62 and 0.42 (tall)
    np.testing.assert_allclose(
        a[:4],
        [
            [c, c, 0.04, 0.04],
            [c, c, 0.056, 0.056],
            [c, c, 0.04 * math.sqrt(0.62), 0.04 / math.sqrt(0.62)],
            [c, c, 0.04 * math.sqrt(0.42), 0.04 / math.sqrt(0.42)],
        ],
    )
    np.testing.assert_allclose(a[4, :2], [1.5 / 33, 0.5 / 33])  # cells row-major: x moves first
    np.testing.assert_allclose(a[33 * 4, :2], [0.5 / 33, 1.5 / 33])
    np.testing.assert_allclose(a[33 * 33 * 4], [0.5 / 17, 0.5 / 17, 0.08, 0.08])  # the 17-cell map starts
    np.testing.assert_allclose(a[-1], [2.5 / 3, 2.5 / 3, 0.64 * math.sqrt(0.42), 0.64 / math.sqrt(0.42)])


def _raw_outputs(**hot):
    """Offsets of zero and scores of 0.1 everywhere, but for ``hot``: anchor -> (offsets, scores)."""
    n = len(ANCHORS.anchors())
    offsets, scores = np.zeros((n, 4), np.float32), np.full((n, 2), 0.1, np.float32)
    for index, (d, p) in hot.items():
        offsets[int(index)], scores[int(index)] = d, p
    return offsets, scores


def test_decoded_boxes_match_hand_computed_ones():
    # 9-cell map (it starts after 4 * (33^2 + 17^2) anchors), centre cell (4, 4), first anchor:
    # centre (0.5, 0.5), 0.16 square. Offsets (2, -1, 5 ln 2, 0) with variances 0.1 / 0.2:
    # centre x 0.5 + 2 * 0.1 * 0.16 = 0.532, centre y 0.5 - 0.1 * 0.16 = 0.484, width 0.16 * 2 = 0.32,
    # height 0.16: box (0.372, 0.404, 0.692, 0.564), on 640 x 480 (238.08, 193.92, 442.88, 270.72).
    level2 = 4 * (33**2 + 17**2)
    centre = level2 + 4 * (4 * 9 + 4)
    corner = 0  # first anchor of the 33-cell map: centre (1/66, 1/66), 0.04 square, partly off the frame
    raw = _raw_outputs(**{
        str(centre): ((2.0, -1.0, 5 * math.log(2), 0.0), (0.1, 0.9)),  # no mask, 0.9
        # the same cell's second anchor (0.22 square at the centre) overlaps the first at IoU 0.55:
        # suppressed although it says "mask", as AIZOO's single-class NMS does
        str(centre + 1): ((0.0, 0.0, 0.0, 0.0), (0.8, 0.2)),
        str(corner): ((0.0, 0.0, 0.0, 0.0), (0.7, 0.3)),  # mask, 0.7, kept
        str(corner + 4 * 20): ((0.0, 0.0, 0.0, 0.0), (0.5, 0.2)),  # 0.5 is not above the threshold
    })  # fmt: skip
    found = Postprocess()(*raw)
    np.testing.assert_allclose(found.scores, [0.9, 0.7])
    np.testing.assert_array_equal(found.classes, [1, 0])
    np.testing.assert_allclose(found.boxes[0], [0.372, 0.404, 0.692, 0.564], atol=1e-6)
    c = 1 / 66
    np.testing.assert_allclose(found.boxes[1], [c - 0.02, c - 0.02, c + 0.02, c + 0.02], atol=1e-6)
    faces = faces_in_pixels(found, 640, 480)
    assert [(f.box, f.label) for f in faces] == [
        ((238, 194, 443, 271), UNMASKED),
        ((0, 0, 22, 17), MASKED),  # (-3.1, -2.3, 22.5, 16.9), clamped to the frame
    ]
    assert faces[0].detection_score == pytest.approx(0.9) and faces[0].p_masked == pytest.approx(0.1)
    assert faces[1].masked and not faces[0].masked


def test_without_confident_anchors_nothing_is_found_and_wrong_shapes_are_refused():
    assert faces_in_pixels(Postprocess()(*_raw_outputs()), 640, 480) == []
    with pytest.raises(ValueError, match="expected 5972 anchors' outputs"):
        Postprocess()(np.zeros((100, 4)), np.zeros((100, 2)))


def _aizoo_mirror():
    """The shared mirror when it holds AIZOO's files; a skip where there is no mirror at all. In CI a
    mirror without them fails: the reference would silently go unmeasured."""
    if not SHARED_MODELS.is_dir():
        pytest.skip(f"shared model mirror not found at {SHARED_MODELS}")
    missing = [n for n in (PROTOTXT, WEIGHTS) if not (SHARED_MODELS / n).is_file()]
    if missing:
        message = f"the mirror {SHARED_MODELS} lacks {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_MODELS


@pytest.fixture
def aizoo_mirror(monkeypatch):
    mirror = _aizoo_mirror()
    monkeypatch.setenv(fetch.MIRROR_ENV, str(mirror))
    return mirror


def test_the_published_model_finds_and_labels_a_real_scene(aizoo_mirror):
    import cv2

    from maskgate.edge.core.geometry import iou_matrix
    from maskgate.edge.core.voc import parse_voc

    image = cv2.imread(str(SHARED / "data" / "scenes" / "images" / f"{SCENE}.jpg"))
    _, truth = parse_voc(SHARED / "data" / "scenes" / "annotations" / f"{SCENE}.xml")
    peer = AizooReference.fetched(threads=1)  # through the fetch step: the manifest's digests
    analysis = peer.analyze(image)
    peer.close()
    faces = analysis.faces
    assert len(faces) == len(truth) == 3 and analysis.timings.detect > 0
    assert analysis.timings.classify == 0.0  # one pass: there is no classifier stage
    overlap = iou_matrix([b for _, b in truth], [f.box for f in faces])
    for i, (label, _) in enumerate(truth):
        j = int(overlap[i].argmax())
        assert overlap[i, j] >= 0.5 and faces[j].label == label and faces[j].score > 0.8


def test_detect_reference_writes_jsonl_that_score_reads(aizoo_mirror, tmp_path):
    voc = tmp_path / "voc"
    for part, suffix in (("images", "jpg"), ("annotations", "xml")):
        (voc / part).mkdir(parents=True)
        shutil.copy(SHARED / "data" / "scenes" / part / f"{SCENE}.{suffix}", voc / part)
    out = tmp_path / "aizoo.jsonl"
    env = {fetch.MIRROR_ENV: str(aizoo_mirror)}
    r = maskgate("detect", "--reference", "aizoo", "--source", str(voc / "images"), "--jsonl", str(out),
                 env_extra=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["image"] == f"{SCENE}.jpg" and {f["label"] for f in row["faces"]} == {MASKED, UNMASKED}
    r = maskgate("score", "--jsonl", str(out), "--voc", str(voc), "--json", str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr
    scored = json.loads((tmp_path / "s.json").read_text())
    assert (scored["faces"], scored["found"], scored["right"]) == (3, 3, 3)


def test_without_its_files_the_reference_is_one_line_saying_how_to_fetch_them(tmp_path):
    empty = tmp_path / "mirror"
    empty.mkdir()
    out = tmp_path / "o.jsonl"
    r = maskgate("detect", "--reference", "aizoo", "--source", str(tmp_path), "--jsonl", str(out),
                 env_extra={fetch.MIRROR_ENV: str(empty)})  # fmt: skip
    assert_one_line_error(
        r, "face_mask_detection.prototxt: not in mirror", "maskgate models fetch --for bench"
    )
    assert not out.exists()


def test_its_files_are_optional_bench_files_and_it_is_no_gate_detector():
    from pydantic import ValidationError

    from maskgate.edge.detectors.config import BACKENDS, DetectorConfig

    files = fetch.load_manifest()
    for name in (PROTOTXT, WEIGHTS):
        item = files[name]
        assert item.used_by == ("bench",) and item.optional and item.license.startswith("MIT")
        assert item.url.startswith("https://raw.githubusercontent.com/AIZOOTech/FaceMaskDetection/")
    assert not any("aizoo" in b for b in BACKENDS)
    with pytest.raises(ValidationError):
        DetectorConfig(backend="aizoo")


def test_models_fetch_for_bench_copies_exactly_its_files(capsys):
    from maskgate.edge.cli import main

    mirror = _aizoo_mirror()
    assert main(["models", "fetch", "--for", "bench", "--mirror", str(mirror)]) == 0
    copied = sorted(line.split(":")[0] for line in capsys.readouterr().out.splitlines())
    assert copied == sorted([PROTOTXT, WEIGHTS])
