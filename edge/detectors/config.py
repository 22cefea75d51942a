"""The ``[detector]`` section: which backend finds faces, with what input size and floors.

It lives with the detectors, not the gate, so a detector is built from its own
section alone; the gate's configuration tree (``edge.gate.config``) includes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from ..core.settings import Section

# Each backend's class, imported only when one is made (``registry.make_detector``), so naming
# them here (validation, --help) loads no numpy, OpenCV or LiteRT.
BACKENDS: dict[str, str] = {
    "retinaface-int8": "maskgate.edge.detectors.retinaface:RetinaFaceDetector",
    "ssd-int8": "maskgate.edge.detectors.ssd:SsdInt8Detector",
    "ssd-opencv": "maskgate.edge.detectors.ssd:SsdOpenCvDetector",
    "unet": "maskgate.edge.detectors.unet:UnetDetector",
}

# The detection score from which the gate acts (``decision.min_detection_score``) unless set, per
# backend, since scores mean different things to different networks. Chosen on the tune side of the
# scene split (docs/runtime.md): the lowest score whose false boxes of 40 px and more per scene do
# not exceed those of the SSD at its long-standing 0.5.
GATE_MIN_SCORE: dict[str, float] = {"retinaface-int8": 0.7, "ssd-int8": 0.5, "ssd-opencv": 0.5, "unet": 0.5}

Backend = Literal[tuple(BACKENDS)]  # type: ignore[valid-type]
Side = Annotated[int, Field(ge=32, le=4096)]


class DetectorConfig(Section):
    backend: Backend = Field(
        "retinaface-int8",
        description="face detector: 'retinaface-int8' (RetinaFace-MobileNet0.25 in int8 on LiteRT, with "
        "landmarks), 'ssd-int8' (OpenCV's SSD in int8 on LiteRT), 'ssd-opencv' (the SSD in float, "
        "cv2.dnn) or 'unet' (face regions of an int8 U-Net segmenter on LiteRT)",
    )
    bundle: Path | None = Field(
        None,
        description="retinaface-int8, ssd-int8: detector bundle folder (default: the one shipped for the "
        "backend)",
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
    input_size: tuple[Side, Side] | Literal["frame"] | None = Field(
        None,
        description="detector input [width, height] in px, or 'frame' for the frame's own size, which "
        "finds smaller faces at a higher cost; default: the backend's own ('frame' for retinaface-int8, "
        "[300, 300] for the SSDs, as published)",
    )
    max_side: int = Field(
        640,
        ge=32,
        le=4096,
        description="retinaface-int8 at input_size 'frame': larger frames are scaled down to this longer "
        "side, so a 1080p camera costs what 640 px does",
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

    @model_validator(mode="after")
    def _input_fits_the_backend(self) -> DetectorConfig:
        fixed = isinstance(self.input_size, tuple)
        if self.backend == "retinaface-int8" and fixed and any(v % 32 for v in self.input_size):
            raise ValueError(
                f"input_size {list(self.input_size)}: retinaface-int8 takes sides that are multiples of "
                "32, or 'frame'"
            )
        return self
