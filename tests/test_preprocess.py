import numpy as np
import pytest

from maskgate.edge.core import geometry, preprocess


def test_prepare_face_resizes_and_swaps_to_rgb():
    bgr = np.zeros((50, 30, 3), np.uint8)
    bgr[:, :, 0] = 255  # pure blue in BGR
    out = preprocess.prepare_face(bgr, 24)
    assert out.shape == (24, 24, 3) and out.dtype == np.uint8
    assert (out[:, :, 2] == 255).all() and (out[:, :, :2] == 0).all()


def test_prepare_face_is_deterministic_for_up_and_downscaling():
    rng = np.random.default_rng(0)
    for shape in ((300, 200, 3), (10, 12, 3)):
        img = rng.integers(0, 255, shape, dtype=np.uint8)
        a, b = preprocess.prepare_face(img, 32), preprocess.prepare_face(img.copy(), 32)
        assert np.array_equal(a, b)


@pytest.mark.parametrize(
    "bad", [np.zeros((0, 5, 3), np.uint8), np.zeros((5, 5), np.uint8), np.zeros((5, 5, 3), np.float32)]
)
def test_prepare_face_rejects_wrong_inputs(bad):
    with pytest.raises(ValueError):
        preprocess.prepare_face(bad, 16)


def test_normalize_maps_pixel_range_to_minus_one_one():
    out = preprocess.normalize(np.array([0, 127.5, 255]))
    np.testing.assert_allclose(out, [-1.0, 0.0, 1.0], atol=1e-6)


def test_expand_box_grows_and_clamps():
    assert geometry.expand_box((10, 10, 30, 50), 0.5, 100, 100) == (0, 0, 40, 70)
    assert geometry.expand_box((90, 90, 120, 120), 0.0, 100, 100) == (90, 90, 100, 100)
    assert geometry.expand_box((120, 120, 130, 130), 0.0, 100, 100) is None


def test_describe_records_the_normalisation_the_model_uses():
    d = preprocess.describe(224)
    assert d["input_size"] == [224, 224] and d["color_order"] == "RGB"
    assert d["normalization"] == {"scale": preprocess.INPUT_SCALE, "offset": -1.0, "inside_model": True}
