"""The tools' own options, as settings models the command line is built from.

Kept apart from the tools themselves so that ``maskgate bench --help`` builds
its parser without loading numpy, OpenCV or LiteRT.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from ..core.settings import Section
from ..core.sizes import check_sizes, parse_sizes


def _int_list(value: Any) -> Any:
    return [int(v) for v in value.split(",") if v.strip()] if isinstance(value, str) else value


class BenchConfig(Section):
    source: str = Field(
        "picamera", description="image file, folder or glob; a video; a camera index; a URL; 'picamera'"
    )
    keras: Path | None = Field(
        None,
        description="a .keras model or training run: adds the Keras model.predict reference (TensorFlow)",
    )
    aizoo: bool = Field(
        False,
        description="adds the AIZOO single-stage mask detector as a reference (OpenCV float DNN; its files "
        "from maskgate models fetch --for bench)",
    )
    frames: int = Field(200, ge=5, le=100_000, description="frames to measure on")
    duration: float | None = Field(
        None,
        gt=0,
        le=86_400,
        description="instead of running all frames, stop each measurement after S seconds",
    )
    warmup: int = Field(5, ge=0, le=1000, description="untimed runs before each measurement")
    threads: list[int] = Field(
        [os.cpu_count() or 1], min_length=1, description="thread counts to measure at, e.g. 1,2,4"
    )
    sizes: list[tuple[int, int]] = Field(
        [(300, 300), (640, 480)], min_length=1, description="detector input sizes, e.g. 300x300,640x480"
    )
    voc: Path | None = Field(
        None, description="VOC folder annotating the source's images: adds recall and the scenes metric"
    )
    scenes: Literal["tune", "report"] | None = Field(
        None,
        description="with --voc, score only the scenes on this side of the scene split (all are timed)",
    )
    json_out: Path | None = Field(
        None, description="write the figures as JSON", json_schema_extra={"flag": "--json"}
    )
    plot: Path | None = Field(None, description="write a PNG of latency per stage per variant (matplotlib)")

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, value: Any) -> Any:
        try:
            return _int_list(value)
        except ValueError:
            raise ValueError("expected thread counts such as 1,2,4") from None

    @field_validator("threads")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(t < 1 or t > 64 for t in value):
            raise ValueError("thread counts must be 1 to 64")
        return value

    _parse_sizes = field_validator("sizes", mode="before")(lambda v: parse_sizes(v))
    _check_sizes = field_validator("sizes")(lambda v: check_sizes(v))


class CropFacesConfig(Section):
    """crop-faces' own options; the detector, classifier and margin are the gate's settings."""

    source: str = Field(description="folder of photos (one level), an image file or a glob")
    out: Path = Field(description="folder to create for the crops, crops.csv and summary.json")
    classify: bool = Field(False, description="sort crops into a folder per class by the classifier")
    min_size: int = Field(32, ge=1, le=4096, description="smallest face kept (detector box height, px)")
