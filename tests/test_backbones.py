"""The backbone choice: ResNet50 beside MobileNetV2, built, fine-tuned, fetched and converted.

ResNet50's ImageNet weights are not on the development machines, so its
models here are untrained (``--weights none``) at 32 px; the fetch path is
exercised with a generated weights file of the right layout, listed under the
real manifest name with its MD5, as the published file is.
"""

import hashlib
import json

import numpy as np
import pytest

from conftest import assert_one_line_error, make_faces, maskgate
from maskgate.edge.cli import main
from maskgate.edge.core.errors import ModelFileError
from maskgate.edge.gate.classifier import classifier_from_bundle

pytestmark = pytest.mark.tf

# No hidden dense layer: eight ReLU units of an untrained model can all be dead on the few calibration
# faces, and an int8 layer whose every output is zero is one XNNPACK refuses to prepare.
TINY = ["--input-size", "32", "--batch-size", "8", "--dense-units", "0", "--workers", "2"]


def test_both_backbones_count_sixteen_blocks_from_the_input():
    from maskgate.train.backbones import mobilenet_v2_block_index, resnet50_block_index

    resnet = [
        f"conv{s}_block{b}_1_conv" for s, n in ((2, 3), (3, 4), (4, 6), (5, 3)) for b in range(1, n + 1)
    ]
    assert [resnet50_block_index(n) for n in resnet] == list(range(1, 17))
    assert resnet50_block_index("conv1_conv") == resnet50_block_index("pool1_pool") == 0
    assert [mobilenet_v2_block_index(f"block_{i}_expand") for i in range(1, 17)] == list(range(1, 17))
    assert mobilenet_v2_block_index("Conv_1_bn") == 16 and mobilenet_v2_block_index("Conv1") == 0
    assert mobilenet_v2_block_index("expanded_conv_project") == 0


@pytest.fixture(scope="module")
def resnet():
    from maskgate.train.model import build_classifier

    return build_classifier(2, backbone="resnet50", input_size=32, dense_units=8)


def test_resnet50_normalises_inside_the_model_as_caffe_preprocessing_does(resnet):
    """uint8 RGB in, as on the device; BGR minus the ImageNet mean inside, as its weights expect."""
    import keras

    normalize = keras.Model(resnet.input, resnet.get_layer("normalize").output)
    rgb = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    expected = keras.applications.resnet50.preprocess_input(rgb.copy())
    assert np.allclose(normalize.predict(rgb, verbose=0), expected, atol=1e-3)
    assert not resnet.get_layer("normalize").trainable


def test_resnet50_fine_tunes_the_conv5_stage_and_never_batchnorm(resnet):
    import keras

    from maskgate.train.model import backbone_of, backbone_spec, unfreeze_top

    assert backbone_spec(resnet).name == "resnet50" and not backbone_of(resnet).trainable
    assert unfreeze_top(resnet, 3) > 0
    layers = backbone_of(resnet).layers
    trainable = {la.name for la in layers if la.trainable}
    with_weights = {la.name for la in layers if la.weights and la.name.startswith("conv5_")}
    bn = {la.name for la in layers if isinstance(la, keras.layers.BatchNormalization)}
    assert trainable and all(n.startswith("conv5_") for n in trainable)
    assert with_weights - bn <= trainable and not trainable & bn
    unfreeze_top(resnet, 4)
    assert any(la.trainable for la in layers if la.name.startswith("conv4_block6_"))
    assert not any(la.trainable for la in layers if la.name.startswith("conv4_block5_"))


def test_resnet50_weights_load_from_a_file_and_a_misfit_is_one_clear_error(tmp_path, resnet):
    import keras

    from maskgate.train.model import backbone_of, build_classifier

    source = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "r.weights.h5"
    source.save_weights(path)
    model = build_classifier(2, backbone="resnet50", input_size=32, weights=path)
    expected = source.get_layer("conv1_conv").get_weights()[0]
    assert np.array_equal(backbone_of(model).get_layer("conv1_conv").get_weights()[0], expected)
    mobilenet = tmp_path / "m.weights.h5"
    keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(32, 32, 3), alpha=0.35
    ).save_weights(mobilenet)
    with pytest.raises(ModelFileError, match="does not fit ResNet50 without top"):
        build_classifier(2, backbone="resnet50", input_size=32, weights=mobilenet)


