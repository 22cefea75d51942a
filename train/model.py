"""MobileNetV2 face-mask classifier: ImageNet backbone, small head.

The model takes RGB pixels in 0..255 and normalises them itself (constants
from ``maskgate.edge.preprocess``): the int8 converter can then fold the
normalisation into the input quantisation, and the device feeds uint8 crops.
BatchNorm layers of the backbone stay frozen in both phases, which in Keras 3
also keeps them in inference mode (a non-trainable BatchNormalization uses its
moving statistics): with small batches, updating BN statistics wrecks
pretrained features. The ``training=False`` passed to the backbone documents
intent but is not what guarantees this: Keras 3 hands a nested functional
model the outer call's ``training`` value.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

from maskgate.edge.errors import ModelFileError
from maskgate.edge.preprocess import INPUT_OFFSET, INPUT_SCALE

from .config import IMAGENET_WEIGHTS  # noqa: F401 - re-exported: the weights this model is built for

BACKBONE = "mobilenetv2"


def build_classifier(
    num_classes: int,
    *,
    input_size: int = 224,
    alpha: float = 1.0,
    weights: Path | None = None,
    dense_units: int = 128,
    dropout: float = 0.3,
) -> keras.Model:
    """The classifier with a frozen backbone (phase 1); see ``unfreeze_top``."""
    shape = (input_size, input_size, 3)
    try:
        backbone = keras.applications.MobileNetV2(
            input_shape=shape, alpha=alpha, include_top=False, weights=None, name=BACKBONE
        )
        if weights is not None:
            backbone.load_weights(str(weights))
    except (ValueError, OSError) as e:
        detail = str(e).splitlines()[0][:160] if str(e) else e.__class__.__name__
        raise ModelFileError(
            f"weights file {weights} does not fit MobileNetV2 alpha={alpha} without top ({detail})"
        ) from e
    backbone.trainable = False

    inputs = keras.Input(shape=shape, name="image")
    x = layers.Rescaling(INPUT_SCALE, offset=INPUT_OFFSET, name="normalize")(inputs)
    x = backbone(x, training=False)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if dense_units:
        x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="maskgate_classifier")


def backbone_of(model: keras.Model) -> keras.Model:
    return model.get_layer(BACKBONE)


def unfreeze_top(model: keras.Model, blocks: int) -> int:
    """Make the top ``blocks`` inverted-residual blocks and the last conv trainable.

    BatchNorm layers stay frozen: their statistics and affine terms were
    learned on ImageNet-sized batches. Returns the number of trainable layers.
    """
    backbone = backbone_of(model)
    backbone.trainable = True
    first = 17 - blocks  # MobileNetV2 names its blocks block_1 .. block_16
    trainable = 0
    for layer in backbone.layers:
        name = layer.name
        top = blocks > 0 and (name.startswith("Conv_1") or _block_index(name) >= first)
        layer.trainable = top and not isinstance(layer, layers.BatchNormalization)
        trainable += layer.trainable
    return trainable


def _block_index(name: str) -> int:
    if name.startswith("block_"):
        try:
            return int(name.split("_")[1])
        except ValueError:
            return -1
    return -1


def augmentation(seed: int) -> keras.Sequential:
    """On-the-fly augmentation of 0..255 RGB batches, applied in the input pipeline only.

    Kept out of the model so the exported and converted graph has no random ops.
    Geometry stays mild: faces at a gate are upright and roughly centred.
    """
    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(0.05, fill_mode="reflect", seed=seed + 1),
            layers.RandomZoom((-0.15, 0.15), fill_mode="reflect", seed=seed + 2),
            layers.RandomTranslation(0.08, 0.08, fill_mode="reflect", seed=seed + 3),
            layers.RandomShear(x_factor=0.08, y_factor=0.08, fill_mode="reflect", seed=seed + 4),
            layers.RandomColorJitter(
                value_range=(0, 255),
                brightness_factor=0.2,
                contrast_factor=0.2,
                saturation_factor=(0.4, 0.6),
                hue_factor=0.03,
                seed=seed + 5,
            ),
        ],
        name="augmentation",
    )
