"""The classifier bundle shipped in models/classifier: it loads, and it still says what it said.

Golden expectations (tests/golden_classifier.json) were recorded from the
shipped bundle on images of its run's held-out test split in the shared face
data; a changed model, runtime or preprocessing shows up here as a changed
label or score. Regenerate after shipping a new model:

    python tests/test_shipped_model.py --write RUN_DIR   # the training run the bundle came from
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from maskgate.edge.gate.classifier import classifier_from_bundle

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden_classifier.json"
TOLERANCE = 0.02  # score difference allowed across runtimes and CPUs


def _faces_root() -> Path:
    sys.path.insert(0, str(HERE))
    from conftest import SHARED

    return SHARED / "data" / "faces"


@pytest.mark.arm64
def test_shipped_bundle_loads_and_is_int8():
    from maskgate.edge.core.bundle import default_bundle_path, load_bundle

    b = load_bundle(default_bundle_path())
    assert b.kind == "classifier" and b.classes[0] == "with_mask"
    assert b.metadata.input.dtype == "uint8" and b.float_model_path is None
    assert b.model_path.stat().st_size <= 4_000_000
    v = b.metadata.metrics.verification
    assert v["accuracy_drop_pp"] <= 0.5 and v["n"] > 500  # verified on the full test split


@pytest.mark.arm64
def test_shipped_bundle_matches_its_golden_outputs():
    from maskgate.edge.core.bundle import default_bundle_path, load_bundle
    from maskgate.edge.core.imageio import read_image
    from maskgate.edge.core.preprocess import prepare_face

    golden = json.loads(GOLDEN.read_text())
    b = load_bundle(default_bundle_path())
    assert golden["model_sha256"] == hashlib.sha256(b.model_path.read_bytes()).hexdigest(), (
        "the shipped model changed: regenerate the golden file (see this module's docstring)"
    )
    root = _faces_root()
    if not root.is_dir():
        pytest.skip(f"shared face data not found at {root}")
    clf = classifier_from_bundle(b)
    for item in golden["images"]:
        path = root / item["path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == item["sha256"], f"{path} changed"
        probs = clf.predict(prepare_face(read_image(path), clf.input_size)[None])[0]
        k = int(probs.argmax())
        assert b.classes[k] == item["label"], item["path"]
        assert abs(float(probs[k]) - item["score"]) <= TOLERANCE, (
            item["path"],
            float(probs[k]),
            item["score"],
        )


def test_the_wheel_carries_the_bundle_whole(tmp_path, wheel):
    """A Pi installs a wheel, not this checkout: the bundle must load from what the wheel holds."""
    import zipfile

    from maskgate.edge.core.bundle import load_bundle

    repo = HERE.parent
    zipfile.ZipFile(wheel.path).extractall(tmp_path / "unpacked")
    b = load_bundle(tmp_path / "unpacked" / "maskgate" / "models" / "classifier")
    assert b.model_path.read_bytes() == (repo / "models" / "classifier" / "model.tflite").read_bytes()


def write_golden(run_dir: Path, per_class: int = 4) -> None:
    """Record the shipped bundle's outputs on correctly classified images of its run's test split."""
    sys.path.insert(0, str(HERE.parent))
    from maskgate.edge.core.bundle import default_bundle_path, load_bundle
    from maskgate.edge.core.imageio import read_image
    from maskgate.edge.core.preprocess import prepare_face

    b = load_bundle(default_bundle_path())
    clf = classifier_from_bundle(b)
    root = _faces_root()
    from maskgate.train.dataset import locate
    from maskgate.train.split import read_manifest

    rows = read_manifest(run_dir / "split.json", "test")
    test_paths = sorted(locate(p, {"faces": root})[1] for p, _, box in rows if box is None)
    rng = np.random.default_rng(0)
    images = []
    for cls in b.classes:
        candidates = [p for p in test_paths if p.startswith(cls + "/")]
        for i in rng.permutation(len(candidates)):
            path = root / candidates[i]
            probs = clf.predict(prepare_face(read_image(path), clf.input_size)[None])[0]
            k = int(probs.argmax())
            if b.classes[k] == cls:
                images.append(
                    {
                        "path": candidates[i],
                        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                        "label": cls,
                        "score": round(float(probs[k]), 4),
                    }
                )
            if sum(1 for x in images if x["label"] == cls) == per_class:
                break
    doc = {"model_sha256": hashlib.sha256(b.model_path.read_bytes()).hexdigest(), "images": images}
    GOLDEN.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {len(images)} golden images to {GOLDEN}")


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--write":
    write_golden(Path(sys.argv[2]))
