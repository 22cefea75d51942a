"""Every option of ``maskgate train-unet`` in one validated object (the CLI is generated from it).

Kept apart from the training code so that building the command line imports
no TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from maskgate.edge.core.settings import Section

from ..config import IMAGENET_WEIGHTS


class SegmentTrainConfig(Section):
    voc: Path = Field(description="Pascal VOC scenes (images/ + annotations/); every annotated box is a face")
    out: Path = Field(description="run directory to create (must not exist)")

    # model
    input_size: int = Field(224, ge=64, le=512, description="square input size in pixels (a multiple of 32)")
    weights: str = Field(
        "imagenet",
        description="encoder weights: 'imagenet' (MobileNetV2 alpha 1.0, fetched and verified), 'none', "
        "or an .h5 path",
    )
    decoder_filters: int = Field(
        64, ge=8, le=512, description="decoder width: filters at 1/4 scale (x4 at 1/16, x2 at 1/8, /2 at 1/2)"
    )

    # optimisation
    batch_size: int = Field(16, ge=1, le=512, description="scenes per batch")
    epochs: int = Field(15, ge=0, le=1000, description="phase 1 epochs: encoder frozen, decoder trained")
    learning_rate: float = Field(1e-3, gt=0, le=1.0, description="phase 1 learning rate (Adam)")
    fine_tune_epochs: int = Field(
        25, ge=0, le=1000, description="phase 2 epochs: encoder trainable too (BatchNorm stays frozen)"
    )
    fine_tune_learning_rate: float = Field(1e-4, gt=0, le=1.0, description="phase 2 learning rate")
    dice_weight: float = Field(
        1.0,
        ge=0.0,
        le=100.0,
        description="loss = binary cross-entropy + this x (1 - soft Dice); 0 = BCE only",
    )
    patience: int = Field(
        5, ge=1, le=100, description="epochs without val_loss improvement before a phase stops"
    )
    augment: bool = Field(
        True, description="random flips, zoom and brightness/contrast, the same geometry for image and mask"
    )

    # data
    val_fraction: float = Field(0.15, gt=0.0, lt=0.5, description="fraction of scenes for validation")
    test_fraction: float = Field(0.15, gt=0.0, lt=0.5, description="fraction of scenes held out for testing")
    scene_split: bool = Field(
        False,
        description="split by the project's scene split (edge.core.scene_split): train and validation "
        "(--val-fraction of it) from the 'tune' side only, test = the 'report' side, so no scene a figure "
        "reports is trained or validated on (--test-fraction does not apply)",
    )
    seed: int = Field(
        1337, ge=0, description="seed for the split, shuffling, augmentation and initialisation"
    )
    max_scenes: int | None = Field(None, ge=3, description="use at most this many scenes (quick runs)")
    overlays: int = Field(6, ge=0, le=100, description="test scenes drawn with their masks into the report")
    workers: int = Field(0, ge=0, le=64, description="decode threads (0 = one per CPU core)")

    @field_validator("input_size")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        if value % 32:
            raise ValueError(f"must be a multiple of 32 (the encoder halves it five times), got {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SegmentTrainConfig:
        if self.val_fraction + self.test_fraction >= 0.8:
            raise ValueError("val_fraction + test_fraction must leave at least 20% for training")
        if self.epochs == 0 and self.fine_tune_epochs == 0:
            raise ValueError("nothing to train: --epochs and --fine-tune-epochs are both 0")
        if self.scene_split and "test_fraction" in self.model_fields_set:
            raise ValueError(
                "--test-fraction does not apply with --scene-split: the 'report' side is the test split"
            )
        return self

    def imagenet_entry(self) -> str:
        """The model-manifest entry of the encoder's ImageNet weights (MobileNetV2, alpha 1.0)."""
        return IMAGENET_WEIGHTS
