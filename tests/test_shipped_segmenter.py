"""The segmenter bundle shipped in models/segmenter: it loads, it is the unet backend's default, and it
still says what it said.

Golden expectations (tests/golden_segmenter.json) were recorded from the shipped bundle through the
``unet`` detector of a default configuration (no ``detector.segmenter_bundle``): the face
probabilities (7 x 7 block means) of a generated scene, which needs no data, and the mean face
probability and face boxes of a few scenes of the
'report' side of the shared scenes (edge.core.scene_split), never trained or validated on. A changed
model, runtime or preprocessing shows up here as a changed mask or box. Regenerate after shipping a
new segmenter:

    python tests/test_shipped_segmenter.py --write
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np
import pytest

from maskgate.edge.core.bundle import default_bundle_path, load_bundle

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden_segmenter.json"
BUNDLE = default_bundle_path("segmenter")
PROB_TOLERANCE = 0.01  # mean face probability of a scene, across runtimes and CPUs
SCORE_TOLERANCE = 0.03  # a box's score (its region's mean probability)
BOX_IOU = 0.7  # a golden box is found again when a box overlaps it this much (a mask pixel is ~2 px)

pytestmark = pytest.mark.skipif(
    not (BUNDLE / "SHA256SUMS").is_file(), reason=f"no segmenter bundle shipped at {BUNDLE}"
)


def _scenes_root() -> Path:
    sys.path.insert(0, str(HERE))
    from conftest import SHARED

    return SHARED / "data" / "scenes"


def generated_scene() -> np.ndarray:
    """A 400x300 BGR scene, from seeds: two crude 160 px faces (conftest.face), masked and not, on grey.

    Crude faces of that size are what the shipped segmenter half-recognises (probabilities around
    0.5-0.7 on them, nothing on the grey), so the recorded map tests the model's response, not only
    an empty output.
    """
    sys.path.insert(0, str(HERE))
    from conftest import face

    rng = np.random.default_rng(7)
    scene = np.full((300, 400, 3), 110, np.uint8)
    for x, masked in ((20, True), (220, False)):
        scene[60:220, x : x + 160] = face(rng, masked, 160)
    return scene


def pooled(prob: np.ndarray, cells: int = 7) -> np.ndarray:
    """The face probability map averaged over cells x cells blocks: what the golden file keeps of it."""
    n = prob.shape[0] // cells
    return prob[: n * cells, : n * cells].reshape(cells, n, cells, n).mean(axis=(1, 3))


def default_unet():
    """The unet detector as a default configuration builds it: no segmenter_bundle given."""
    from maskgate.edge.detectors.config import DetectorConfig
    from maskgate.edge.detectors.registry import make_detector

    cfg = DetectorConfig(backend="unet")
    assert cfg.segmenter_bundle is None
    return make_detector(cfg)


def face_probabilities(det, image: np.ndarray) -> np.ndarray:
    from maskgate.edge.core.preprocess import prepare_scene

    return det.mask(prepare_scene(image, det.size))


def annotated_found(path: Path, boxes: list) -> int:
    """Annotated faces at least 32 px high that a box overlaps with IoU >= 0.4 (the scenes benchmark)."""
    from maskgate.edge.core.geometry import greedy_match, iou_matrix
    from maskgate.edge.core.voc import parse_voc

    _, truth = parse_voc(path.parent.parent / "annotations" / f"{path.stem}.xml")
    faces = [b for _, b in truth if b[3] - b[1] >= 32]
    return len(greedy_match(iou_matrix(faces, boxes), 0.4)) if faces and boxes else 0


@pytest.mark.arm64
def test_shipped_segmenter_loads_is_int8_and_was_verified_on_the_report_side():
    b = load_bundle(BUNDLE, kind="segmenter")
    assert b.classes == ["face"] and b.metadata.input.dtype == "uint8" and b.float_model_path is None
    assert b.metadata.input.quantization.scale == 1.0 and b.metadata.input.quantization.zero_point == 0
    assert b.model_path.stat().st_size <= 4_000_000
    v = b.metadata.metrics.verification
    assert v["scenes"] == 345  # the test split: every scene of the report side
    assert v["float_vs_truth"]["dice"] - v["int8_vs_truth"]["dice"] <= v["tolerance"] <= 0.02
    assert b.metadata.source["calibration"]["split"] == "train"


# Measured in `make check-arm64`: on aarch64 (ai-edge-litert 2.3 with XNNPACK, qemu's cortex-a72 and
# max alike) 5 of the 49 cells of the generated scene's map are up to 0.053 off, while the report
# scenes' means, boxes and scores agree within their tolerances. The int8 U-Net is this sensitive to
# its kernels on x86-64 too (LiteRT's builtin kernels differ from XNNPACK's by up to 0.08 in the same
# map), so the generated map's tolerance holds for one kernel set only. Strict: a change shows up.
ON_ARM64 = platform.machine() == "aarch64"


@pytest.mark.arm64
@pytest.mark.xfail(ON_ARM64, strict=True, reason="the int8 U-Net's map differs on aarch64 (see above)")
def test_the_default_unet_detector_runs_the_shipped_bundle_as_recorded():
    golden = json.loads(GOLDEN.read_text())
    det = default_unet()
    assert det.bundle.path == BUNDLE
    assert golden["model_sha256"] == hashlib.sha256(det.bundle.model_path.read_bytes()).hexdigest(), (
        "the shipped segmenter changed: regenerate the golden file (see this module's docstring)"
    )
    got = pooled(face_probabilities(det, generated_scene()))
    want = np.array(golden["generated"]["pooled_probability"])
    assert np.abs(got - want).max() <= 2 * PROB_TOLERANCE, np.round(got - want, 3)
    assert want.max() >= 0.2  # the recorded map holds a response, not just an empty mask


def test_the_default_unet_detector_finds_the_recorded_faces_on_report_scenes():
    from maskgate.edge.core.geometry import iou_matrix
    from maskgate.edge.core.imageio import read_image

    golden = json.loads(GOLDEN.read_text())
    root = _scenes_root()
    if not (root / "images").is_dir():
        pytest.skip(f"shared scenes not found at {root}")
    det = default_unet()
    found = 0
    for item in golden["scenes"]:
        path = root / item["path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == item["sha256"], f"{path} changed"
        image = read_image(path)
        mean = float(face_probabilities(det, image).mean())
        assert abs(mean - item["mean_probability"]) <= PROB_TOLERANCE, (item["path"], mean)
        dets = det.detect(image)
        assert len(dets) == len(item["faces"]), (item["path"], [d.box for d in dets])
        overlap = iou_matrix([f["box"] for f in item["faces"]], [d.box for d in dets])
        for k, want in enumerate(item["faces"]):
            j = int(overlap[k].argmax())
            assert overlap[k, j] >= BOX_IOU, (item["path"], want["box"], dets[j].box)
            assert abs(dets[j].score - want["score"]) <= SCORE_TOLERANCE, (item["path"], want, dets[j].score)
        found += annotated_found(path, [d.box for d in dets])
    assert found >= sum(item["annotated_found"] for item in golden["scenes"]) > 0


def test_detect_with_the_unet_backend_needs_no_bundle_setting(tmp_path):
    """The issue's command: `maskgate detect --detector unet` on a fresh clone, no --set."""
    import cv2

    from conftest import maskgate

    cv2.imwrite(str(tmp_path / "scene.png"), generated_scene())
    out = tmp_path / "faces.jsonl"
    r = maskgate("detect", "--detector", "unet", "--source", str(tmp_path / "scene.png"), "--jsonl", str(out))
    assert r.returncode == 0, r.stderr
    (line,) = out.read_text().splitlines()
    assert json.loads(line)["image"] == "scene.png"


