"""U-Net segmentation training: metrics on hand-made masks, scenes to masks, the split, a tiny run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_one_line_error, make_voc, maskgate
from maskgate.edge.core.errors import DataError
from maskgate.train.segmentation.metrics import segmentation_metrics


def test_metrics_on_hand_made_masks():
    truth = np.zeros((4, 4), np.uint8)
    truth[0:2, 0:2] = 1  # 4 face pixels
    prob = np.zeros((4, 4), np.float32)
    prob[0:2, 0:1] = 0.9  # 2 of them found
    prob[3, 3] = 0.5  # one false pixel, exactly at the threshold (counts as face)
    prob[1, 1] = 0.49  # just below: missed
    m = segmentation_metrics(truth, prob)
    assert (m["true_pixels"], m["predicted_pixels"]) == (4, 3)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 4)
    assert m["dice"] == pytest.approx(2 * 2 / (3 + 4)) and m["iou"] == pytest.approx(2 / 5)
    p, r = m["precision"], m["recall"]
    assert m["f1"] == pytest.approx(2 * p * r / (p + r))  # pixel F1 is Dice


def test_empty_masks_do_not_divide_by_zero():
    empty = np.zeros((3, 3))
    both = segmentation_metrics(empty, empty)
    assert [both[k] for k in ("dice", "iou", "precision", "recall", "f1")] == [1.0] * 5  # perfect agreement
    face = np.ones((3, 3))
    missed = segmentation_metrics(face, empty)  # nothing predicted, something to find
    assert (missed["dice"], missed["iou"], missed["recall"], missed["precision"]) == (0.0, 0.0, 0.0, 1.0)
    invented = segmentation_metrics(empty, face)  # something predicted, nothing to find
    assert (invented["dice"], invented["precision"], invented["recall"]) == (0.0, 0.0, 1.0)


def test_pooled_and_per_image_means_differ_as_documented():
    truth = np.zeros((2, 4, 4))
    truth[0, :, :] = 1  # a scene full of face, found entirely
    prob = truth.copy()
    prob[1, 0, 0] = 1  # an empty scene with one false pixel
    m = segmentation_metrics(truth, prob)
    assert m["dice"] == pytest.approx(32 / 33)  # pixels pooled: one error among 16 face pixels
    assert m["dice_per_image_mean"] == pytest.approx(0.5)  # per scene: 1 and 0
    with pytest.raises(ValueError, match="shape"):
        segmentation_metrics(truth, prob[0])


def test_scenes_become_masks_and_a_faceless_scene_an_empty_one(tmp_path):
    from maskgate.train.segmentation.scenes import list_scenes, load_scenes, read_split_scenes, write_manifest

    voc = make_voc(tmp_path / "voc", scenes=3)
    (voc / "annotations" / "scene1.xml").write_text(
        "<annotation><filename>scene1.jpg</filename></annotation>"
    )
    (voc / "annotations" / "ghost.xml").write_text("<annotation><filename>ghost.jpg</filename></annotation>")
    scenes, skipped = list_scenes(voc)
    assert [s.path.name for s in scenes] == ["scene0.jpg", "scene1.jpg", "scene2.jpg"]
    assert skipped == [("ghost.xml", "its image ghost.jpg is not in images/")]
    scenes, images, masks, _ = load_scenes(scenes, 64)
    assert images.shape == (3, 64, 64, 3) and masks.shape == (3, 64, 64)
    assert not masks[1].any()  # no faces, empty mask
    # scene 0: faces at x 10..58 and 90..138 of 160, y 20..68 and 30..78 of 120, plus a 10 px one
    assert masks[0, 17:36, 4:23].all() and masks[0, 22:41, 36:55].all() and masks[0, 5, 40] == 0
    assert masks[0].mean() == pytest.approx(2 * 48 * 48 / (160 * 120) + 100 / 19200, abs=0.02)

    write_manifest(tmp_path / "split.json", scenes, ["train", "val", "test"], voc=voc, seed=1)
    (test,) = read_split_scenes(tmp_path / "split.json", "test")
    assert test.path == (voc / "images" / "scene2.jpg").resolve() and len(test.boxes) == 3
    (val,) = read_split_scenes(tmp_path / "split.json", "val")
    assert val.boxes == []  # the faceless scene survives the round trip
    # the manifest is one classifier runs and `maskgate score --exclude-seen` read
    from maskgate.edge.tools.scoring import seen_scenes

    # the faceless val scene was seen too: its extra boxes must not count as on an unseen scene
    assert seen_scenes(tmp_path / "split.json") == {"scene0.jpg", "scene1.jpg"}


def test_the_split_is_by_scene_seeded_and_never_leaves_a_split_empty():
    from maskgate.train.segmentation.scenes import split_scenes

    a = split_scenes(100, val_fraction=0.15, test_fraction=0.15, seed=3)
    assert a == split_scenes(100, val_fraction=0.15, test_fraction=0.15, seed=3)
    assert a != split_scenes(100, val_fraction=0.15, test_fraction=0.15, seed=4)
    assert (a.count("train"), a.count("val"), a.count("test")) == (70, 15, 15)
    assert sorted(set(split_scenes(3, val_fraction=0.1, test_fraction=0.1, seed=0))) == [
        "test",
        "train",
        "val",
    ]
    with pytest.raises(DataError, match="at least 3"):
        split_scenes(2, val_fraction=0.15, test_fraction=0.15, seed=0)


def test_the_scene_split_option_tests_on_the_report_side_and_deals_the_tune_side():
    from maskgate.edge.core.scene_split import side
    from maskgate.train.segmentation.scenes import split_by_side

    names = [f"scene{i}.jpg" for i in range(40)]
    a = split_by_side(names, val_fraction=0.15, seed=3)
    assert a == split_by_side(names, val_fraction=0.15, seed=3)
    assert a != split_by_side(names, val_fraction=0.15, seed=4)
    assert [x == "test" for x in a] == [side(n) == "report" for n in names]  # the report side, all of it
    tune = [x for n, x in zip(names, a, strict=True) if side(n) == "tune"]
    assert (tune.count("val"), tune.count("train")) == (
        round(len(tune) * 0.15),
        len(tune) - round(len(tune) * 0.15),
    )
    fewest = split_by_side(["scene0.jpg", "scene1.jpg", "scene3.jpg"], val_fraction=0.01, seed=0)
    assert sorted(fewest[:2]) == ["train", "val"] and fewest[2] == "test"  # no split left empty
    with pytest.raises(DataError, match="2 and 1"):
        split_by_side(["scene0.jpg", "scene1.jpg"], val_fraction=0.15, seed=0)  # no report-side scene
    with pytest.raises(DataError, match="2 and 1"):
        split_by_side(["scene0.jpg", "scene3.jpg"], val_fraction=0.15, seed=0)  # one tune-side scene


def test_a_scene_split_run_records_it_in_its_manifest(tmp_path):
    """Without TensorFlow: the steps before fitting, then the manifest a run writes."""
    from maskgate.edge.core.splits import load_manifest
    from maskgate.edge.tools.scoring import seen_scenes
    from maskgate.train.segmentation.config import SegmentTrainConfig
    from maskgate.train.segmentation.run import pick_scenes, prepare_data
    from maskgate.train.segmentation.scenes import SIDE_METHOD, write_manifest

    voc = make_voc(tmp_path / "voc", scenes=10)  # report side: scene3, scene6, scene7, scene8
    cfg = SegmentTrainConfig(voc=voc, out=tmp_path / "run", input_size=64, scene_split=True, seed=2)
    data = prepare_data(cfg, *pick_scenes(cfg))
    by_name = {s.path.name: a for s, a in zip(data.scenes, data.assignment, strict=True)}
    assert sorted(n for n, a in by_name.items() if a == "test") == [f"scene{i}.jpg" for i in (3, 6, 7, 8)]
    assert [a for a in by_name.values() if a != "test"].count("val") == 1  # 15 % of 6, one at least
    write_manifest(tmp_path / "split.json", data.scenes, data.assignment, voc=voc, seed=2, method=SIDE_METHOD)
    manifest = load_manifest(tmp_path / "split.json")
    assert json.loads((tmp_path / "split.json").read_text())["method"] == SIDE_METHOD
    assert manifest.counts["test"] == {"scenes": 4, "faces": 12} and manifest.seed == 2
    assert seen_scenes(tmp_path / "split.json") == {n for n, a in by_name.items() if a != "test"}
    plain = SegmentTrainConfig(voc=voc, out=tmp_path / "run", input_size=64, seed=2)
    assert prepare_data(plain, *pick_scenes(plain)).assignment != data.assignment  # the option changes it


def test_user_mistakes_are_one_line(tmp_path):
    voc = make_voc(tmp_path / "voc", scenes=3)
    r = maskgate("train-unet", "--voc", str(tmp_path / "nope"), "--out", str(tmp_path / "run"))
    assert_one_line_error(r, "--voc", "is not a directory")
    (voc / "annotations").rename(tmp_path / "elsewhere")
    r = maskgate("train-unet", "--voc", str(voc), "--out", str(tmp_path / "run"))
    assert_one_line_error(r, "must contain annotations/")
    r = maskgate("train-unet", "--voc", str(voc), "--out", str(tmp_path / "run"), "--input-size", "100")
    assert_one_line_error(r, "--input-size", "multiple of 32")
    r = maskgate(
        "train-unet",
        "--voc",
        str(voc),
        "--out",
        str(tmp_path / "run"),
        "--scene-split",
        "--test-fraction",
        "0.2",
    )
    assert_one_line_error(r, "--test-fraction does not apply with --scene-split")
    assert not (tmp_path / "run").exists()


@pytest.mark.tf  # the train stage's command
def test_missing_encoder_weights_say_how_to_provide_them(tmp_path):
    """The classifier's offline hints, from the one weights step: the mirror variable and --weights PATH."""
    voc = make_voc(tmp_path / "voc", scenes=3)
    empty = tmp_path / "mirror"
    empty.mkdir()
    r = maskgate(
        "train-unet", "--voc", str(voc), "--out", str(tmp_path / "run"),
        env_extra={"MASKGATE_MIRROR": str(empty), "MASKGATE_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    assert_one_line_error(r, "mobilenet_v2_weights_tf_dim_ordering", "MASKGATE_MIRROR", "--weights PATH")
    assert not (tmp_path / "run").exists()


@pytest.mark.tf
@pytest.mark.slow
def test_unet_builds_at_a_small_size_and_trains_a_step():
    import keras

    from maskgate.train.segmentation.model import BceDiceLoss, build_unet, unfreeze_encoder

    model = build_unet(input_size=64, weights=None, decoder_filters=8)
    assert model.output_shape == (None, 64, 64, 1)
    frozen = [w.numpy().copy() for w in model.get_layer("encoder").weights]
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=BceDiceLoss(1.0))
    x = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype(np.float32)
    y = np.zeros((2, 64, 64, 1), np.float32)
    y[:, 16:40, 16:40] = 1
    before = float(model.evaluate(x, y, verbose=0))
    model.fit(x, y, epochs=3, verbose=0)
    assert float(model.evaluate(x, y, verbose=0)) < before
    after = model.get_layer("encoder").weights
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(frozen, after, strict=True))  # frozen, BN too
    assert unfreeze_encoder(model) > 50
    encoder = model.get_layer("encoder")
    assert encoder.get_layer("Conv1").trainable and not encoder.get_layer("bn_Conv1").trainable


