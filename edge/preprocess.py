"""The one definition of how an image becomes classifier input.

Training, conversion and the device all call these functions, so a face is
resized and colour-converted identically everywhere; a mismatch here is the
classic silent accuracy loss of edge deployments.

The classifier takes the resized RGB image with values 0..255. Normalisation
to MobileNetV2's [-1, 1] range lives *inside* the model (a Rescaling layer
built from ``INPUT_SCALE``/``INPUT_OFFSET``), so an int8 model can take uint8
pixels straight from the camera without a float pass on the device.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# MobileNetV2's ImageNet weights expect x / 127.5 - 1.
INPUT_SCALE = 1.0 / 127.5
INPUT_OFFSET = -1.0

Box = tuple[int, int, int, int]


def _cv2():
    import cv2  # imported lazily so that importing maskgate.edge stays cheap

    return cv2


def prepare_face(image_bgr: np.ndarray, size: int) -> np.ndarray:
    """Resize a BGR face crop to ``size``x``size`` RGB uint8, the model's input.

    Stretches rather than pads: face crops are near-square, and padding would
    spend input pixels on borders. INTER_AREA when shrinking avoids aliasing
    on large crops; INTER_LINEAR when enlarging small, distant faces.
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 BGR image, got {image_bgr.shape} {image_bgr.dtype}")
    h, w = image_bgr.shape[:2]
    if h == 0 or w == 0:
        raise ValueError("empty image")
    cv2 = _cv2()
    interpolation = cv2.INTER_AREA if (h > size or w > size) else cv2.INTER_LINEAR
    resized = cv2.resize(image_bgr, (size, size), interpolation=interpolation)
    return cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)


def normalize(rgb: np.ndarray) -> np.ndarray:
    """Map 0..255 pixels to the [-1, 1] range, for models without the built-in layer."""
    return rgb.astype(np.float32) * np.float32(INPUT_SCALE) + np.float32(INPUT_OFFSET)


def expand_box(box: Box, margin: float, width: int, height: int) -> Box | None:
    """Grow a face box by ``margin`` of its size on each side, clamped to the frame.

    Returns ``None`` for a box that is empty after clamping, so callers drop
    degenerate detections instead of crashing on an empty crop.
    """
    x1, y1, x2, y2 = box
    dx = (x2 - x1) * margin
    dy = (y2 - y1) * margin
    nx1 = max(0, int(round(x1 - dx)))
    ny1 = max(0, int(round(y1 - dy)))
    nx2 = min(width, int(round(x2 + dx)))
    ny2 = min(height, int(round(y2 + dy)))
    if nx2 <= nx1 or ny2 <= ny1:
        return None
    return nx1, ny1, nx2, ny2


def crop(image: np.ndarray, box: Box) -> np.ndarray:
    """Crop an already clamped box (see ``expand_box``)."""
    x1, y1, x2, y2 = box
    return image[y1:y2, x1:x2]


def describe(size: int) -> dict[str, Any]:
    """What a model bundle records so a consumer can check it preprocesses alike."""
    return {
        "input_size": [size, size],
        "color_order": "RGB",
        "input_range": [0, 255],
        "resize": "stretch; INTER_AREA when shrinking, INTER_LINEAR when enlarging",
        "normalization": {"scale": INPUT_SCALE, "offset": INPUT_OFFSET, "inside_model": True},
    }
