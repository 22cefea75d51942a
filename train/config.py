"""Every training option in one validated object.

The command line is generated from these fields (see ``maskgate.edge.cli``),
so a default, a bound or a description is stated once, here, and the
resolved object is written into the run directory for reproducibility.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from maskgate.edge.core.errors import ConfigError
from maskgate.edge.core.settings import Section

# The manifest entries of the ImageNet backbone weights (no top; MobileNetV2 at alpha 1.0).
IMAGENET_WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
RESNET50_WEIGHTS = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
BACKBONE_WEIGHTS = {"mobilenet_v2": IMAGENET_WEIGHTS, "resnet50": RESNET50_WEIGHTS}


class TrainConfig(Section):
    data: Path = Field(description="folder with one subfolder of images per class")
    out: Path = Field(description="run directory to create (must not exist)")
    voc: Path | None = Field(
        None, description="Pascal VOC scenes (images/ + annotations/) whose face boxes are added as crops"
    )
    classes: Literal["auto", "2", "3"] = Field(
        "auto",
        description="classes to train: auto (the class folders of --data), 2 (with_mask, without_mask) "
        "or 3 (also mask_weared_incorrect, from --data and/or --voc)",
    )

    # model
    backbone: Literal["mobilenet_v2", "resnet50"] = Field(
        "mobilenet_v2", description="ImageNet backbone: mobilenet_v2 (the device's) or resnet50"
    )
    input_size: int = Field(224, ge=32, le=512, description="square input size in pixels")
    alpha: float = Field(1.0, gt=0.0, le=1.4, description="MobileNetV2 width multiplier")
    weights: str = Field(
        "imagenet",
        description="backbone weights: 'imagenet' (fetched and verified), 'none', or an .h5 path",
    )
    dense_units: int = Field(128, ge=0, le=4096, description="units of the hidden dense layer (0 = none)")
    dropout: float = Field(0.3, ge=0.0, lt=1.0, description="dropout before the output layer")

    # optimisation
    batch_size: int = Field(32, ge=1, le=1024, description="global batch size")
    epochs: int = Field(8, ge=0, le=1000, description="phase 1 epochs (frozen backbone)")
    learning_rate: float = Field(1e-3, gt=0, le=1.0, description="phase 1 learning rate")
    fine_tune_epochs: int = Field(12, ge=0, le=1000, description="phase 2 epochs (top blocks trainable)")
    fine_tune_learning_rate: float = Field(2e-5, gt=0, le=1.0, description="phase 2 learning rate")
    fine_tune_blocks: int = Field(
        6,
        ge=0,
        le=16,
        description="top backbone blocks (of 16) trained in phase 2: MobileNetV2's plus its last conv; "
        "ResNet50's bottleneck blocks (3 = the conv5 stage)",
    )
    patience: int = Field(4, ge=1, le=100, description="epochs without val_loss improvement before stopping")
    lr_patience: int = Field(2, ge=1, le=100, description="epochs without improvement before halving the LR")
    class_weights: bool = Field(True, description="weight classes inversely to their training frequency")

    # data
    val_fraction: float = Field(0.15, gt=0.0, lt=0.5, description="fraction of each class for validation")
    test_fraction: float = Field(0.15, gt=0.0, lt=0.5, description="fraction of each class for testing")
    seed: int = Field(1337, ge=0, description="seed for the split, shuffling and initialisation")
    max_per_class: int | None = Field(
        None, ge=3, description="use at most this many images per class (quick runs, demos)"
    )
    voc_margin: float = Field(0.15, ge=0.0, le=1.0, description="margin added around VOC face boxes")
    voc_min_size: int = Field(16, ge=1, le=1024, description="smallest VOC face (box height, px) kept")
    near_duplicate_bits: int = Field(
        5, ge=0, le=32, description="difference-hash bits within which images count as one photo (0 = off)"
    )
    family_pattern: str = Field(
        r"^augmented_image_",
        description="regex: files of a class whose names match are one family, kept on one side of the split",
    )
    threshold: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="p(with_mask) at which the gate counts a mask (default: chosen on the validation split)",
    )
    false_accept_cost: float = Field(
        5.0,
        ge=1.0,
        le=1000.0,
        description="how many false rejects one false accept is worth, when choosing the threshold",
    )
    workers: int = Field(0, ge=0, le=64, description="decode threads (0 = one per CPU core)")

    @field_validator("family_pattern")
    @classmethod
    def _valid_regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as e:
            raise ValueError(f"not a valid regular expression ({e})") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.val_fraction + self.test_fraction >= 0.8:
            raise ValueError("val_fraction + test_fraction must leave at least 20% for training")
        if self.epochs == 0 and (self.fine_tune_epochs == 0 or self.fine_tune_blocks == 0):
            raise ValueError("nothing to train: --epochs is 0 and phase 2 is off")
        if self.lr_patience >= self.patience:
            raise ValueError("--lr-patience must be below --patience, or the learning rate never drops")
        if self.backbone != "mobilenet_v2" and self.alpha != 1.0:
            raise ValueError(f"--alpha is MobileNetV2's width multiplier; {self.backbone} has none")
        return self

    def imagenet_entry(self) -> str:
        """The model-manifest entry of the backbone's ImageNet weights, for ``--weights imagenet``.

        The manifest holds MobileNetV2's at alpha 1.0 only; other widths are
        refused when they are asked for, not at parse time, so ``--weights
        PATH`` and ``--weights none`` still train them.
        """
        if self.alpha != 1.0:
            raise ConfigError(
                f"--alpha {self.alpha}: only alpha 1.0 ImageNet weights are in the model manifest; "
                "pass --weights PATH or --weights none"
            )
        return BACKBONE_WEIGHTS[self.backbone]


class EvaluateConfig(Section):
    model: Path = Field(description="run directory or .keras file, a model bundle, or a .tflite file")
    json_out: Path = Field(
        description="where to write the metrics (JSON)", json_schema_extra={"flag": "--json"}
    )
    data: Path | None = Field(None, description="folder with one subfolder of images per class")
    split: Literal["train", "val", "test"] | None = Field(
        None, description="instead of --data: this split of the model's own run (from its split.json)"
    )
    threshold: float | None = Field(
        None, gt=0.0, lt=1.0, description="p(with_mask) counted as masked (default: the run's, else 0.5)"
    )
    batch_size: int = Field(32, ge=1, le=1024, description="images per inference batch")

    @model_validator(mode="after")
    def _one_source(self) -> EvaluateConfig:
        if (self.data is None) == (self.split is None):
            raise ValueError("give exactly one of --data DIR or --split NAME")
        if self.json_out.is_dir():
            raise ValueError(f"--json {self.json_out} is a directory; name a file")
        return self


class ExplainConfig(Section):
    model: Path = Field(description="run directory or .keras file (Grad-CAM needs the Keras model)")
    source: list[Path] = Field(
        description="face crops: image files, folders (one level) or globs",
        json_schema_extra={"many": True, "alias_flags": ["--image"]},
    )
    out: Path = Field(description="folder to create for the PNGs and explain.json (must not exist)")
    opacity: float = Field(0.45, gt=0.0, lt=1.0, description="opacity of the heat map over the face")
    batch_size: int = Field(16, ge=1, le=1024, description="faces per gradient computation")
