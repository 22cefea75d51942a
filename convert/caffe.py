"""OpenCV's ResNet-10 SSD face detector rebuilt as a Keras graph, weights and all.

The published model is a Caffe network (``deploy.prototxt`` + ``.caffemodel``).
Caffe itself is not needed: the prototxt is protobuf text, parsed here, and
the weights are read through OpenCV 4's own Caffe importer (``cv2.dnn``,
``Layer.blobs``), so what we rebuild is exactly what ``ssd-opencv`` runs.

The rebuilt graph takes uint8-range BGR pixels (the mean subtraction of
``blobFromImage`` is its first layer), is fully convolutional (any input size
that is a multiple of 4 gives OpenCV's outputs), and ends at the twelve
prediction heads: box offsets and face/background logits per feature map.
Prior boxes, decoding and non-maximum suppression happen on the device, in
numpy (``maskgate.edge.detectors.ssd_decoding``), from parameters this module reads off the
prototxt's PriorBox and DetectionOutput layers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maskgate.edge.core.errors import ModelFileError
from maskgate.edge.core.preprocess import SSD_MEAN_BGR as SSD_MEAN_BGR

# --- the prototxt: protobuf text format ----------------------------------------------------------

_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|([{}:])|([^\s{}:"#]+))')


def parse_prototxt(text: str) -> dict[str, list[Any]]:
    """Protobuf text as nested dicts; every field maps to the list of its values (fields repeat)."""
    tokens = [m.group(2) or m.group(3) or m.group(4) for m in _TOKEN.finditer(text) if not m.group(1)]
    tokens = [t for t in tokens if t]

    def value(tok: str) -> Any:
        if tok.startswith('"'):
            return tok[1:-1]
        if tok in ("true", "false"):
            return tok == "true"
        try:
            return int(tok)
        except ValueError:
            try:
                return float(tok)
            except ValueError:
                return tok  # an enum name such as CENTER_SIZE or MAX

    def message(i: int, closing: str | None) -> tuple[dict[str, list[Any]], int]:
        out: dict[str, list[Any]] = {}
        while i < len(tokens):
            tok = tokens[i]
            if tok == "}":
                if closing is None:
                    raise ValueError("unbalanced '}'")
                return out, i + 1
            name = tok
            i += 1
            if i < len(tokens) and tokens[i] == ":":
                i += 1
            if i < len(tokens) and tokens[i] == "{":
                child, i = message(i + 1, "}")
                out.setdefault(name, []).append(child)
            else:
                out.setdefault(name, []).append(value(tokens[i]))
                i += 1
        if closing is not None:
            raise ValueError("missing '}'")
        return out, i

    return message(0, None)[0]


def one(msg: dict[str, list[Any]], key: str, default: Any = None) -> Any:
    values = msg.get(key)
    return values[0] if values else default


# --- what the device needs to turn head outputs into boxes --------------------------------------


@dataclass(frozen=True)
class PriorSpec:
    """One PriorBox layer: the anchor boxes of one feature map (Caffe SSD semantics)."""

    head: str  # the feature map's name, e.g. conv4_3_norm
    min_sizes: list[float]
    max_sizes: list[float]
    aspect_ratios: list[float]  # as listed; flipped ratios are added when ``flip``
    flip: bool
    clip: bool
    variances: list[float]
    step: float
    offset: float


@dataclass(frozen=True)
class SsdSpec:
    heads: list[PriorSpec]  # in the order DetectionOutput concatenates them
    loc_heads: list[str]  # the convolution producing each head's box offsets
    conf_heads: list[str]  # ... and its class logits
    nms_threshold: float
    top_k: int
    keep_top_k: int
    confidence_threshold: float
    prototxt_layers: list[dict[str, Any]] = field(repr=False, default_factory=list)


def ssd_spec(prototxt: Path) -> SsdSpec:
    """Prior boxes and detection-output settings of an SSD prototxt, in head order."""
    try:
        net = parse_prototxt(Path(prototxt).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ModelFileError(f"{prototxt}: not a readable Caffe prototxt ({e})") from e
    layers = net.get("layer", [])
    producer = {top: layer for layer in layers for top in layer.get("top", [])}
    detection_layer = next((x for x in layers if one(x, "type") == "DetectionOutput"), None)
    if detection_layer is None or len(detection_layer.get("bottom", [])) != 3:
        raise ModelFileError(f"{prototxt}: no DetectionOutput layer with loc, conf and priors; not an SSD")

    def sources(blob: str) -> list[dict[str, Any]]:
        """The layers a DetectionOutput input is concatenated from, through reshapes and the softmax."""
        layer = producer[blob]
        while one(layer, "type") in ("Permute", "Flatten", "Reshape", "Softmax"):
            layer = producer[layer["bottom"][0]]
        if one(layer, "type") != "Concat":
            return [layer]
        found = []
        for bottom in layer["bottom"]:
            found += sources(bottom)
        return found

    loc, conf, priors = (sources(b) for b in detection_layer["bottom"])
    heads = []
    for layer in priors:
        if one(layer, "type") == "PriorBox":
            p = one(layer, "prior_box_param", {})
            heads.append(
                PriorSpec(
                    head=layer["bottom"][0],
                    min_sizes=[float(x) for x in p.get("min_size", [])],
                    max_sizes=[float(x) for x in p.get("max_size", [])],
                    aspect_ratios=[float(x) for x in p.get("aspect_ratio", [])],
                    flip=bool(one(p, "flip", True)),
                    clip=bool(one(p, "clip", False)),
                    variances=[float(x) for x in p.get("variance", [0.1])],
                    step=float(one(p, "step", 0.0)),
                    offset=float(one(p, "offset", 0.5)),
                )
            )
    if not (len(heads) == len(loc) == len(conf) == len(priors)):
        raise ModelFileError(f"{prototxt}: the SSD heads and prior boxes do not pair up")
    detection = one(detection_layer, "detection_output_param", {})
    nms = one(detection, "nms_param", {})
    return SsdSpec(
        heads=heads,
        loc_heads=[one(x, "top") if x.get("top") else one(x, "name") for x in loc],
        conf_heads=[one(x, "top") if x.get("top") else one(x, "name") for x in conf],
        # Caffe's defaults where the prototxt is silent (-1: no limit)
        nms_threshold=float(one(nms, "nms_threshold", 0.3)),
        top_k=int(one(nms, "top_k", -1)),
        keep_top_k=int(one(detection, "keep_top_k", -1)),
        confidence_threshold=float(one(detection, "confidence_threshold", 0.0)),
        prototxt_layers=layers,
    )


# --- the network as a small graph, simplified exactly, then as Keras --------------------------


@dataclass
class Node:
    """One operation of the rebuilt network, NHWC."""

    name: str
    op: str  # input, affine, conv, relu, maxpool, add, l2norm
    inputs: list[int]
    params: dict[str, Any] = field(default_factory=dict)


def _blobs(net, name: str) -> list[np.ndarray]:
    return [np.asarray(b, dtype=np.float32) for b in net.getLayer(net.getLayerId(name)).blobs]


def _batchnorm(blobs: list[np.ndarray], eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Caffe BatchNorm as scale/bias: blobs are mean, variance and their moving-average factor."""
    factor = float(blobs[2].ravel()[0]) if len(blobs) > 2 else 1.0
    factor = 1.0 / factor if factor != 0 else 0.0
    mean, var = blobs[0].ravel() * factor, blobs[1].ravel() * factor
    scale = 1.0 / np.sqrt(var + eps)
    return scale.astype(np.float32), (-mean * scale).astype(np.float32)


