"""split.json: one format for classifier and segmenter runs, and manifests written before it still read."""

import json

import pytest

from conftest import make_voc
from maskgate.edge.core.errors import DataError
from maskgate.edge.core.splits import load_manifest, read_manifest
from maskgate.edge.tools.scoring import seen_scenes

# As train/split.py wrote them before the writers became one (version 1, no kind).
CLASSIFIER_V1 = {
    "version": 1,
    "seed": 0,
    "roots": {"data": "FACES", "voc": "VOC"},
    "counts": {"train": {"with_mask": 1}, "val": {"with_mask": 1}, "test": {"with_mask": 1}},
    "samples": [
        {"path": "with_mask/a.jpg", "root": "data", "box": None, "label": "with_mask", "split": "train",
         "group": 0, "sha256": "ab"},
        {"path": "images/s0.jpg", "root": "voc", "box": [1, 2, 30, 40], "label": "with_mask", "split": "val",
         "group": 1, "sha256": "cd"},
        {"path": "images/s1.jpg", "root": "voc", "box": [5, 6, 50, 60], "label": "with_mask", "split": "test",
         "group": 2, "sha256": "ef"},
    ],
}  # fmt: skip

# As train/segment_run.py wrote them: kind "scenes", one row per face, a faceless scene without a box.
SCENES_V1 = {
    "version": 1,
    "kind": "scenes",
    "seed": 5,
    "roots": {"voc": "VOC"},
    "counts": {s: {"scenes": 1, "faces": 1 if s != "val" else 0} for s in ("train", "val", "test")},
    "samples": [
        {"path": "images/scene0.jpg", "root": "voc", "box": [10, 20, 58, 68], "label": "with_mask",
         "split": "train", "group": 0, "size": [160, 120]},
        {"path": "images/scene1.jpg", "root": "voc", "box": None, "label": "none", "split": "val",
         "group": 1, "size": [160, 120]},
        {"path": "images/scene2.jpg", "root": "voc", "box": [90, 30, 138, 78], "label": "without_mask",
         "split": "test", "group": 2, "size": [160, 120]},
    ],
}  # fmt: skip


def _write(path, doc, **roots):
    doc = json.loads(json.dumps(doc))
    doc["roots"] = {k: str(roots[k]) for k in doc["roots"]}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def test_a_classifier_manifest_of_today_still_reads(tmp_path):
    path = _write(tmp_path / "split.json", CLASSIFIER_V1, data=tmp_path / "faces", voc=tmp_path / "voc")
    assert read_manifest(path, "train") == [(tmp_path / "faces" / "with_mask/a.jpg", "with_mask", None)]
    assert read_manifest(path, "test", root="voc") == [
        (tmp_path / "voc" / "images/s1.jpg", "with_mask", (5, 6, 50, 60))
    ]
    m = load_manifest(path)
    assert m.kind is None and m.seed == 0 and [e.sha256 for e in m.entries] == ["ab", "cd", "ef"]
    assert seen_scenes(path) == {"s0.jpg"}


def test_a_segmenter_manifest_of_today_still_reads(tmp_path):
    from maskgate.train.segmentation.scenes import read_split_scenes

    voc = make_voc(tmp_path / "voc", scenes=3)
    path = _write(tmp_path / "split.json", SCENES_V1, voc=voc)
    (test,) = read_split_scenes(path, "test")
    assert test.path == voc / "images" / "scene2.jpg" and test.boxes == [("without_mask", (90, 30, 138, 78))]
    (val,) = read_split_scenes(path, "val")
    assert val.boxes == []
    assert load_manifest(path).entries[0].size == (160, 120)
    assert seen_scenes(path) == {"scene0.jpg", "scene1.jpg"}


def test_both_writers_write_the_one_format(tmp_path, faces_dir):
    """Same document keys in the same order; rows differ only in their optional field."""
    from maskgate.train.dataset import scan_folder
    from maskgate.train.segmentation.scenes import list_scenes, load_scenes
    from maskgate.train.segmentation.scenes import write_manifest as write_scenes
    from maskgate.train.split import split_samples, write_manifest

    samples = scan_folder(faces_dir, progress=False).samples
    write_manifest(
        tmp_path / "a.json",
        samples,
        split_samples(samples, val_fraction=0.2, test_fraction=0.2, seed=0),
        roots={"data": faces_dir},
        seed=0,
    )
    voc = make_voc(tmp_path / "voc", scenes=3)
    scenes, _, _, _ = load_scenes(list_scenes(voc)[0], 32)
    write_scenes(tmp_path / "b.json", scenes, ["train", "val", "test"], voc=voc, seed=1)
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert list(a) == ["version", "seed", "roots", "counts", "samples"]
    assert list(b) == ["version", "kind", "seed", "roots", "counts", "samples"] and b["kind"] == "scenes"
    common = ["path", "root", "box", "label", "split", "group"]
    assert list(a["samples"][0]) == [*common, "sha256"]
    assert list(b["samples"][0]) == [*common, "size"] and b["samples"][0]["size"] == [160, 120]
    assert b["counts"]["test"] == {"scenes": 1, "faces": 3}


def test_an_unreadable_manifest_is_one_error(tmp_path):
    from maskgate.train.segmentation.scenes import read_split_scenes

    bad = tmp_path / "split.json"
    bad.write_text('{"roots": {}, "samples": [{"path": "a.jpg"}]}')
    with pytest.raises(DataError, match="is unreadable: KeyError"):
        read_manifest(bad)
    with pytest.raises(DataError, match="not found; is this a train-unet run"):
        read_split_scenes(tmp_path / "nope.json", "test")
