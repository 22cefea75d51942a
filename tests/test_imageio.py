import numpy as np
import pytest

from maskgate.edge.core.errors import ImageReadError, MaskgateError
from maskgate.edge.core.imageio import read_image


@pytest.mark.parametrize(
    "name", ["000.jpg", "palette.png", "alpha.png", "photo.webp", "gray.png", "odd.jpg_1088wx1632h"]
)
def test_reads_every_format_as_bgr_uint8(faces_dir, name):
    img = read_image(faces_dir / "with_mask" / name)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.shape[0] >= 40


def test_alpha_is_composited_on_white(tmp_path):
    from PIL import Image

    rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    assert (read_image(tmp_path / "t.png") == 255).all()


def test_sixteen_bit_png_is_scaled(tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "deep.png"), np.full((4, 4, 3), 65535, np.uint16))
    assert (read_image(tmp_path / "deep.png") == 255).all()


@pytest.mark.parametrize("name", ["corrupt.jpg", "notes.txt"])
def test_unreadable_files_raise_a_user_error(faces_dir, name):
    with pytest.raises(ImageReadError, match=name) as info:
        read_image(faces_dir / "with_mask" / name)
    assert isinstance(info.value, MaskgateError) and isinstance(info.value, ValueError)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ImageReadError, match="nope.jpg"):
        read_image(tmp_path / "nope.jpg")