def test_the_wheel_carries_the_segmenter_bundle_whole(tmp_path, wheel):
    """A Pi installs a wheel, not this checkout: the segmenter must load from what the wheel holds."""
    import zipfile

    zipfile.ZipFile(wheel.path).extractall(tmp_path / "unpacked")
    b = load_bundle(tmp_path / "unpacked" / "maskgate" / "models" / "segmenter", kind="segmenter")
    assert b.model_path.read_bytes() == (BUNDLE / "model.tflite").read_bytes()


def write_golden(count: int = 4) -> None:
    """Record the shipped segmenter's outputs: the generated scene, and ``count`` report-side scenes
    (seeded draw) on which the default unet detector finds at least one annotated face."""
    sys.path.insert(0, str(HERE.parent))
    from maskgate.edge.core.imageio import read_image
    from maskgate.edge.core.scene_split import REPORT, select

    det = default_unet()
    root = _scenes_root()
    names = select(sorted(p.name for p in (root / "images").glob("*.jpg")), REPORT)
    scenes = []
    for i in np.random.default_rng(0).permutation(len(names)):
        path = root / "images" / names[i]
        image = read_image(path)
        dets = det.detect(image)
        hits = annotated_found(path, [d.box for d in dets])
        if not hits:
            continue
        scenes.append(
            {
                "path": f"images/{names[i]}",
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "mean_probability": round(float(face_probabilities(det, image).mean()), 5),
                "faces": [{"box": list(d.box), "score": round(float(d.score), 4)} for d in dets],
                "annotated_found": hits,
            }
        )
        if len(scenes) == count:
            break
    doc = {
        "model_sha256": hashlib.sha256(det.bundle.model_path.read_bytes()).hexdigest(),
        "generated": {
            "pooled_probability": np.round(pooled(face_probabilities(det, generated_scene())), 4).tolist()
        },
        "scenes": scenes,
    }
    GOLDEN.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote the generated scene and {len(scenes)} report-side scenes to {GOLDEN}")


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    write_golden()