def caffe_graph(spec: SsdSpec, net) -> tuple[list[Node], list[int]]:
    """The prototxt's layers as nodes (weights from OpenCV), and the head nodes in output order."""
    nodes = [Node("image_bgr", "input", [])]
    mean = np.asarray(SSD_MEAN_BGR, np.float32)
    nodes.append(Node("mean", "affine", [0], {"scale": np.ones(3, np.float32), "bias": -mean}))
    latest = {"data": 1}  # blob name -> node producing its current value (Caffe layers work in place)

    def add(name: str, op: str, inputs: list[int], **params) -> int:
        nodes.append(Node(name, op, inputs, params))
        return len(nodes) - 1

    for layer in spec.prototxt_layers:
        name, kind = one(layer, "name"), one(layer, "type")
        missing = [b for b in layer.get("bottom", []) if b not in latest]
        if missing and kind not in (
            "PriorBox",
            "DetectionOutput",
            "Concat",
            "Flatten",
            "Permute",
            "Reshape",
            "Softmax",
        ):
            raise ModelFileError(f"layer {name} reads {missing[0]}, which no earlier layer writes")
        bottoms = [latest[b] for b in layer.get("bottom", []) if b in latest]
        if kind in ("PriorBox", "DetectionOutput", "Permute", "Flatten", "Concat", "Reshape", "Softmax"):
            continue  # the device's part (priors, decoding, NMS) or bookkeeping of the heads
        if kind == "BatchNorm":
            eps = float(one(one(layer, "batch_norm_param", {}), "eps", 1e-5))
            scale, bias = _batchnorm(_blobs(net, name), eps)
            out = add(name, "affine", bottoms, scale=scale, bias=bias)
        elif kind == "Scale":
            b = _blobs(net, name)
            bias = b[1].ravel() if len(b) > 1 else np.zeros(b[0].size, np.float32)
            out = add(name, "affine", bottoms, scale=b[0].ravel(), bias=bias)
        elif kind == "Convolution":
            p = one(layer, "convolution_param", {})
            b = _blobs(net, name)
            weights = b[0].transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)
            bias = (
                b[1].ravel() if bool(one(p, "bias_term", True)) else np.zeros(weights.shape[-1], np.float32)
            )
            out = add(
                name,
                "conv",
                bottoms,
                weights=weights,
                bias=bias,
                stride=int(one(p, "stride", 1)),
                pad=int(one(p, "pad", 0)),
                dilation=int(one(p, "dilation", 1)),
            )
        elif kind == "ReLU":
            out = add(name, "relu", bottoms)
        elif kind == "Pooling":
            p = one(layer, "pooling_param", {})
            if one(p, "pool", "MAX") != "MAX" or int(one(p, "pad", 0)):
                raise ModelFileError(f"pooling layer {name} is not supported")
            out = add(
                name, "maxpool", bottoms, size=int(one(p, "kernel_size")), stride=int(one(p, "stride", 1))
            )
        elif kind == "Eltwise":
            out = add(name, "add", bottoms)
        elif kind == "Normalize":
            p = one(layer, "norm_param", {})
            if one(p, "across_spatial", True) or one(p, "channel_shared", True):
                raise ModelFileError(
                    f"normalize layer {name}: only per-position, per-channel scaling is supported"
                )
            out = add(
                name, "l2norm", bottoms, scale=_blobs(net, name)[0].ravel(), eps=float(one(p, "eps", 1e-10))
            )
        else:
            raise ModelFileError(f"layer type {kind} ({name}) is not supported")
        for top in layer.get("top", []):
            latest[top] = out
    heads = [latest[n] for pair in zip(spec.loc_heads, spec.conf_heads, strict=True) for n in pair]
    return nodes, heads


