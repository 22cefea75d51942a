"""Scanning, grouping and splitting, on generated data that holds every mess the real data has."""

import json
from collections import defaultdict

import numpy as np
import pytest

from maskgate.edge.core.errors import DataError
from maskgate.train.dataset import content_hash, load_example, scan_folder, scan_voc
from maskgate.train.split import group_samples, read_manifest, split_counts, split_samples, write_manifest

FAMILY = r"^augmented_image_"


def test_scan_reads_all_formats_and_reports_unreadable(faces_dir):
    r = scan_folder(faces_dir, progress=False)
    names = {s.path.name for s in r.samples}
    assert {"palette.png", "alpha.png", "photo.webp", "gray.png", "odd.jpg_1088wx1632h"} <= names
    skipped = {p.rsplit("/", 1)[-1]: why for p, why in r.skipped}
    assert set(skipped) == {"corrupt.jpg", "notes.txt"}  # .DS_Store is ignored, not reported
    assert all(why for why in skipped.values())
    assert r.classes == ["with_mask", "without_mask"]
    assert r.counts() == {"with_mask": 12 + 6, "without_mask": 12 + 3}


def test_scan_limits_images_per_class(faces_dir):
    a = scan_folder(faces_dir, max_per_class=5, seed=1, progress=False)
    assert len(a.samples) + len(a.skipped) == 10  # five files drawn per class, read or skipped
    assert all(n <= 5 for n in a.counts().values())
    b = scan_folder(faces_dir, max_per_class=5, seed=2, progress=False)
    assert {s.path for s in a.samples} != {s.path for s in b.samples}  # the seed picks the subset


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no class folders"),
        (lambda p: (p / "d" / "a").mkdir(parents=True) or p / "d", "no files"),
        (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "not a directory"),
    ],
)
def test_scan_bad_data_directories(tmp_path, make, message):
    with pytest.raises(DataError, match=message):
        scan_folder(make(tmp_path), progress=False)


def test_scan_of_only_unreadable_files_says_so(tmp_path):
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "a" / "x.jpg").write_text("nope")
    with pytest.raises(DataError, match="none of 1 files is a readable image"):
        scan_folder(tmp_path / "d", progress=False)


def test_groups_join_duplicates_flips_and_families(faces_dir):
    samples = scan_folder(faces_dir, progress=False).samples
    by_name = {f"{s.label}/{s.path.name}": i for i, s in enumerate(samples)}
    g = group_samples(samples, near_duplicate_bits=5, family_pattern=FAMILY)
    assert g[by_name["with_mask/000.jpg"]] == g[by_name["with_mask/copy_of_000.jpg"]]  # same bytes
    assert g[by_name["with_mask/000.jpg"]] != g[by_name["with_mask/001.jpg"]]
    fam = {g[by_name[f"without_mask/augmented_image_{k}.jpg"]] for k in range(3)}
    assert len(fam) == 1
    # without the family rule, the flipped copy still joins through the mirrored hash
    g2 = group_samples(samples, near_duplicate_bits=5, family_pattern=None)
    assert (
        g2[by_name["without_mask/augmented_image_0.jpg"]] == g2[by_name["without_mask/augmented_image_1.jpg"]]
    )


def test_split_is_stratified_leak_free_and_seeded(faces_dir):
    samples = scan_folder(faces_dir, progress=False).samples
    kw = dict(val_fraction=0.2, test_fraction=0.2, near_duplicate_bits=5, family_pattern=FAMILY)
    a = split_samples(samples, seed=3, **kw)
    assert a == split_samples(samples, seed=3, **kw)
    assert any(
        x != y for x, y in zip(a.assignment, split_samples(samples, seed=4, **kw).assignment, strict=True)
    )
    sides = defaultdict(set)
    for grp, side in zip(a.groups, a.assignment, strict=True):
        sides[grp].add(side)
    assert all(len(s) == 1 for s in sides.values())
    counts = split_counts(samples, a)
    for cls in ("with_mask", "without_mask"):
        assert all(counts[s][cls] >= 1 for s in ("train", "val", "test"))
        assert counts["train"][cls] > counts["val"][cls]


def test_real_data_split_keeps_families_and_duplicates_on_one_side():
    """The shared faces: byte duplicates and the augmented family never straddle splits."""
    from conftest import SHARED

    root = SHARED / "data" / "faces"
    if not root.is_dir():
        pytest.skip(f"shared faces not found at {root}")
    samples = scan_folder(root, progress=False).samples
    sp = split_samples(samples, val_fraction=0.15, test_fraction=0.15, seed=1337, family_pattern=FAMILY)
    side_of = defaultdict(set)
    for s, side in zip(samples, sp.assignment, strict=True):
        side_of[("sha", s.sha256)].add(side)
        if s.path.name.startswith("augmented_image_"):
            side_of[("family", s.label)].add(side)
    assert all(len(v) == 1 for v in side_of.values())
    counts = split_counts(samples, sp)
    total = sum(sum(c.values()) for c in counts.values())
    assert total == len(samples) and abs(sum(counts["test"].values()) / total - 0.15) < 0.02