def test_resnet50_imagenet_weights_come_through_the_fetch_step_verified_by_md5(tmp_path, monkeypatch):
    """A file with the manifest's name in the mirror is checked against the manifest's MD5."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    from maskgate.edge.core import fetch
    from maskgate.train.config import RESNET50_WEIGHTS, TrainConfig
    from maskgate.train.fitting import resolve_weights
    from maskgate.train.model import backbone_of, build_classifier

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    source = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    with h5py.File(mirror / RESNET50_WEIGHTS, "w") as f:  # Keras's legacy layout, as published
        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    md5 = hashlib.md5((mirror / RESNET50_WEIGHTS).read_bytes()).hexdigest()
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(
        fetch.default_manifest_path().read_text().replace("4d473c1dd8becc155b73f8504c6f6626", md5)
    )
    monkeypatch.setenv(fetch.MANIFEST_ENV, str(manifest))
    monkeypatch.setenv(fetch.MIRROR_ENV, str(mirror))
    path = resolve_weights(TrainConfig(data=".", out="o", backbone="resnet50"))
    assert path == fetch.cache_dir() / RESNET50_WEIGHTS
    model = build_classifier(2, backbone="resnet50", input_size=32, weights=path)
    kernel = backbone_of(model).get_layer("conv5_block3_3_conv").get_weights()[0]
    assert np.array_equal(kernel, source.get_layer("conv5_block3_3_conv").get_weights()[0])


def test_missing_resnet50_weights_say_how_to_provide_them(tmp_path):
    """No ResNet50 weights anywhere: one line, naming the file, the mirror variable and --weights PATH."""
    faces = make_faces(tmp_path / "faces", per_class=4, messy=False)
    empty = tmp_path / "mirror"
    empty.mkdir()
    r = maskgate(
        "train", "--data", str(faces), "--out", str(tmp_path / "run"), "--backbone", "resnet50",
        env_extra={"MASKGATE_MIRROR": str(empty), "MASKGATE_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    assert_one_line_error(
        r, "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "MASKGATE_MIRROR", "--weights PATH"
    )
    assert not (tmp_path / "run").exists()


def test_alpha_belongs_to_mobilenet_v2(tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--backbone", "resnet50",
                 "--alpha", "0.5"])  # fmt: skip
    assert code == 2 and "--alpha is MobileNetV2's width multiplier" in capsys.readouterr().err


@pytest.mark.slow
def test_a_resnet50_run_trains_and_converts_to_int8(tmp_path):
    """`--backbone resnet50` end to end at 32 px: a run, then an int8 bundle the device loads."""
    from maskgate.edge.core.bundle import load_bundle
    from maskgate.edge.core.preprocess import describe

    faces = make_faces(tmp_path / "faces", per_class=10, messy=False)
    run, out = tmp_path / "run", tmp_path / "bundle"
    args = ["--data", str(faces), "--out", str(run), "--backbone", "resnet50", "--weights", "none"]
    tune = ["--epochs", "1", "--fine-tune-epochs", "1", "--fine-tune-blocks", "3"]
    assert main(["-q", "train", *args, *tune, *TINY]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["backbone"] == "resnet50" and config["preprocessing"]["normalization"]["mode"] == "caffe"
    assert [h.split(",")[0] for h in (run / "history.csv").read_text().splitlines()[1:]] == [
        "head",
        "fine-tune",
    ]
    convert = ["--samples", "8", "--latency-runs", "0", "--no-float32", "--tolerance", "100"]
    assert main(["-q", "convert", "--model", str(run), "--out", str(out), *convert]) == 0
    b = load_bundle(out, kind="classifier")
    assert b.metadata.source["backbone"] == "ResNet50"
    assert b.metadata.source["normalization"]["mean"] == [103.939, 116.779, 123.68]
    assert b.metadata.preprocessing == describe(32)  # what the device does is backbone-independent
    probs = classifier_from_bundle(b).predict(np.zeros((2, 32, 32, 3), np.uint8))
    assert probs.shape == (2, 2) and np.allclose(probs.sum(axis=1), 1.0, atol=0.02)
