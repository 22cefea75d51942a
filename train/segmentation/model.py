"""A U-Net that segments faces in whole scenes: MobileNetV2 encoder, light decoder.

Encoder: ImageNet MobileNetV2 (alpha 1.0), cut at five depths whose
activations feed the decoder as skip connections, from 1/2 to 1/32 of the
input. Decoder: four blocks, each doubling the resolution (bilinear), joining
the encoder's activation of that scale and mixing them with a depthwise-
separable 3x3 convolution (BatchNorm, ReLU); plain 3x3 convolutions at 1/2
scale would cost more than the whole encoder. The decoder's BatchNorm
statistics move with momentum 0.9, not Keras's 0.99: with some thirty batches
an epoch, 0.99 leaves them near their initial values for many epochs, and the
model that validates (on moving statistics) predicts no face at all. A final bilinear upsampling and
3x3 convolution give one logit per input pixel and a sigmoid the face
probability.

Like the classifier, the model takes RGB pixels 0..255 and normalises them
itself (constants from ``maskgate.edge.core.preprocess``), so int8 conversion folds
the normalisation into the input quantisation and the device feeds uint8
scenes. Every op here has an int8 LiteRT kernel (resize bilinear,
concatenation, depthwise and 1x1 convolutions, logistic).
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf
from keras import layers

from maskgate.edge.core.errors import ModelFileError, first_line
from maskgate.edge.core.preprocess import INPUT_OFFSET, INPUT_SCALE

ENCODER = "encoder"
# MobileNetV2 activations at 1/2, 1/4, 1/8, 1/16 and 1/32 of the input (the usual U-Net cut points).
SKIPS = (
    "block_1_expand_relu",
    "block_3_expand_relu",
    "block_6_expand_relu",
    "block_13_expand_relu",
    "block_16_project",
)


def build_unet(
    *, input_size: int = 224, weights: Path | None = None, decoder_filters: int = 64
) -> keras.Model:
    """The U-Net with its encoder frozen (phase 1); see ``unfreeze_encoder``."""
    shape = (input_size, input_size, 3)
    try:
        base = keras.applications.MobileNetV2(input_shape=shape, alpha=1.0, include_top=False, weights=None)
        if weights is not None:
            base.load_weights(str(weights))
    except (ValueError, OSError) as e:
        detail = first_line(e)
        raise ModelFileError(
            f"weights file {weights} does not fit MobileNetV2 alpha=1.0 without top ({detail})"
        ) from e
    encoder = keras.Model(base.input, [base.get_layer(n).output for n in SKIPS], name=ENCODER)
    encoder.trainable = False

    inputs = keras.Input(shape=shape, name="image")
    x = layers.Rescaling(INPUT_SCALE, offset=INPUT_OFFSET, name="normalize")(inputs)
    *skips, x = encoder(x, training=False)
    widths = (4 * decoder_filters, 2 * decoder_filters, decoder_filters, max(8, decoder_filters // 2))
    for skip, filters in zip(reversed(skips), widths, strict=True):
        scale = input_size // skip.shape[1]
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"up_{scale}")(x)
        x = layers.Concatenate(name=f"join_{scale}")([x, skip])
        x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, name=f"mix_{scale}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"mix_{scale}_bn")(x)
        x = layers.ReLU(name=f"mix_{scale}_relu")(x)
    x = layers.UpSampling2D(2, interpolation="bilinear", name="up_1")(x)
    x = layers.Conv2D(1, 3, padding="same", name="logit")(x)
    outputs = layers.Activation("sigmoid", name="face_probability")(x)
    return keras.Model(inputs, outputs, name="maskgate_unet")


def unfreeze_encoder(model: keras.Model) -> int:
    """Make the encoder trainable except its BatchNorm layers; returns the number of trainable layers.

    BatchNorm keeps its ImageNet statistics: with batches of a dozen scenes,
    updated statistics would be noise (and a frozen Keras 3 BatchNormalization
    also runs in inference mode).
    """
    encoder = model.get_layer(ENCODER)
    encoder.trainable = True
    n = 0
    for layer in encoder.layers:
        layer.trainable = not isinstance(layer, layers.BatchNormalization)
        n += layer.trainable
    return n


@keras.saving.register_keras_serializable(package="maskgate")
class BceDiceLoss(keras.losses.Loss):
    """Binary cross-entropy per pixel plus ``dice_weight`` x (1 - soft Dice) per scene.

    Faces cover a few percent of a scene's pixels; cross-entropy alone is
    content to predict background, while the Dice term scores the face pixels
    as a set. The +1 smoothing keeps a scene without faces finite.
    """

    def __init__(self, dice_weight: float = 1.0, name: str = "bce_dice", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.dice_weight = float(dice_weight)

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, y_pred.dtype)
        bce = tf.reduce_mean(keras.losses.binary_crossentropy(y_true, y_pred), axis=[1, 2])
        if not self.dice_weight:
            return bce
        inter = tf.reduce_sum(y_true * y_pred, axis=[1, 2, 3])
        total = tf.reduce_sum(y_true, axis=[1, 2, 3]) + tf.reduce_sum(y_pred, axis=[1, 2, 3])
        dice = (2.0 * inter + 1.0) / (total + 1.0)
        return bce + self.dice_weight * (1.0 - dice)

    def get_config(self) -> dict:
        return super().get_config() | {"dice_weight": self.dice_weight}


def augment(image: tf.Tensor, mask: tf.Tensor, *, seed: int) -> tuple[tf.Tensor, tf.Tensor]:
    """One random view of a scene: the same flip and zoom for image and mask, colour for the image.

    ``image`` is H x W x 3 float 0..255, ``mask`` H x W x 1 float 0/1. The zoom
    crops 75-100 % of each side at a random place and resizes back: faces
    appear larger and shifted, as when a person steps closer. The mask is
    resized with the image and re-binarised at 0.5, the rule it was drawn by.
    Kept out of the model so the converted graph has no random ops.
    """
    size = tf.shape(image)[0:2]
    flip = tf.random.uniform((), seed=seed) < 0.5
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
    mask = tf.cond(flip, lambda: tf.reverse(mask, [1]), lambda: mask)
    side = tf.random.uniform((2,), 0.75, 1.0, seed=seed + 1)
    start = tf.random.uniform((2,), 0.0, 1.0, seed=seed + 2) * (1.0 - side)
    box = tf.concat([start, start + side], 0)[None]  # y1, x1, y2, x2 in 0..1
    both = tf.concat([image, mask], -1)[None]
    both = tf.image.crop_and_resize(both, box, [0], size)[0]
    image, mask = both[..., :3], tf.cast(both[..., 3:] >= 0.5, tf.float32)
    image = tf.image.random_brightness(image, 0.15 * 255, seed=seed + 3)
    image = tf.image.random_contrast(image, 0.8, 1.2, seed=seed + 4)
    return tf.clip_by_value(image, 0.0, 255.0), mask