def test_a_class_with_too_few_photos_is_refused(tmp_path):
    from conftest import make_faces

    root = make_faces(tmp_path / "f", per_class=6, messy=False)
    for p in sorted((root / "without_mask").iterdir())[2:]:
        p.unlink()
    samples = scan_folder(root, progress=False).samples
    with pytest.raises(DataError, match="class 'without_mask' has 2 image"):
        split_samples(samples, val_fraction=0.2, test_fraction=0.2, seed=0)


def test_manifest_round_trip(faces_dir, tmp_path):
    samples = scan_folder(faces_dir, progress=False).samples
    sp = split_samples(samples, val_fraction=0.2, test_fraction=0.2, seed=0)
    path = tmp_path / "split.json"
    write_manifest(path, samples, sp, roots={"data": faces_dir}, seed=0)
    doc = json.loads(path.read_text())
    assert doc["counts"] == split_counts(samples, sp)
    test_rows = read_manifest(path, "test")
    expected = sorted(str(s.path) for s, a in zip(samples, sp.assignment, strict=True) if a == "test")
    assert sorted(str(p) for p, _, _ in test_rows) == expected


def test_voc_scenes_become_crops_grouped_by_scene(voc_dir):
    r = scan_voc(voc_dir, classes=["with_mask", "without_mask"], margin=0.1, min_size=16, progress=False)
    assert len(r.samples) == 12
    assert r.voc_skipped == {"class mask_weared_incorrect not trained": 6}
    crop = load_example(r.samples[0], 32)
    assert crop.shape == (32, 32, 3)
    g = group_samples(r.samples, near_duplicate_bits=0, family_pattern=None)
    assert len(set(g)) == 6  # both faces of a scene share a group
    r3 = scan_voc(
        voc_dir,
        classes=["with_mask", "without_mask", "mask_weared_incorrect"],
        margin=0.1,
        min_size=16,
        progress=False,
    )
    assert r3.voc_skipped == {"face under 16 px": 6}


def test_voc_without_annotations_is_refused(tmp_path, voc_dir):
    for p in (voc_dir / "annotations").iterdir():
        p.unlink()
    with pytest.raises(DataError, match="no .xml files"):
        scan_voc(voc_dir, classes=["with_mask"], margin=0, min_size=1, progress=False)
    with pytest.raises(DataError, match="must contain images/ and annotations/"):
        scan_voc(tmp_path / "nothing", classes=["with_mask"], margin=0, min_size=1, progress=False)


def test_voc_bad_xml_and_missing_image_are_skipped(voc_dir):
    (voc_dir / "annotations" / "scene0.xml").write_text("<annotation><filename>")
    (voc_dir / "images" / "scene1.jpg").unlink()
    r = scan_voc(voc_dir, classes=["with_mask", "without_mask"], margin=0, min_size=1, progress=False)
    assert len(r.samples) == 8
    reasons = " ".join(why for _, why in r.skipped)
    assert "not valid XML" in reasons and len(r.skipped) == 2


def test_content_hash_changes_with_any_file(faces_dir):
    r = scan_folder(faces_dir, progress=False)
    h1 = content_hash(r.samples, {"data": faces_dir})
    assert h1 == content_hash(list(reversed(r.samples)), {"data": faces_dir})
    img = faces_dir / "with_mask" / "001.jpg"
    img.write_bytes(img.read_bytes() + b"\0")
    assert content_hash(scan_folder(faces_dir, progress=False).samples, {"data": faces_dir}) != h1
    assert np.ndim(h1) == 0 and len(h1) == 64


def test_exif_orientation_is_applied(tmp_path):
    """A phone photo stored sideways with an orientation tag reads upright, as the camera sees it."""
    from PIL import Image

    from maskgate.edge.core.imageio import read_image

    img = np.zeros((20, 40, 3), np.uint8)  # wide: 40 x 20
    img[:, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(img).save(tmp_path / "phone.jpg", exif=exif.tobytes())
    assert read_image(tmp_path / "phone.jpg").shape[:2] == (40, 20)
    Image.fromarray(img).save(tmp_path / "plain.jpg")
    assert read_image(tmp_path / "plain.jpg").shape[:2] == (20, 40)


def test_same_file_under_two_classes_is_dropped_and_reported(faces_dir):
    from maskgate.train.dataset import drop_label_conflicts

    src = faces_dir / "with_mask" / "003.jpg"
    (faces_dir / "without_mask" / "mislabelled.jpg").write_bytes(src.read_bytes())
    r = drop_label_conflicts(scan_folder(faces_dir, progress=False))
    names = {s.path.name for s in r.samples}
    assert "003.jpg" not in {s.path.name for s in r.samples if s.label == "with_mask"}
    assert "mislabelled.jpg" not in names
    reasons = {p.rsplit("/", 1)[-1]: why for p, why in r.skipped}
    assert reasons["mislabelled.jpg"] == "same bytes also filed under with_mask"
    assert reasons["003.jpg"] == "same bytes also filed under without_mask"
