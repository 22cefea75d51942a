"""``maskgate explain``: Grad-CAM heat maps of what the classifier looks at in a face.

A mask classifier can reach a good test score by looking at the wrong thing: the background, a
border, a scarf's colour, the watermark of one source. Accuracy does not show that; a heat map per face
does. For each face crop this writes the image beside the same image with the map overlaid, titled with
the predicted label and its probability, and an index (``explain.json``).

Grad-CAM (Selvaraju et al., 2017): the gradient of the predicted class's score with respect to the last
convolutional feature map weights each channel by its spatial mean; the weighted sum of the channels,
with negative evidence cut off (ReLU), is the map. The score is the class's logit, read from the output
layer before its softmax, since the softmax of a confident model saturates and its gradient vanishes.

The feature map is found, not named: it is the last layer of the classifier whose output is a spatial
(rank-4) map, which is the backbone's output, whatever the backbone (the classifier nests it as one
sub-model). Its resolution is coarse (6x6 for a 192-px MobileNetV2 input); the map is computed there
and upsampled bilinearly to the model's input size, so a map has the input's shape.

Faces are prepared by ``maskgate.edge.core.preprocess.prepare_face``, as on the device, so the map explains
the decision the device would make.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from maskgate.edge.core import atomic
from maskgate.edge.core.errors import (
    ConfigError,
    DataError,
    ImageReadError,
    ModelFileError,
    OutputExistsError,
)
from maskgate.edge.core.imageio import read_image
from maskgate.edge.core.preprocess import prepare_face
from maskgate.edge.gate import sources

from .config import ExplainConfig
from .rundir import write_json

logger = logging.getLogger(__name__)

INDEX = "explain.json"


class GradCam:
    """Grad-CAM maps and class probabilities for batches of prepared faces.

    The classifier must be a single chain of layers (input, normalisation, backbone, pooling, head),
    as ``train.model.build_classifier`` makes it; the chain is checked against the model's own
    output at construction, so a model of another shape is refused rather than explained wrongly.
    """

    def __init__(self, model, *, name: str = "model") -> None:
        import keras

        self.model = model
        self.layers = [la for la in model.layers if not isinstance(la, keras.layers.InputLayer)]
        spatial = [i for i, la in enumerate(self.layers) if len(_output_shape(la)) == 4]
        if not spatial:
            raise ModelFileError(f"{name}: no convolutional feature map to explain (no rank-4 layer)")
        self.feature_index = spatial[-1]
        feature = self.layers[self.feature_index]
        self.feature_layer = feature.name
        self.feature_shape = tuple(int(d) for d in _output_shape(feature)[1:3])
        self.input_size = int(model.input_shape[1])
        last = self.layers[-1]
        # The logit of a softmax Dense layer is its affine part; other heads give their output.
        self._logits = isinstance(last, keras.layers.Dense) and last.activation is keras.activations.softmax
        self.score = "logit" if self._logits else "output"
        x = np.random.default_rng(0).uniform(0, 255, (1, self.input_size, self.input_size, 3))
        x = x.astype(np.float32)
        try:
            _, probs = self._forward(x, watch=False)
            chained = np.allclose(probs, np.asarray(model(x, training=False)), atol=1e-4)
        except Exception:  # layers fed the wrong inputs fail in many ways; all mean "not a chain"
            chained = False
        if not chained:
            raise ModelFileError(f"{name}: not a single chain of layers; cannot locate its feature map")

    def _forward(self, faces: np.ndarray, *, watch: bool):
        """Run the chain layer by layer: (feature map, gradient of the predicted class's score at it,
        probabilities) with ``watch``, else (None, probabilities)."""
        import keras
        import tensorflow as tf

        with tf.GradientTape(watch_accessed_variables=False) as tape:
            x = tf.convert_to_tensor(faces, tf.float32)
            for layer in self.layers[: self.feature_index + 1]:
                x = layer(x, training=False)
            features = x
            if watch:
                tape.watch(features)
            for layer in self.layers[self.feature_index + 1 : -1]:
                x = layer(x, training=False)
            last = self.layers[-1]
            if self._logits:
                scores = keras.ops.matmul(x, last.kernel)
                if last.use_bias:
                    scores = scores + last.bias
                probs = tf.nn.softmax(scores)
            else:
                scores = probs = last(x, training=False)
            if not watch:
                return None, probs.numpy()
            predicted = tf.argmax(probs, axis=-1, output_type=tf.int32)
            score = tf.gather(scores, predicted, batch_dims=1)
        return features, tape.gradient(score, features), probs.numpy()

    def __call__(self, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``faces``: N x S x S x 3 RGB 0..255 (``prepare_face``'s output).

        Returns the maps, N x S x S float32 in [0, 1] at the model's input size (1 where the evidence
        for the predicted class is strongest; all 0 where none of the map speaks for it), and the
        class probabilities, N x classes.
        """
        import cv2

        features, grads, probs = self._forward(np.asarray(faces, np.float32), watch=True)
        weights = np.asarray(grads).mean(axis=(1, 2))  # N x channels: each channel's importance
        cams = np.maximum(np.einsum("nhwc,nc->nhw", np.asarray(features), weights), 0.0)
        peak = cams.max(axis=(1, 2), keepdims=True)
        cams = np.divide(cams, peak, out=np.zeros_like(cams), where=peak > 0)
        size = (self.input_size, self.input_size)
        maps = np.stack([cv2.resize(c, size, interpolation=cv2.INTER_LINEAR) for c in cams])
        return np.clip(maps, 0.0, 1.0).astype(np.float32), probs


