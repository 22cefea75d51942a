"""`maskgate explain`: Grad-CAM on a hand-built model whose answer is known, and on a tiny trained run.

The hand-built model nests a one-convolution "backbone" that sees red and green; its class 0 means
"more red". Grad-CAM of class 0 must then light up exactly where the red is. The tiny run is trained
as tests/test_train.py trains its runs, at 96 px so MobileNetV2 leaves a 3x3 feature map (at 32 px
it leaves 1x1, which can only give a constant map).
"""

import json
import shutil

import cv2
import numpy as np
import pytest

from conftest import assert_one_line_error, face, make_faces, maskgate
from maskgate.edge.cli import main
from maskgate.edge.core.errors import ModelFileError

pytestmark = pytest.mark.tf

from test_train import TINY  # noqa: E402 - the tiny-run options, shared rather than repeated

SIZE = 96


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("explain")
    faces = make_faces(base / "faces", per_class=10, messy=False)
    out = base / "run"
    args = [
        "-q",
        "train",
        "--data",
        str(faces),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--fine-tune-epochs",
        "0",
    ]
    assert main([*args, *TINY, "--input-size", str(SIZE)]) == 0
    return out


def _known_model():
    """image -> /255 -> nested 'features' (2x2 conv, stride 2: channel 0 = red, 1 = green) -> GAP -> softmax.

    The logits are 8 * (mean red - mean green) and its negative, so class 0's Grad-CAM is
    ReLU(red - green) over the 8x8 feature map: the red region and nothing else.
    """
    import keras

    inner = keras.Input((16, 16, 3))
    conv = keras.layers.Conv2D(2, 2, strides=2, use_bias=False, activation="relu", name="conv")
    features = keras.Model(inner, conv(inner), name="features")
    image = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Rescaling(1 / 255)(image)
    x = keras.layers.GlobalAveragePooling2D()(features(x))
    head = keras.layers.Dense(2, activation="softmax", name="probabilities")
    model = keras.Model(image, head(x))
    kernel = np.zeros((2, 2, 3, 2), np.float32)
    kernel[:, :, 0, 0] = 0.25  # RGB input: index 0 is red
    kernel[:, :, 1, 1] = 0.25
    conv.set_weights([kernel])
    head.set_weights([np.array([[8, -8], [-8, 8]], np.float32), np.zeros(2, np.float32)])
    return model


def test_grad_cam_lights_up_the_evidence_of_the_predicted_class():
    from maskgate.train.explain import GradCam

    cam = GradCam(_known_model())
    assert cam.feature_layer == "features" and cam.feature_shape == (8, 8) and cam.score == "logit"
    faces = np.full((2, 16, 16, 3), 100, np.uint8)
    faces[0, :8, :8] = (255, 0, 0)  # red top-left: class 0, evidence top-left
    faces[1, 8:, 8:] = (0, 255, 0)  # green bottom-right: class 1, evidence bottom-right
    maps, probs = cam(faces)
    assert maps.shape == (2, 16, 16) and maps.dtype == np.float32  # the input's size, not the 8x8 map's
    assert probs.argmax(axis=1).tolist() == [0, 1]
    assert maps.min() >= 0.0 and maps.max() == pytest.approx(1.0)
    assert maps[0, :6, :6].min() > 0.9 and maps[0, 9:, :].max() == 0.0 and maps[0, :, 9:].max() == 0.0
    assert maps[1, 10:, 10:].min() > 0.9 and maps[1, :7, :].max() == 0.0 and maps[1, :, :7].max() == 0.0


def test_the_feature_map_is_each_backbones_output():
    """Found, not named: the last spatial layer is the nested backbone, whichever it is."""
    from maskgate.train.backbones import BACKBONES
    from maskgate.train.explain import GradCam
    from maskgate.train.model import backbone_of, build_classifier

    for name in BACKBONES:
        model = build_classifier(3, backbone=name, input_size=64, dense_units=4)
        cam = GradCam(model)
        assert cam.feature_layer == backbone_of(model).name and cam.feature_shape == (2, 2), name
        maps, probs = cam(np.full((1, 64, 64, 3), 128, np.uint8))
        assert maps.shape == (1, 64, 64) and probs.shape == (1, 3)


