"""Typed bundle metadata: every value the device acts on is validated where the bundle is read.

Each case reseals a copy of a shipped bundle with one bad value (so the checksums pass and only the
metadata check stands between the file and the door) and expects one line naming the key.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from maskgate.edge.core.bundle import default_bundle_path, load_bundle, write_bundle, write_checksums
from maskgate.edge.core.errors import ModelFileError
from maskgate.edge.core.metadata import ClassifierMetadata, DetectorMetadata


def _resealed(kind: str, tmp_path: Path, change) -> Path:
    folder = tmp_path / kind
    shutil.copytree(default_bundle_path(kind), folder)
    meta = json.loads((folder / "metadata.json").read_text())
    change(meta)
    (folder / "metadata.json").write_text(json.dumps(meta))
    write_checksums(folder)
    return folder


def test_the_shipped_bundles_load_as_their_kind():
    assert isinstance(load_bundle(default_bundle_path("classifier")).metadata, ClassifierMetadata)
    detector = load_bundle(default_bundle_path("detector")).metadata
    assert isinstance(detector, DetectorMetadata) and len(detector.ssd.outputs) == 2 * len(detector.ssd.heads)
    # the same key means the same thing in every kind
    assert detector.metrics.training is None and detector.metrics.verification["tolerance"] == 0.97


def _set(path: str, value):
    def change(meta):
        *parents, leaf = path.split(".")
        node = meta
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[leaf] = value

    return change


def _drop(path: str):
    def change(meta):
        *parents, leaf = path.split(".")
        node = meta
        for p in parents:
            node = node[p]
        del node[leaf]

    return change


@pytest.mark.parametrize(
    ("kind", "change", "fragment"),
    [
        ("classifier", _set("threshold", -1), "threshold: Input should be greater than 0"),
        ("classifier", _set("threshold", 1.0), "threshold: Input should be less than 1"),
        ("classifier", _set("threshold", "0.5"), "threshold: Input should be a valid number"),
        ("classifier", _set("classes", ["with_mask", "with_mask"]), "name one class twice"),
        ("classifier", _set("input.size", [192, 160]), "square"),
        ("classifier", _set("input.quantization.scale", 0), "input.quantization.scale"),
        ("classifier", _set("model", "../../etc/passwd"), "model: String should match pattern"),
        ("classifier", _set("door", "open"), "door: unknown key"),
        ("classifier", _set("kind", "camera"), "says kind 'camera'"),
        ("classifier", _drop("kind"), "lacks kind"),
        ("classifier", _set("version", 2), "version"),
        ("detector", _drop("ssd.heads"), "lacks the SSD's prior boxes (ssd.heads)"),
        ("detector", _set("ssd.heads.0.variances", [0.1, 0.1]), "ssd.heads.0.variances"),
        ("detector", _set("ssd.heads.0.min_sizes", [-30.0]), "ssd.heads.0.min_sizes.0"),
        ("detector", _set("ssd.outputs", [0] * 12), "outputs must order the 12 head outputs"),
        ("detector", _set("ssd.nms_threshold", 0), "ssd.nms_threshold"),
        ("detector", _set("input.dtype", "float32"), "input.dtype"),
    ],
)
def test_a_bad_value_is_refused_in_one_line_naming_its_key(tmp_path, kind, change, fragment):
    with pytest.raises(ModelFileError) as e:
        load_bundle(_resealed(kind, tmp_path, change))
    message = str(e.value)
    assert "\n" not in message and "metadata.json" in message and fragment in message, message


def test_metadata_that_is_not_json_or_not_utf8_is_one_line(tmp_path):
    folder = _resealed("classifier", tmp_path, lambda m: None)
    (folder / "metadata.json").write_bytes(b"\xff\xfe{not json")
    write_checksums(folder)
    with pytest.raises(ModelFileError, match="metadata.json"):
        load_bundle(folder)


def test_a_converter_cannot_write_what_the_device_would_refuse(tmp_path):
    meta = json.loads((default_bundle_path("classifier") / "metadata.json").read_text()) | {"threshold": 1.5}
    with pytest.raises(ModelFileError, match="threshold"):
        write_bundle(tmp_path, kind="classifier", metadata=meta)
    assert not (tmp_path / "metadata.json").exists()


def test_a_model_that_does_not_fit_its_metadata_is_refused_when_the_bundle_loads(tmp_path):
    def three_classes(meta):
        meta["classes"] = ["with_mask", "without_mask", "mask_weared_incorrect"]

    folder = _resealed("classifier", tmp_path, three_classes)
    (folder / "labels.txt").write_text("with_mask\nwithout_mask\nmask_weared_incorrect\n")
    write_checksums(folder)
    with pytest.raises(ModelFileError, match="model.tflite has 2 outputs, labels name 3 classes"):
        load_bundle(folder)

    def classifier_inside(meta):
        shutil.copy(
            default_bundle_path("classifier") / "model.tflite", tmp_path / "detector" / "model.tflite"
        )

    with pytest.raises(ModelFileError, match="model.tflite has 1 outputs, the metadata describes 12"):
        load_bundle(_resealed("detector", tmp_path, classifier_inside))


def test_an_unreadable_file_is_one_line_not_a_traceback(tmp_path, monkeypatch):
    """A bundle copied by root with umask 077 and read by the service user: PermissionError."""
    from maskgate.edge.core import bundle as bundle_module

    def denied(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(bundle_module, "sha256_file", denied)
    with pytest.raises(ModelFileError, match=r"cannot read .* \(Permission denied\)"):
        load_bundle(default_bundle_path("classifier"))


@pytest.mark.parametrize("name", ["../../etc/hostname", "/etc/hostname", "sub/model.tflite", ".."])
def test_checksums_may_name_only_the_bundles_own_files(tmp_path, name):
    folder = _resealed("classifier", tmp_path, lambda m: None)
    with open(folder / "SHA256SUMS", "a") as f:
        f.write(f"{'0' * 64}  {name}\n")
    with pytest.raises(ModelFileError, match="not a file of the bundle"):
        load_bundle(folder)