def simplify(nodes: list[Node], outputs: list[int]) -> list[Node]:
    """Exact rewrites that save whole passes over feature maps on the device.

    An affine (BatchNorm, Scale, the mean subtraction) whose input nothing else
    reads merges with it when that input is another affine, and folds into the
    weights and bias when it is a convolution. Merged and folded nodes become
    ``identity`` and are skipped when building.
    """
    consumers: dict[int, list[int]] = {}
    for i, n in enumerate(nodes):
        for j in n.inputs:
            consumers.setdefault(j, []).append(i)

    def sole_input(i: int) -> int | None:
        n = nodes[i]
        src = n.inputs[0]
        only = consumers.get(src, []) == [i] and src not in outputs
        return src if only else None

    for i, n in enumerate(nodes):
        if n.op != "affine":
            continue
        src = sole_input(i)
        if src is None:
            continue
        s = nodes[src]
        if s.op == "affine":  # y = (x * a1 + b1) * a2 + b2
            n.params = {
                "scale": s.params["scale"] * n.params["scale"],
                "bias": s.params["bias"] * n.params["scale"] + n.params["bias"],
            }
        elif s.op == "conv":  # conv(x) * a + b: scale each output channel's weights and bias
            a, b = n.params["scale"], n.params["bias"]
            n.op, n.params = (
                "conv",
                dict(s.params, weights=s.params["weights"] * a, bias=s.params["bias"] * a + b),
            )
        else:
            continue
        n.inputs = s.inputs
        s.op, s.inputs = "identity", []
    return nodes


