"""The ImageNet backbones a classifier can be built on, one builder each.

Every backbone here comes with three things, in the manner of
``keras.applications``: the network without its top (``mobilenet_v2``,
``resnet50``), the input normalisation its ImageNet weights expect, as a
layer (``*_normalization``), and what "the top ``n`` blocks" means for
fine-tuning (``*_block_index``). The classifier puts the normalisation inside
the model, because the device always feeds uint8 RGB crops
(``maskgate.edge.core.preprocess.prepare_face``) whatever the backbone, and an int8
converter folds a first affine layer into the input quantisation.

Both backbones have 16 blocks, numbered from the input: MobileNetV2's
inverted-residual blocks ``block_1`` .. ``block_16`` (``Conv1`` and the
expansion-free first block are its stem, its last conv ``Conv_1`` goes with
the top block), and ResNet50's bottleneck blocks ``conv2_block1`` ..
``conv5_block3`` (3 + 4 + 6 + 3), so ``--fine-tune-blocks 3`` is exactly its
``conv5`` stage.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
from keras import layers

from maskgate.edge.core.preprocess import INPUT_OFFSET, INPUT_SCALE

from .config import BACKBONE_WEIGHTS

BLOCKS = 16  # blocks of either backbone; --fine-tune-blocks counts them from the top

# ---------------------------------------------------------------- MobileNetV2


def mobilenet_v2(input_shape: tuple[int, int, int], *, alpha: float = 1.0) -> keras.Model:
    """MobileNetV2 without top and without weights (the classifier loads them, verified)."""
    return keras.applications.MobileNetV2(
        input_shape=input_shape, alpha=alpha, include_top=False, weights=None, name="mobilenetv2"
    )


def mobilenet_v2_normalization() -> layers.Layer:
    """RGB 0..255 to [-1, 1], as MobileNetV2's ImageNet weights expect (``x / 127.5 - 1``)."""
    return layers.Rescaling(INPUT_SCALE, offset=INPUT_OFFSET, name="normalize")


def mobilenet_v2_block_index(name: str) -> int:
    """1..16 for the layers of ``block_<n>`` and 16 for the last conv ``Conv_1``; 0 for the stem."""
    if name.startswith("Conv_1"):
        return BLOCKS
    m = re.match(r"block_(\d+)_", name)
    return int(m.group(1)) if m else 0


# ---------------------------------------------------------------- ResNet50

# Caffe-style ImageNet preprocessing of the original ResNet weights: BGR order, mean subtracted per
# channel, no scaling (what ``keras.applications.resnet50.preprocess_input`` does outside a model).
RESNET50_MEAN_BGR = (103.939, 116.779, 123.68)


def resnet50(input_shape: tuple[int, int, int]) -> keras.Model:
    """ResNet50 (v1) without top and without weights (the classifier loads them, verified)."""
    return keras.applications.ResNet50(
        input_shape=input_shape, include_top=False, weights=None, name="resnet50"
    )


def resnet50_normalization() -> layers.Layer:
    """RGB 0..255 to caffe-style BGR minus the ImageNet mean, as one fixed 1x1 convolution.

    A channel permutation and a bias are exactly a 1x1 convolution; written so,
    the model saves and loads without custom code, and it converts to int8 like
    any other convolution. Never trained.
    """
    permute = np.zeros((1, 1, 3, 3), np.float32)
    for rgb, bgr in ((0, 2), (1, 1), (2, 0)):
        permute[0, 0, rgb, bgr] = 1.0
    return layers.Conv2D(
        3,
        1,
        name="normalize",
        trainable=False,
        kernel_initializer=keras.initializers.Constant(permute),
        bias_initializer=keras.initializers.Constant(-np.array(RESNET50_MEAN_BGR, np.float32)),
    )


def resnet50_block_index(name: str) -> int:
    """1..16 for the layers of ``conv2_block1`` .. ``conv5_block3``; 0 for the stem (``conv1``, ``pool1``)."""
    m = re.match(r"conv([2-5])_block(\d+)_", name)
    if not m:
        return 0
    first_of_stage = {2: 1, 3: 4, 4: 8, 5: 14}  # stages of 3, 4, 6 and 3 blocks
    return first_of_stage[int(m.group(1))] + int(m.group(2)) - 1


# ---------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Backbone:
    name: str  # the --backbone value
    layer_name: str  # the nested model's name inside the classifier
    title: str  # as reports and bundles name it
    build: Callable[..., keras.Model]
    normalization: Callable[[], layers.Layer]
    block_index: Callable[[str], int]
    normalization_info: dict  # what config.json records about the layer above

    @property
    def weights_file(self) -> str:
        """The model-manifest entry holding its ImageNet weights (no top)."""
        return BACKBONE_WEIGHTS[self.name]


BACKBONES: dict[str, Backbone] = {
    "mobilenet_v2": Backbone(
        name="mobilenet_v2",
        layer_name="mobilenetv2",
        title="MobileNetV2",
        build=lambda shape, alpha=1.0: mobilenet_v2(shape, alpha=alpha),
        normalization=mobilenet_v2_normalization,
        block_index=mobilenet_v2_block_index,
        normalization_info={"scale": INPUT_SCALE, "offset": INPUT_OFFSET, "inside_model": True},
    ),
    "resnet50": Backbone(
        name="resnet50",
        layer_name="resnet50",
        title="ResNet50",
        build=lambda shape, alpha=1.0: resnet50(shape),
        normalization=resnet50_normalization,
        block_index=resnet50_block_index,
        normalization_info={
            "mode": "caffe",
            "color_order": "BGR",
            "mean": list(RESNET50_MEAN_BGR),
            "inside_model": True,
        },
    ),
}


def get(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; one of {', '.join(BACKBONES)}") from None
