"""The ``[detector]`` section: which backend finds faces, with what input size and floors.

It lives with the detectors, not the gate, so a detector is built from its own
section alone; the gate's configuration tree (``edge.gate.config``) includes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from ..core.settings import Section

# Each backend's class, imported only when one is made (``registry.make_detector``), so naming
# them here (validation, --help) loads no numpy, OpenCV or LiteRT.
BACKENDS: dict[str, str] = {
    "ssd-int8": "maskgate.edge.detectors.ssd:SsdInt8Detector",
    "ssd-opencv": "maskgate.edge.detectors.ssd:SsdOpenCvDetector",
    "unet": "maskgate.edge.detectors.unet:UnetDetector",
}

Backend = Literal[tuple(BACKENDS)]  # type: ignore[valid-type]
Side = Annotated[int, Field(ge=32, le=4096)]


class DetectorConfig(Section):
    backend: Backend = Field(
        "ssd-int8",
        description="face detector: 'ssd-int8' (the SSD in int8 on LiteRT), 'ssd-opencv' (float, cv2.dnn) "
        "or 'unet' (face regions of an int8 U-Net segmenter on LiteRT)",
    )
    bundle: Path | None = Field(
        None, description="ssd-int8: detector bundle folder (default: the one shipped)"
    )
    segmenter_bundle: Path | None = Field(
        None,
        description="unet: segmenter bundle folder, made by `maskgate convert segmenter` (default: the one "
        "shipped)",
    )
    mask_threshold: float = Field(
        0.5, gt=0.0, lt=1.0, description="unet: face probability from which a mask pixel counts as face"
    )
    min_component_px: int = Field(
        8,
        ge=1,
        le=100_000,
        description="unet: smallest face region kept, in pixels of the segmenter's square mask",
    )
    input_size: tuple[Side, Side] | Literal["frame"] = Field(
        (300, 300),
        description="detector input [width, height] in px ([300, 300] as published), or 'frame' for the "
        "frame's own size, which finds smaller faces at a higher cost",
    )
    confidence: float = Field(
        0.2,
        ge=0.01,
        le=0.99,
        description="lowest detection score reported; the gate acts from decision.min_detection_score",
    )
    min_face_px: int = Field(16, ge=1, le=2048, description="smallest face kept (box height, px)")
    margin: float = Field(
        0.15, ge=0.0, le=1.0, description="grow each face box by this share per side before classifying"
    )
    threads: int = Field(
        0, ge=0, le=64, description="threads of the detector's runtime, OpenCV or LiteRT (0 = one per core)"
    )