def _output_shape(layer) -> tuple:
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError):  # a layer never called has no output
        return ()


def image_paths(specs: list[Path]) -> list[Path]:
    """Files, folders (their images, one level deep) and globs, in the order given, without repeats:
    each read as every command reads a source of images (``gate.sources.image_paths``)."""
    found: list[Path] = []
    for spec in specs:
        try:
            found += sources.image_paths(str(spec))
        except ConfigError as e:  # "source X: why" -> "--source X: why", the flag the user typed
            raise ConfigError(f"--source {spec}: {str(e).rsplit(': ', 1)[-1]}") from None
    return list(dict.fromkeys(found))


def load_explainer(path: Path) -> tuple[GradCam, list[str], Path]:
    """The Grad-CAM of a run directory's (or .keras file's) model, its classes and the file."""
    from .evaluate import load_keras_model, resolve_model

    if Path(path).is_dir() and (Path(path) / "metadata.json").is_file():
        raise ModelFileError(f"model {path} is a bundle; Grad-CAM needs the Keras model (a run directory)")
    keras_path, classes = resolve_model(path)
    model = load_keras_model(keras_path)
    if model.output_shape[-1] != len(classes):
        raise ModelFileError(
            f"model {keras_path} has {model.output_shape[-1]} outputs; labels.txt names {len(classes)}"
        )
    return GradCam(model, name=f"model {keras_path}"), classes, keras_path


def render(image_bgr: np.ndarray, heat: np.ndarray, title: str, path: Path, *, opacity: float) -> None:
    """The face and the face under its heat map, side by side, at the face's own aspect ratio.

    The map is stretched back from the square model input to the image, the inverse of
    ``prepare_face``'s stretch, so it lies on the pixels it was computed from.
    """
    import cv2
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    heat = cv2.resize(heat, (w, h), interpolation=cv2.INTER_LINEAR)
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 2.7 * h / w + 0.7))  # panels about 2.7 in wide
    axes[0].imshow(rgb)
    axes[1].imshow(rgb)
    shown = axes[1].imshow(heat, cmap="jet", alpha=opacity, vmin=0.0, vmax=1.0)
    for ax in axes:
        ax.axis("off")
    fig.colorbar(shown, ax=list(axes), fraction=0.025, pad=0.02)  # beside both: the panels stay alike
    fig.suptitle(title)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _output_name(path: Path, used: set[str]) -> str:
    name, n = f"{path.stem}.png", 1
    while name in used:  # a.jpg and a.png, or one name in two folders
        n += 1
        name = f"{path.stem}-{n}.png"
    used.add(name)
    return name


def _explain_one(path, image, heat, p, classes, folder: Path, used: set[str], opacity: float) -> dict:
    k = int(p.argmax())
    name = _output_name(path, used)
    render(image, heat, f"{path.name}: {classes[k]} (p = {p[k]:.3f})", folder / name, opacity=opacity)
    return {
        "image": str(path),
        "label": classes[k],
        "p": round(float(p[k]), 4),
        "probabilities": {c: round(float(v), 4) for c, v in zip(classes, p, strict=True)},
        "output": name,
    }


def explain(cfg: ExplainConfig, *, progress: bool = True) -> dict[str, Any]:
    """Write a Grad-CAM PNG per readable image and ``explain.json`` into ``cfg.out``; return the index."""
    if cfg.out.exists():
        raise OutputExistsError(f"--out {cfg.out} already exists; choose another folder or remove it")
    atomic.check_creatable(cfg.out, "--out")
    paths = image_paths(cfg.source)
    cam, classes, keras_path = load_explainer(cfg.model)
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    used: set[str] = set()
    with (
        atomic.staged_dir(cfg.out) as staging,
        tqdm(total=len(paths), desc="explain", unit="img", disable=not progress) as bar,
    ):
        for start in range(0, len(paths), cfg.batch_size):
            chunk = paths[start : start + cfg.batch_size]
            batch = []
            for path in chunk:
                try:
                    batch.append((path, read_image(path)))
                except ImageReadError as e:
                    reason = str(e).split(": ", 1)[-1]
                    skipped.append({"image": str(path), "reason": reason})
                    logger.debug("skipped %s: %s", path, reason)  # listed at the end
            if batch:
                faces = np.stack([prepare_face(image, cam.input_size) for _, image in batch])
                maps, probs = cam(faces)
                for (path, image), heat, p in zip(batch, maps, probs, strict=True):
                    rows.append(_explain_one(path, image, heat, p, classes, staging, used, cfg.opacity))
            bar.update(len(chunk))
        if not rows:
            first = f" (e.g. {Path(skipped[0]['image']).name}: {skipped[0]['reason']})" if skipped else ""
            raise DataError(f"--image: none of {len(paths)} file(s) is a readable image{first}")
        index = {
            "model": str(keras_path),
            "method": "Grad-CAM of the predicted class",
            "score": cam.score,
            "feature_layer": cam.feature_layer,
            "feature_map": list(cam.feature_shape),
            "input_size": cam.input_size,
            "images": rows,
            "skipped": skipped,
        }
        write_json(staging / INDEX, index)
    return index
