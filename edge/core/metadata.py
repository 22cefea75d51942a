"""What a bundle's ``metadata.json`` says, as one validated model per kind of bundle.

A bundle crosses a boundary (a workstation writes it, a Pi at a door trusts
it), so its description is typed and range-checked where it is read: a
threshold of -1 or an SSD head without variances is refused at start-up, not
discovered as a door that opens for everyone. Converters fill these models and
``load_bundle`` validates them; the same key means the same thing in every
kind (``metrics.training`` is the float model's figures from its run,
``metrics.verification`` the int8 model checked against the float one).

Informational parts (metrics, timings, provenance, library versions) are free
JSON objects: the device never acts on them. Everything the device acts on is
a typed field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

FORMAT = "maskgate-bundle"
VERSION = 1

Probability = Annotated[float, Field(gt=0.0, lt=1.0)]
FileName = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^/\\\x00]+$")]
Side = Annotated[int, Field(ge=8, le=4096)]
Dtype = Literal["uint8", "int8", "float32"]
ClassName = Annotated[str, Field(min_length=1, max_length=64)]


def _square(size: tuple[int, int]) -> tuple[int, int]:
    if size[0] != size[1]:
        raise ValueError(f"the model takes square input (faces, scenes stretched), not {size[0]}x{size[1]}")
    return size


SquareSize = Annotated[tuple[Side, Side], AfterValidator(_square)]


class Strict(BaseModel):
    """No unknown keys, no coercion of a string into a number, no change after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Quantization(Strict):
    scale: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
    zero_point: Annotated[int, Field(ge=-128, le=255)]


class Metrics(BaseModel):
    """``training``: the float model's figures on its run's test split (none for third-party
    models); ``verification``: the int8 model against its float original."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    training: dict[str, Any] | None = None
    verification: dict[str, Any] = Field(default_factory=dict)


class _Common(Strict):
    format: Literal["maskgate-bundle"]
    version: Literal[1]
    model: FileName
    float_model: FileName | None = None
    classes: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=64)]], Field(min_length=1, max_length=64)
    ]
    # The probability from which the model's output counts as positive: masked (classifier), a face
    # (detector, as verified), a face pixel (segmenter). The device's own setting may override it.
    threshold: Probability
    # Compared with what this maskgate does (``preprocess.describe*``) by ``load_bundle``.
    preprocessing: dict[str, Any]
    metrics: Metrics = Metrics()
    latency_ms_on_converting_machine: dict[str, Any] = Field(default_factory=dict)
    source: dict[str, Any] = Field(default_factory=dict)
    libraries: dict[str, str] = Field(default_factory=dict)
    created: str = ""

    @field_validator("classes")
    @classmethod
    def _distinct(cls, classes: list[str]) -> list[str]:
        if len(set(classes)) != len(classes):
            raise ValueError(f"classes {classes} name one class twice")
        return classes

    @property
    def input_size(self) -> int:
        """The square input side of a fixed-size model."""
        size = self.input.size
        if size is None:
            raise ValueError(f"a {self.kind} bundle of dynamic input size has no fixed input side")
        return int(size[0])


# --- classifier ---------------------------------------------------------------------------------


class ClassifierInput(Strict):
    size: SquareSize
    dtype: Dtype
    quantization: Quantization


class ClassifierOutput(Strict):
    dtype: Dtype
    quantization: Quantization


class ClassifierMetadata(_Common):
    """A face-mask classifier: S x S RGB faces in, one probability per class out."""

    kind: Literal["classifier"]
    input: ClassifierInput
    output: ClassifierOutput


# --- detector (SSD) -----------------------------------------------------------------------------

PositiveSize = Annotated[float, Field(gt=0.0, le=4096.0, allow_inf_nan=False)]


class SsdHead(Strict):
    """One feature map's prior boxes (Caffe's PriorBox), as ``ssd_decoding.Head`` uses them."""

    min_sizes: Annotated[list[PositiveSize], Field(min_length=1, max_length=8)]
    max_sizes: Annotated[list[PositiveSize], Field(max_length=8)] = []
    aspect_ratios: Annotated[list[Annotated[float, Field(gt=0.0, le=16.0)]], Field(max_length=8)] = []
    flip: bool
    clip: bool
    variances: Annotated[list[Annotated[float, Field(gt=0.0, le=10.0)]], Field(min_length=4, max_length=4)]
    step: Annotated[float, Field(ge=0.0, le=4096.0)]
    offset: Annotated[float, Field(ge=0.0, le=1.0)]
    name: str = ""

    @model_validator(mode="after")
    def _max_sizes(self) -> SsdHead:
        if len(self.max_sizes) > len(self.min_sizes):
            raise ValueError("more max_sizes than min_sizes")
        if any(m <= s for s, m in zip(self.min_sizes, self.max_sizes, strict=False)):
            raise ValueError("each max_size must exceed its min_size")
        return self


class SsdSpec(Strict):
    """The SSD's heads, which interpreter output is which, and Caffe's DetectionOutput limits."""

    heads: Annotated[list[SsdHead], Field(min_length=1, max_length=16, description="the SSD's prior boxes")]
    # interpreter output index of loc0, conf0, loc1, conf1, ...
    outputs: list[Annotated[int, Field(ge=0)]] = Field(description="the SSD's output order")
    nms_threshold: Annotated[float, Field(gt=0.0, le=1.0)]
    top_k: Annotated[int, Field(ge=-1, le=100_000)]
    keep_top_k: Annotated[int, Field(ge=-1, le=100_000)]
    confidence_threshold: Annotated[float, Field(ge=0.0, lt=1.0)]

    @model_validator(mode="after")
    def _outputs(self) -> SsdSpec:
        n = 2 * len(self.heads)
        if sorted(self.outputs) != list(range(n)):
            raise ValueError(f"outputs must order the {n} head outputs (0..{n - 1}) once each")
        return self


LANDMARKS = ("right_eye", "left_eye", "nose", "right_mouth", "left_mouth")  # as RetinaFace predicts them


AnchorSizes = Annotated[list[PositiveSize], Field(min_length=1, max_length=8)]


class RetinaFaceSpec(Strict):
    """RetinaFace's anchors per feature map, which interpreter output is which, and its NMS limits."""

    min_sizes: Annotated[list[AnchorSizes], Field(min_length=1, max_length=8)]
    steps: Annotated[list[Annotated[int, Field(ge=1, le=1024)]], Field(min_length=1, max_length=8)]
    variances: tuple[Annotated[float, Field(gt=0.0, le=10.0)], Annotated[float, Field(gt=0.0, le=10.0)]]
    # interpreter output index of loc0, conf0, landmarks0, loc1, ... (logits, not probabilities)
    outputs: list[Annotated[int, Field(ge=0)]] = Field(description="RetinaFace's output order")
    landmarks: tuple[str, str, str, str, str] = LANDMARKS
    nms_threshold: Annotated[float, Field(gt=0.0, le=1.0)]
    top_k: Annotated[int, Field(ge=1, le=100_000)]
    keep_top_k: Annotated[int, Field(ge=1, le=100_000)]
    confidence_threshold: Annotated[float, Field(ge=0.0, lt=1.0)]

    @model_validator(mode="after")
    def _levels(self) -> RetinaFaceSpec:
        if len(self.min_sizes) != len(self.steps):
            raise ValueError(f"{len(self.min_sizes)} anchor size lists for {len(self.steps)} steps")
        n = 3 * len(self.steps)
        if sorted(self.outputs) != list(range(n)):
            raise ValueError(f"outputs must order the {n} head outputs (0..{n - 1}) once each")
        return self


