"""Every conversion option in one validated object (the CLI is generated from it)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class ConvertConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

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
