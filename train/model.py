"""The face-mask classifier: an ImageNet backbone and a small head.

The model takes RGB pixels in 0..255 and normalises them itself, as its
backbone's ImageNet weights expect (``maskgate.train.backbones``): the int8
converter can then fold the normalisation into the input quantisation, and
the device feeds uint8 crops whatever the backbone. MobileNetV2 is the
device's backbone; ResNet50 is there to compare against.
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

from maskgate.edge.core.errors import ModelFileError, first_line

from . import backbones
from .config import IMAGENET_WEIGHTS  # noqa: F401 - re-exported: the weights this model is built for

BACKBONE = "mobilenetv2"  # the nested MobileNetV2's name, as older code looks it up


def build_classifier(
    num_classes: int,
    *,
    backbone: str = "mobilenet_v2",
    input_size: int = 224,
    alpha: float = 1.0,
    weights: Path | None = None,
    dense_units: int = 128,
    dropout: float = 0.3,
) -> keras.Model:
    """The classifier with a frozen backbone (phase 1); see ``unfreeze_top``."""
    spec = backbones.get(backbone)
    shape = (input_size, input_size, 3)
    base = spec.build(shape, alpha=alpha)
    if weights is not None:
        try:
            base.load_weights(str(weights))
        except (ValueError, OSError) as e:
            detail = first_line(e)
            what = f"MobileNetV2 alpha={alpha}" if spec.name == "mobilenet_v2" else spec.title
            raise ModelFileError(f"weights file {weights} does not fit {what} without top ({detail})") from e
    base.trainable = False

    inputs = keras.Input(shape=shape, name="image")
    x = spec.normalization()(inputs)
    x = base(x, training=False)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if dense_units:
        x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="maskgate_classifier")


def backbone_spec(model: keras.Model) -> backbones.Backbone:
    """Which backbone ``model`` was built on."""
    names = {layer.name for layer in model.layers}
    for spec in backbones.BACKBONES.values():
        if spec.layer_name in names:
            return spec
    raise ValueError(f"model {model.name} holds none of the backbones {', '.join(backbones.BACKBONES)}")


def backbone_of(model: keras.Model) -> keras.Model:
    return model.get_layer(backbone_spec(model).layer_name)


def unfreeze_top(model: keras.Model, blocks: int) -> int:
    """Make the top ``blocks`` (of 16) backbone blocks trainable; see ``maskgate.train.backbones``.

    MobileNetV2: inverted-residual blocks, with the last conv; ResNet50:
    bottleneck blocks, 3 being the conv5 stage. BatchNorm layers stay frozen:
    their statistics and affine terms were learned on ImageNet-sized batches.
    Returns the number of trainable layers.
    """
    spec = backbone_spec(model)
    backbone = model.get_layer(spec.layer_name)
    backbone.trainable = True
    first = backbones.BLOCKS + 1 - blocks
    trainable = 0
    for layer in backbone.layers:
        top = blocks > 0 and spec.block_index(layer.name) >= first
        layer.trainable = top and not isinstance(layer, layers.BatchNormalization)
        trainable += layer.trainable
    return trainable


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
