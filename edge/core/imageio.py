"""Read any image a user is likely to have, or say clearly why not.

Real datasets mix JPEG, PNG (palette, RGBA, 16-bit), WebP and files with odd
extensions. We decode by content, never by extension: OpenCV first (fast,
releases the GIL so threads scale), Pillow as the fallback for what OpenCV
rejects. Transparent pixels are composited onto white rather than dropped,
because dropping alpha often reveals black or garbage behind a cut-out face.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import ImageReadError

# Extensions we expect; other files are still tried, since names lie.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Decode encoded image bytes into an HxWx3 uint8 BGR array."""
    import cv2

    buf = np.frombuffer(data, dtype=np.uint8)
    # JPEG has no alpha or 16-bit data, and IMREAD_COLOR applies its EXIF orientation, which
    # IMREAD_UNCHANGED ignores: a phone photo must not train sideways.
    flags = cv2.IMREAD_COLOR if data[:2] == b"\xff\xd8" else cv2.IMREAD_UNCHANGED
    image = cv2.imdecode(buf, flags) if buf.size else None
    if image is None:
        image = _decode_with_pillow(data, name)
    return _to_bgr8(image, name)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a file into an HxWx3 uint8 BGR array, whatever its format or extension."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ImageReadError(f"cannot read {path}: {e.strerror or e}") from e
    return decode_image(data, str(path))


def _decode_with_pillow(data: bytes, name: str) -> np.ndarray:
    import io

    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            rgba = ImageOps.exif_transpose(im).convert("RGBA")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageReadError(f"{name}: not a readable image ({e.__class__.__name__})") from e
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