@pytest.mark.tf
def test_loss_is_cross_entropy_plus_dice():
    import tensorflow as tf

    from maskgate.train.segmentation.model import BceDiceLoss

    y = tf.constant(np.ones((1, 2, 2, 1), np.float32))
    p = tf.constant(np.full((1, 2, 2, 1), 0.5, np.float32))
    bce = float(BceDiceLoss(0.0)(y, p))
    assert bce == pytest.approx(np.log(2), rel=1e-3)
    assert float(BceDiceLoss(2.0)(y, p)) == pytest.approx(bce + 2 * (1 - (2 * 2 + 1) / (4 + 2 + 1)), rel=1e-3)


@pytest.mark.tf
@pytest.mark.slow
def test_a_tiny_run_writes_a_complete_run_directory(unet_run):
    names = {p.name for p in unet_run.iterdir()}
    assert {"model.keras", "config.json", "metrics.json", "report.md", "split.json", "history.csv"} <= names
    metrics = json.loads((unet_run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["images"] >= 1 and 0.0 <= metrics["dice"] <= 1.0
    assert {"iou", "precision", "recall", "f1"} <= set(metrics) and metrics["epochs"] == 2
    config = json.loads((unet_run / "config.json").read_text())
    assert config["kind"] == "segmenter" and config["preprocessing"]["input_size"] == [64, 64]
    split = json.loads((unet_run / "split.json").read_text())
    assert {r["split"] for r in split["samples"]} == {"train", "val", "test"}
    assert {r["path"] for r in split["samples"] if r["split"] == "test"} == {
        "images/scene3.jpg"
    }  # report side
    assert split["method"].startswith("scene split") and config["scene_split"] is True
    assert "scene split (`--scene-split`)" in (unet_run / "report.md").read_text()
    overlays = sorted((unet_run / "overlays").iterdir())
    assert len(overlays) == 1 and overlays[0].name in (unet_run / "report.md").read_text()  # one test scene
    assert not [p for p in unet_run.parent.iterdir() if p.name.endswith(".partial")]


@pytest.mark.tf
def test_augmentation_moves_image_and_mask_together():
    import tensorflow as tf

    from maskgate.train.segmentation.model import augment

    mask = np.zeros((64, 64, 1), np.float32)
    mask[8:30, 4:20] = 1  # off-centre, so a flip or zoom that missed the mask would show
    image = np.repeat(mask * 200 + 20, 3, axis=-1)
    flipped = 0
    for seed in range(8):
        tf.random.set_seed(seed)
        x, m = augment(tf.constant(image), tf.constant(mask), seed=seed)
        x, m = x.numpy(), m.numpy()
        assert set(np.unique(m)) <= {0.0, 1.0} and x.min() >= 0 and x.max() <= 255
        bright = x[..., 0] > (x[..., 0].min() + x[..., 0].max()) / 2
        assert (bright == (m[..., 0] > 0)).mean() > 0.97, seed
        flipped += bool(m[:, 32:].any())
    assert 0 < flipped < 8  # some views flipped, some not
