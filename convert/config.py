"""Every conversion option in one validated object (the CLI is generated from it)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from maskgate.edge.core.settings import Section
from maskgate.edge.core.sizes import check_sizes, parse_sizes


class ConvertConfig(Section):
    model: Path = Field(description="training run directory (or its model.keras)")
    out: Path = Field(description="bundle directory to create (must not exist)")
    representative: Path | None = Field(
        None, description="folder of images to calibrate int8 ranges on (default: the run's training split)"
    )
    samples: int = Field(300, ge=8, le=5000, description="calibration images, drawn stratified and seeded")
    verify_data: Path | None = Field(
        None, description="folder per class to verify on (default: the run's held-out test split)"
    )
    tolerance: float = Field(
        0.5,
        ge=0.0,
        le=100.0,
        description="refuse when int8 accuracy drops more than this (percentage points)",
    )
    float32: bool = Field(True, description="also write the float32 TFLite model into the bundle")
    float16: bool = Field(False, description="also write a float16-weight TFLite model")
    dynamic_range: bool = Field(False, description="also write a dynamic-range (int8 weights) TFLite model")
    latency_runs: int = Field(
        100, ge=0, le=10000, description="timed runs per model for the report (0 = skip)"
    )
    seed: int = Field(1337, ge=0, description="seed for drawing calibration images")


class DetectorConvertConfig(Section):
    out: Path = Field(description="bundle directory to create (must not exist)")
    representative: Path | None = Field(
        None,
        description="scene images to calibrate and verify on (default: $MASKGATE_SHARED/data/scenes/images)",
    )
    samples: int = Field(200, ge=8, le=5000, description="calibration images, drawn seeded")
    verify_images: int = Field(300, ge=10, le=10000, description="held-out images to verify on")
    sizes: list[tuple[int, int]] = Field(
        [(300, 300), (640, 480)],
        min_length=1,
        description="input sizes (WIDTHxHEIGHT, comma-separated) to calibrate, verify and time at",
    )
    verify_confidence: float = Field(
        0.5, ge=0.05, le=0.99, description="OpenCV detections from this score on must be found by int8"
    )
    tolerance: float = Field(
        0.97,
        ge=0.0,
        le=1.0,
        description="refuse when int8 finds fewer of OpenCV's faces than this, at any size",
    )
    float32: bool = Field(True, description="also write the float32 TFLite model into the bundle")
    latency_runs: int = Field(30, ge=0, le=10000, description="timed runs per model, size and thread count")
    seed: int = Field(1337, ge=0, description="seed for drawing calibration and verification images")

    _parse = field_validator("sizes", mode="before")(lambda v: parse_sizes(v))
    _check = field_validator("sizes")(lambda v: check_sizes(v))


class RetinaFaceConvertConfig(Section):
    out: Path = Field(description="bundle directory to create (must not exist)")
    representative: Path | None = Field(
        None,
        description="scene images, of which the 'tune' side of the project's scene split is used to "
        "calibrate and verify (default: $MASKGATE_SHARED/data/scenes/images)",
    )
    samples: int = Field(200, ge=8, le=5000, description="calibration scenes, drawn seeded")
    verify_images: int = Field(150, ge=10, le=10000, description="held-out scenes to verify on")
    max_side: int = Field(
        640, ge=32, le=4096, description="longest input side the device feeds (larger frames are scaled down)"
    )
    verify_confidence: float = Field(
        0.5, ge=0.05, le=0.99, description="float-model detections from this score on must be found by int8"
    )
    # int8 RetinaFace finds about 93 % of its float model's faces at the same score (scores move more
    # than the SSD's: a 0.25-wide MobileNet has few channels to average noise over); a conversion
    # without the rebuild's LeakyReLU split found 83 %. The default refuses that, not the model.
    tolerance: float = Field(
        0.90, ge=0.0, le=1.0, description="refuse when int8 finds fewer of the float model's faces than this"
    )
    latency_runs: int = Field(30, ge=0, le=10000, description="timed runs per model and thread count")
    seed: int = Field(1337, ge=0, description="seed for drawing calibration and verification scenes")


class SegmenterConvertConfig(Section):
    model: Path = Field(description="train-unet run directory (or its model.keras)")
    out: Path = Field(description="bundle directory to create (must not exist)")
    voc: Path | None = Field(
        None, description="the run's VOC folder, if it moved since training (default: the one in split.json)"
    )
    samples: int = Field(200, ge=8, le=5000, description="training scenes to calibrate on, drawn seeded")
    tolerance: float = Field(
        0.02,
        ge=0.0,
        le=1.0,
        description="refuse when int8 Dice against the true masks is this much below float's (test scenes)",
    )
    float32: bool = Field(True, description="also write the float32 TFLite model into the bundle")
    latency_runs: int = Field(30, ge=0, le=10000, description="timed runs per model and thread count")
    seed: int = Field(1337, ge=0, description="seed for drawing calibration scenes")
