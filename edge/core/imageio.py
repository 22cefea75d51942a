"""Read any image a user is likely to have, or say clearly why not.

Real datasets mix JPEG, PNG (palette, RGBA, 16-bit), WebP and files with odd
extensions. We decode by content, never by extension: OpenCV first (fast,
releases the GIL so threads scale), Pillow as the fallback for what OpenCV
rejects. Transparent pixels are composited onto white rather than dropped,
because dropping alpha often reveals black or garbage behind a cut-out face.

Decoding is bounded: the size a file claims is read from its header (Pillow
reads headers without decoding) and a file beyond ``max_pixels`` is refused
before any pixel is decoded, so a 20000x20000 PNG of a few kilobytes cannot
take a Pi's memory. Every failure of either decoder is one ``ImageReadError``
naming the file: batch commands skip it, list it and go on.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import ImageReadError, brief

# Extensions we expect; other files are still tried, since names lie.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
# 40 megapixels: a 7000x5700 photo; decoded as BGR about 120 MB, which a 1 GB Pi can hold.
MAX_PIXELS = 40_000_000


def image_size(data: bytes) -> tuple[int, str] | None:
    """The pixels a file's header claims, and how to say it ("8000x6000 is 48 megapixels"), read
    without decoding;
    None where Pillow cannot parse the header (OpenCV may still read the file)."""
    import io
    import re
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():  # Pillow warns of bombs itself; the caller decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                return w * h, f"{w}x{h} is {w * h / 1e6:.0f} megapixels"
    except Image.DecompressionBombError as e:  # over twice Pillow's own limit; its message has the count
        m = re.search(r"\((\d+) pixels\)", str(e))
        pixels = int(m.group(1)) if m else 1 << 32
        return pixels, f"its header claims {pixels / 1e6:.0f} megapixels (a decompression bomb)"
    except Exception:  # noqa: BLE001 - any header Pillow cannot parse
        return None


def _opencv():
    """cv2, with its own logger silenced (a decoding failure is our ``ImageReadError``, said once per
    file by the batch that skips it, not OpenCV's "[ERROR:0@0.1] imdecode_ ..." lines around it) and
    its own pixel cap at ours: formats Pillow cannot read a header of (Radiance HDR, PFM) are
    decoded by OpenCV alone, and must not be decoded past the limit either. OpenCV reads the cap
    once, at its first decode; a larger ``max_pixels`` than the default applies to the formats
    Pillow reads."""
    global _OPENCV_READY
    if not _OPENCV_READY:
        os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        _OPENCV_READY = True
    import cv2

    return cv2


_OPENCV_READY = False


def decode_image(data: bytes, name: str = "image", *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode encoded image bytes into an HxWx3 uint8 BGR array, refusing images over ``max_pixels``."""
    cv2 = _opencv()

    size = image_size(data)
    if size is not None and size[0] > max_pixels:
        raise ImageReadError(f"{name}: {size[1]}, above the limit of {max_pixels / 1e6:g} (not decoded)")
    buf = np.frombuffer(data, dtype=np.uint8)
    # JPEG has no alpha or 16-bit data, and IMREAD_COLOR applies its EXIF orientation, which
    # IMREAD_UNCHANGED ignores: a phone photo must not train sideways.
    flags = cv2.IMREAD_COLOR if data[:2] == b"\xff\xd8" else cv2.IMREAD_UNCHANGED
    try:
        image = cv2.imdecode(buf, flags) if buf.size else None
    except cv2.error as e:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(e):  # OpenCV's own header check, for formats Pillow cannot read
            limit = int(os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"]) / 1e6
            raise ImageReadError(f"{name}: above the limit of {limit:g} megapixels (not decoded)") from e
        raise ImageReadError(f"{name}: not a readable image (OpenCV: {brief(e, 100)})") from e
    if image is not None and image.shape[0] * image.shape[1] > max_pixels:
        raise ImageReadError(
            f"{name}: {image.shape[1]}x{image.shape[0]} is above the limit of {max_pixels / 1e6:g} megapixels"
        )
    if image is None:
        if size is None:
            raise ImageReadError(f"{name}: not a readable image (neither OpenCV nor Pillow knows its format)")
        image = _decode_with_pillow(data, name)
    return _to_bgr8(image, name)


def read_image(path: str | os.PathLike[str], *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a file into an HxWx3 uint8 BGR array, whatever its format or extension."""
    # No image of max_pixels needs more bytes than it has pixels times four (uncompressed RGBA);
    # a bigger file is not read into memory at all.
    max_bytes = max_pixels * 4 + (1 << 20)
    try:
        size = Path(path).stat().st_size
        if size > max_bytes:
            raise ImageReadError(f"{path}: {size / 1e6:.0f} MB, more than any image of the pixel limit needs")
        data = Path(path).read_bytes()
    except OSError as e:
        raise ImageReadError(f"cannot read {path}: {e.strerror or e}") from e
    return decode_image(data, str(path), max_pixels=max_pixels)


def _decode_with_pillow(data: bytes, name: str) -> np.ndarray:
    import io

    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            rgba = ImageOps.exif_transpose(im).convert("RGBA")
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{name}: too many pixels to decode ({brief(e, 100)})") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:
        raise ImageReadError(f"{name}: not a readable image ({e.__class__.__name__})") from e
    except Exception as e:  # noqa: BLE001 - a hostile file may raise anything from a plug-in decoder
        raise ImageReadError(f"{name}: not a readable image ({e.__class__.__name__}: {brief(e, 80)})") from e
    arr = np.asarray(rgba)
    return arr[:, :, [2, 1, 0, 3]]  # RGBA -> BGRA, OpenCV's order


def _to_bgr8(image: np.ndarray, name: str) -> np.ndarray:
    import cv2

    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageReadError(f"{name}: unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        image = (image[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    elif image.ndim != 3 or image.shape[2] != 3:
        raise ImageReadError(f"{name}: unsupported image layout {image.shape}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ImageReadError(f"{name}: image is too small ({image.shape[1]}x{image.shape[0]})")
    return np.ascontiguousarray(image)
