"""Three classes end to end: VOC face crops with mask_weared_incorrect, a run, an int8 bundle, the gate.

The scenes are generated: each holds a masked, an unmasked and an
incorrectly masked face (mask below the mouth), 48 px high. The model is the
tiny 32-px MobileNetV2 of test_train, without its hidden dense layer; accuracy is
not asserted, only that every stage carries the third class through and reports it.
"""

import json

import cv2
import numpy as np
import pytest

from conftest import face, make_faces
from fakes import FixedDetector
from maskgate.edge.cli import main
from maskgate.edge.core.labels import INCORRECT, MASKED, UNMASKED
from maskgate.edge.gate.classifier import classifier_from_bundle

pytestmark = pytest.mark.tf

CLASSES = [MASKED, UNMASKED, INCORRECT]
# No hidden dense layer: a few ReLU units of an untrained model can all be dead on the calibration
# faces, and XNNPACK refuses to prepare an int8 layer whose every output is zero.
TINY = ["--input-size", "32", "--alpha", "0.35", "--weights", "none", "--batch-size", "8",
        "--dense-units", "0", "--workers", "2"]  # fmt: skip


def incorrect_face(rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """An unmasked face with the mask pulled down onto the chin."""
    img = face(rng, False, size)
    c = size // 2
    cv2.rectangle(img, (c - size // 4, c + size // 4), (c + size // 4, size - 2), (200, 120, 40), -1)
    return img


def make_scenes(root, scenes: int = 12, seed: int = 3):
    """Scenes of three 48-px faces, one per class; annotated in Pascal VOC."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    draw = {
        MASKED: lambda: face(rng, True),
        UNMASKED: lambda: face(rng, False),
        INCORRECT: lambda: incorrect_face(rng),
    }
    for s in range(scenes):
        scene = np.full((120, 200, 3), 90, np.uint8)
        objs = []
        for x, name in zip((8, 76, 144), CLASSES, strict=True):
            scene[30:78, x : x + 48] = draw[name]()
            objs.append(f"<object><name>{name}</name><bndbox><xmin>{x}</xmin><ymin>30</ymin>"
                        f"<xmax>{x + 48}</xmax><ymax>78</ymax></bndbox></object>")  # fmt: skip
        cv2.imwrite(str(root / "images" / f"s{s}.jpg"), scene)
        (root / "annotations" / f"s{s}.xml").write_text(
            f"<annotation><filename>s{s}.jpg</filename>{''.join(objs)}</annotation>"
        )
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("three")
    faces = make_faces(base / "faces", per_class=10, messy=False)
    voc = make_scenes(base / "voc")
    out = base / "run"
    tune = ["--epochs", "1", "--fine-tune-epochs", "1", "--fine-tune-blocks", "1"]
    code = main(["-q", "train", "--data", str(faces), "--voc", str(voc), "--classes", "3", "--out", str(out),
                 *tune, *TINY])  # fmt: skip
    assert code == 0
    return out


@pytest.mark.slow
def test_the_run_has_three_classes_in_canonical_order(run_dir):
    assert (run_dir / "labels.txt").read_text().split() == CLASSES
    config = json.loads((run_dir / "config.json").read_text())
    assert config["classes"] == CLASSES and config["classes_option"] == "3"
    import keras

    assert keras.models.load_model(run_dir / "model.keras").output_shape == (None, 3)


@pytest.mark.slow
def test_the_rare_class_lands_in_every_split_and_scenes_stay_whole(run_dir):
    split = json.loads((run_dir / "split.json").read_text())
    assert all(split["counts"][name][INCORRECT] > 0 for name in ("train", "val", "test"))
    sides: dict = {}
    for row in split["samples"]:
        if row["root"] == "voc":
            sides.setdefault(row["path"], set()).add(row["split"])
    assert len(sides) == 12 and all(len(v) == 1 for v in sides.values())


@pytest.mark.slow
def test_metrics_give_per_class_figures_and_the_scene_crops_alone(run_dir):
    m = json.loads((run_dir / "metrics.json").read_text())
    assert list(m["per_class"]) == CLASSES and 0.0 <= m["macro_f1"] <= 1.0
    assert len(m["confusion"]) == 3 and sum(map(sum, m["confusion"])) == m["n"]
    split = json.loads((run_dir / "split.json").read_text())
    test_scene = [r for r in split["samples"] if r["split"] == "test" and r["root"] == "voc"]
    scene = m["scene_crops"]
    assert scene["n"] == len(test_scene) < m["n"]
    assert {c: v["support"] for c, v in scene["per_class"].items()} == {
        c: sum(r["label"] == c for r in test_scene) for c in CLASSES
    }
    assert {"recall", "precision", "f1"} <= set(scene["per_class"][INCORRECT])
    assert "macro_f1" in scene and scene["threshold"] == m["threshold"]
    report = (run_dir / "report.md").read_text()
    assert "## Test split, scene crops only" in report and f"| {INCORRECT} |" in report


def test_class_weights_balance_three_classes():
    """Each class weighs as much as any other in total: the rare class is not drowned out."""
    from maskgate.train.run import _class_weights

    labels = [0] * 60 + [1] * 37 + [2] * 3
    w = _class_weights(labels, 3)
    totals = [w[k] * labels.count(k) for k in range(3)]
    assert totals == pytest.approx([100 / 3] * 3)
    assert w[2] == pytest.approx(100 / 9) and w[2] > 10 * w[0]


def test_classes_2_leaves_out_a_third_folder(tmp_path):
    from maskgate.train.dataset import scan_folder

    faces = make_faces(tmp_path / "faces", per_class=3, messy=False)
    (faces / INCORRECT).mkdir()
    cv2.imwrite(str(faces / INCORRECT / "a.jpg"), incorrect_face(np.random.default_rng(0)))
    assert scan_folder(faces, progress=False).classes == CLASSES
    r = scan_folder(faces, classes=(MASKED, UNMASKED), progress=False)
    assert r.classes == [MASKED, UNMASKED] and r.ignored_classes == [INCORRECT]


def test_classes_3_without_any_incorrect_face_is_one_line(tmp_path, capsys):
    faces = make_faces(tmp_path / "faces", per_class=3, messy=False)
    code = main(
        ["-q", "train", "--data", str(faces), "--out", str(tmp_path / "run"), "--classes", "3", *TINY]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert f"--classes 3: no {INCORRECT} examples" in err[0] and "--voc" in err[0]
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def bundle_dir(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle3") / "b"
    # An untrained model: --tolerance 100, so the int8 model is never refused for losing accuracy.
    args = ["--samples", "16", "--latency-runs", "0", "--no-float32", "--tolerance", "100"]
    assert main(["-q", "convert", "--model", str(run_dir), "--out", str(out), *args]) == 0
    return out


@pytest.mark.slow
def test_a_three_class_run_converts_and_verifies(bundle_dir):
    from maskgate.edge.core.bundle import load_bundle

    b = load_bundle(bundle_dir, kind="classifier")
    assert b.classes == CLASSES and (bundle_dir / "labels.txt").read_text().split() == CLASSES
    v = b.metadata.metrics.verification
    assert len(v["int8"]["confusion"]) == 3 and {"far", "frr", "macro_f1"} <= set(v["int8"])
    assert 0.5 <= b.threshold < 1.0
    probs = classifier_from_bundle(b).predict(np.zeros((1, 32, 32, 3), np.uint8))
    assert probs.shape == (1, 3)


@pytest.mark.slow
def test_the_gate_counts_incorrect_masks_as_unmasked_unless_configured(bundle_dir, monkeypatch):
    """edge: classifier.incorrect_is_masked decides whether p(incorrect) adds to p(with_mask)."""
    from maskgate.edge.detectors.base import Detection
    from maskgate.edge.detectors.config import DetectorConfig
    from maskgate.edge.gate.analyzer import FrameAnalyzer
    from maskgate.edge.gate.config import ClassifierConfig

    found = [Detection((8, 30, 56, 78), 0.9), Detection((144, 30, 192, 78), 0.9)]
    monkeypatch.setattr("maskgate.edge.gate.analyzer.make_detector", lambda cfg: FixedDetector(found))
    rng = np.random.default_rng(5)
    frame = np.full((120, 200, 3), 90, np.uint8)
    frame[30:78, 8:56], frame[30:78, 144:192] = face(rng, True), incorrect_face(rng)

    def analyzer(incorrect_is_masked: bool) -> FrameAnalyzer:
        cfg = ClassifierConfig(bundle=bundle_dir, threshold=0.5, incorrect_is_masked=incorrect_is_masked)
        return FrameAnalyzer.from_config(DetectorConfig(), cfg)

    strict, lenient = analyzer(False), analyzer(True)
    seen = []
    predict = strict.classifier.predict
    monkeypatch.setattr(strict.classifier, "predict", lambda faces: seen.append(predict(faces)) or seen[-1])
    faces = strict.analyze(frame).faces
    (probs,) = seen
    for f, g, p in zip(faces, lenient.analyze(frame).faces, probs, strict=True):
        assert f.label == g.label == CLASSES[int(p.argmax())] and f.box == g.box
        assert f.p_masked == pytest.approx(p[0]) and f.masked == (p[0] >= 0.5)
        assert g.p_masked == pytest.approx(p[0] + p[2], abs=1e-6) and g.masked == (p[0] + p[2] >= 0.5)
    # The same on known probabilities: a face the model calls incorrectly masked.
    fixed = np.array([[0.3, 0.1, 0.6]], np.float32)
    for a in (strict, lenient):
        monkeypatch.setattr(a.classifier, "predict", lambda faces: np.repeat(fixed, len(faces), 0))
    f, g = strict.analyze(frame).faces[0], lenient.analyze(frame).faces[0]
    assert f.label == g.label == INCORRECT
    assert f.p_masked == pytest.approx(0.3) and not f.masked
    assert g.p_masked == pytest.approx(0.9) and g.masked