def to_keras(nodes: list[Node], outputs: list[int]):
    """Keras layers for the nodes; convolutions use "same" padding where it equals Caffe's."""
    import keras

    class ChannelAffine(keras.layers.Layer):
        """x * scale + bias per channel (an affine that could not be folded away)."""

        def __init__(self, scale, bias, **kw):
            super().__init__(**kw)
            self.scale = keras.ops.convert_to_tensor(np.reshape(scale, (1, 1, 1, -1)))
            self.bias = keras.ops.convert_to_tensor(np.reshape(bias, (1, 1, 1, -1)))

        def call(self, x):
            return x * self.scale + self.bias

    class DilatedConv(keras.layers.Layer):
        """A dilated convolution as one Conv2D op with dilations: Keras lowers dilation to
        SpaceToBatch/BatchToSpace, which the converter cannot fuse back when the input size is
        dynamic, leaving shape arithmetic and two copies in the int8 graph."""

        def __init__(self, weights, bias, dilation, **kw):
            super().__init__(**kw)
            self.w = keras.ops.convert_to_tensor(weights)
            self.b = keras.ops.convert_to_tensor(bias)
            self.dilation = dilation

        def call(self, x):
            import tensorflow as tf

            y = tf.nn.conv2d(x, self.w, strides=1, padding="SAME", dilations=self.dilation)
            return tf.nn.bias_add(y, self.b)

    tensors: dict[int, Any] = {}
    for i, n in enumerate(nodes):
        x = [tensors[j] for j in n.inputs]
        p = n.params
        if n.op == "identity":
            continue
        if n.op == "input":
            y = keras.Input(shape=(None, None, 3), name=n.name)  # 0..255 BGR, as blobFromImage sees it
        elif n.op == "affine":
            y = ChannelAffine(p["scale"], p["bias"], name=n.name)(x[0])
        elif n.op == "conv":
            w = p["weights"]
            k, s, pad, d = w.shape[0], p["stride"], p["pad"], p["dilation"]
            same = s == 1 and pad * 2 == d * (k - 1)  # symmetric padding that keeps the size: "same" exactly
            if d > 1 and same:
                tensors[i] = DilatedConv(w, p["bias"], d, name=n.name)(x[0])
                continue
            if pad and not same:
                x[0] = keras.layers.ZeroPadding2D(pad, name=f"{n.name}_pad")(x[0])
            conv = keras.layers.Conv2D(
                w.shape[-1], k, strides=s, dilation_rate=d, padding="same" if same else "valid", name=n.name
            )
            y = conv(x[0])
            conv.set_weights([w, p["bias"]])
        elif n.op == "relu":
            y = keras.layers.ReLU(name=n.name)(x[0])
        elif n.op == "maxpool":
            # Caffe rounds pooled sizes up; "same" does too for the even sizes this net sees (input % 4 == 0)
            y = keras.layers.MaxPooling2D(p["size"], strides=p["stride"], padding="same", name=n.name)(x[0])
        elif n.op == "add":
            y = keras.layers.Add(name=n.name)(x)
        elif n.op == "l2norm":

            def l2norm(t, scale=p["scale"], eps=p["eps"]):
                return t * keras.ops.rsqrt(keras.ops.sum(t * t, axis=-1, keepdims=True) + eps) * scale

            y = keras.layers.Lambda(l2norm, name=n.name)(x[0])
        else:
            raise ValueError(f"unknown node op {n.op}")
        tensors[i] = y
    return keras.Model(tensors[0], [tensors[j] for j in outputs], name="res10_ssd")


def build_keras(prototxt: Path, weights: Path, *, fold: bool = True):
    """The SSD up to its prediction heads, with OpenCV's weights; returns (model, head names).

    The model's outputs are, per PriorBox layer in order, the location head
    (N x H x W x A*4) and the confidence head (N x H x W x A*2, logits).
    ``fold=False`` keeps every Caffe layer as it is, for checking the folds.
    """
    import cv2

    spec = ssd_spec(prototxt)
    try:
        net = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
    except cv2.error as e:
        raise ModelFileError(f"{weights.name} cannot be read by OpenCV: {str(e).strip()[-200:]}") from e
    nodes, outputs = caffe_graph(spec, net)
    if fold:
        nodes = simplify(nodes, outputs)
    names = [n for pair in zip(spec.loc_heads, spec.conf_heads, strict=True) for n in pair]
    return to_keras(nodes, outputs), names
