import numpy as np
import pytest

from fakes import bmp_header, png
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


def test_images_beyond_the_pixel_limit_are_refused_from_their_header(tmp_path):
    """A valid 8000x6000 1-bit PNG is 10 kB on disk and 48 megapixels decoded: refused, not decoded."""
    big = tmp_path / "big.png"
    big.write_bytes(png(8000, 6000))
    assert big.stat().st_size < 100_000
    with pytest.raises(
        ImageReadError, match=r"8000x6000 is 48 megapixels, above the limit of 40 \(not decoded\)"
    ):
        read_image(big)
    # under a higher limit the same file decodes
    assert read_image(big, max_pixels=50_000_000).shape == (6000, 8000, 3)


@pytest.mark.parametrize(
    "data",
    [
        png(100_000, 100_000, rows=b"\0" * 10),  # Pillow's DecompressionBombError territory
        png(1 << 20, 1 << 20, rows=b""),
        bmp_header(1 << 16, 1 << 16),  # claims 4 gigapixels in 70 bytes
        bmp_header(-5, 7),
        b"\x89PNG\r\n\x1a\n" + b"\0" * 40,  # a PNG signature and nothing sound
        b"GIF89a" + b"\xff" * 20,
        b"\xff\xd8\xff\xe0" + b"\0" * 30,
    ],
)
def test_hostile_images_are_one_image_read_error(tmp_path, data):
    path = tmp_path / "x.img"
    path.write_bytes(data)
    with pytest.raises(ImageReadError, match="x.img"):
        read_image(path)


def test_formats_only_opencv_reads_are_capped_too(tmp_path):
    """A Radiance HDR header claiming 8000x6000 (Pillow cannot read HDR headers): OpenCV, capped at
    the same limit, refuses it before decoding. In a fresh interpreter: OpenCV reads its cap once."""
    import subprocess
    import sys

    hdr = tmp_path / "big.hdr"
    hdr.write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 6000 +X 8000\n" + b"\x02\x02\x1f\x40" * 64)
    code = (
        "import sys\n"
        "from maskgate.edge.core.errors import ImageReadError\n"
        "from maskgate.edge.core.imageio import read_image\n"
        "try:\n"
        "    read_image(sys.argv[1])\n"
        "except ImageReadError as e:\n"
        "    print('refused', e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(hdr)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "above the limit of 40 megapixels (not decoded)" in r.stdout, (
        r.stdout,
        r.stderr,
    )


def test_a_file_larger_than_any_image_of_the_limit_is_not_read(tmp_path):
    big = tmp_path / "huge.jpg"
    with open(big, "wb") as f:
        f.truncate(170_000_000)  # sparse: no disk used
    with pytest.raises(ImageReadError, match="more than any image of the pixel limit needs"):
        read_image(big)