def test_a_model_that_is_not_a_chain_is_refused():
    import keras

    from maskgate.train.explain import GradCam

    image = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(3, 1)(image)
    b = keras.layers.Conv2D(3, 1)(image)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Add()([a, b]))
    model = keras.Model(image, keras.layers.Dense(2, activation="softmax")(x))
    with pytest.raises(ModelFileError, match="not a single chain"):
        GradCam(model)


@pytest.mark.slow
def test_maps_of_a_tiny_trained_run_have_the_input_size_and_vary(tiny_run, tmp_path):
    from maskgate.edge.core.preprocess import prepare_face
    from maskgate.train.explain import load_explainer
    from maskgate.train.model import backbone_of

    cam, classes, _ = load_explainer(tiny_run)
    assert cam.feature_layer == backbone_of(cam.model).name and cam.feature_shape == (3, 3)
    rng = np.random.default_rng(5)
    faces = np.stack([prepare_face(face(rng, masked=i % 2 == 0, size=60), SIZE) for i in range(6)])
    maps, probs = cam(faces)
    assert maps.shape == (6, SIZE, SIZE) and probs.shape == (6, len(classes))
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    varying = [float(m.std()) > 0.01 for m in maps]
    assert sum(varying) >= 5, [float(m.std()) for m in maps]  # a map may be all 0 if nothing speaks for it
    # scaled to 1 at the peak of the 3x3 map; upsampling between cell centres may round it off a little
    assert all(m.max() > 0.9 for m, v in zip(maps, varying, strict=True) if v)


@pytest.mark.slow
def test_explain_writes_a_png_per_image_and_an_index(tiny_run, tmp_path, capsys):
    faces = make_faces(tmp_path / "faces", per_class=3, seed=3, messy=False)
    (faces / "with_mask" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    one = faces / "without_mask" / "000.jpg"
    out = tmp_path / "explained"
    code = main(["-q", "explain", "--model", str(tiny_run), "--image", str(one), str(faces / "with_mask"),
                 str(faces / "without_mask" / "00*.jpg"), "--out", str(out)])  # fmt: skip
    assert code == 0
    index = json.loads((out / "explain.json").read_text())
    images = [row["image"] for row in index["images"]]
    assert len(images) == 6 and len(set(images)) == 6  # the file named twice is explained once
    assert [s["image"].rsplit("/", 1)[-1] for s in index["skipped"]] == ["corrupt.jpg"]
    assert index["feature_map"] == [3, 3] and index["input_size"] == SIZE
    for row in index["images"]:
        assert row["label"] == max(row["probabilities"], key=row["probabilities"].get)
        assert 0.5 <= row["p"] <= 1.0 and sum(row["probabilities"].values()) == pytest.approx(1, abs=1e-3)
        png = cv2.imread(str(out / row["output"]))
        assert png is not None and png.shape[1] > 1.5 * png.shape[0]  # two panels side by side
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [r["output"] for r in index["images"]] + ["explain.json"]
    )
    captured = capsys.readouterr()
    assert "6 image(s) explained" in captured.out and "corrupt.jpg" in captured.err
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


@pytest.mark.slow
def test_bad_inputs_fail_cleanly_and_leave_nothing(tiny_run, tmp_path, capsys):
    faces = make_faces(tmp_path / "faces", per_class=1, messy=False)
    image = str(faces / "with_mask" / "000.jpg")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not an image")
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_run, damaged, ignore=shutil.ignore_patterns("*.png"))
    (damaged / "model.keras").write_bytes(b"PK\x03\x04 not really a zip")
    existing = tmp_path / "existing"
    existing.mkdir()
    cases = [
        ([str(tiny_run)], [str(corrupt)], tmp_path / "o1", "none of 1 file(s) is a readable image"),
        ([str(damaged)], [image], tmp_path / "o2", "cannot be loaded"),
        ([str(tmp_path / "nowhere")], [image], tmp_path / "o3", "not found"),
        ([str(tiny_run)], [image], existing, "already exists"),
    ]
    for model, images, out, message in cases:
        assert main(["-q", "explain", "--model", *model, "--source", *images, "--out", str(out)]) == 2, (
            message
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and "Traceback" not in err[0], err
        assert out == existing or not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_a_missing_image_is_one_line_from_the_command(tmp_path):
    r = maskgate(
        "explain", "--model", "runs/x", "--source", str(tmp_path / "gone.jpg"), "--out", str(tmp_path / "o")
    )
    assert_one_line_error(r, "--source", "gone.jpg", "no such file")