class DetectorInput(Strict):
    dtype: Literal["uint8"]
    size: tuple[Side, Side] | None = None  # None: any size, a multiple of size_multiple
    size_multiple: Annotated[int, Field(ge=1, le=64)]
    layout: Literal["NHWC"]
    # RetinaFace: the frame's own size by default, scaled down to this longer side at most
    max_side: Annotated[int, Field(ge=32, le=4096)] | None = None


class DetectorMetadata(_Common):
    """A face detector: a BGR frame in, head outputs out (decoded on the device): an SSD's, or
    RetinaFace's (boxes and five landmarks)."""

    kind: Literal["detector"]
    input: DetectorInput
    ssd: SsdSpec | None = Field(None, description="the SSD's prior boxes and output order")
    retinaface: RetinaFaceSpec | None = Field(None, description="RetinaFace's anchors and output order")

    @model_validator(mode="after")
    def _one_network(self) -> DetectorMetadata:
        if (self.ssd is None) == (self.retinaface is None):
            raise ValueError("a detector bundle describes exactly one network: 'ssd' or 'retinaface'")
        return self

    @property
    def network(self) -> str:
        """Which detector network the bundle holds: ``ssd`` or ``retinaface``."""
        return "ssd" if self.ssd is not None else "retinaface"

    @property
    def output_order(self) -> list[int]:
        return list((self.ssd or self.retinaface).outputs)


# --- segmenter ----------------------------------------------------------------------------------


class SegmenterInput(Strict):
    size: SquareSize
    dtype: Literal["uint8"]
    layout: Literal["NHWC"]
    quantization: Quantization


class SegmenterOutput(Strict):
    dtype: Dtype
    shape: list[Annotated[int, Field(ge=1)]]
    meaning: str = ""
    quantization: Quantization


class SegmenterMetadata(_Common):
    """A face segmenter: an S x S RGB scene in, a face probability per pixel out."""

    kind: Literal["segmenter"]
    input: SegmenterInput
    output: SegmenterOutput
    segmenter: dict[str, Any] = Field(default_factory=dict)


BundleMetadata = Annotated[
    ClassifierMetadata | DetectorMetadata | SegmenterMetadata, Field(discriminator="kind")
]
KINDS = ("classifier", "detector", "segmenter")
MODELS: dict[str, type[_Common]] = {
    "classifier": ClassifierMetadata,
    "detector": DetectorMetadata,
    "segmenter": SegmenterMetadata,
}
