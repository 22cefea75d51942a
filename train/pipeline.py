"""tf.data input pipelines built on the device's own preprocessing.

Images are decoded and resized by ``maskgate.edge`` code (through
``tf.numpy_function``, in parallel), cached in memory after the first epoch,
shuffled, batched, augmented and prefetched. Decoding in Python rather than
with ``tf.io.decode_image`` is deliberate: it is the same code the device
runs, and it reads the WebP, palette and odd-extension files TF rejects.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from .dataset import Sample, load_example


def make_dataset(
    samples: Sequence[Sample],
    labels: Sequence[int],
    *,
    input_size: int,
    batch_size: int,
    training: bool,
    seed: int,
    augment=None,
) -> tf.data.Dataset:
    samples = list(samples)

    def load(index: np.ndarray) -> np.ndarray:
        return load_example(samples[int(index)], input_size)

    def load_tf(index, label):
        image = tf.numpy_function(load, [index], tf.uint8, stateful=False)
        image.set_shape((input_size, input_size, 3))
        return image, label

    ds = tf.data.Dataset.from_tensor_slices(
        (np.arange(len(samples), dtype=np.int64), np.asarray(labels, dtype=np.int64))
    )
    ds = ds.map(load_tf, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).cache()
    if training:
        ds = ds.shuffle(len(samples), seed=seed, reshuffle_each_iteration=True)
    # Cached as uint8 (a quarter of float32's memory), made float per batch.
    ds = ds.batch(batch_size).map(
        lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE
    )
    if training and augment is not None:
        ds = ds.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    # Under a multi-worker strategy each worker reads every index but keeps its share of batches.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def predict(model, samples: Sequence[Sample], *, input_size: int, batch_size: int = 64) -> np.ndarray:
    """Class probabilities for samples, through the same pipeline as training minus augmentation."""
    if not samples:
        return np.zeros((0, model.output_shape[-1]), dtype=np.float32)
    ds = make_dataset(
        samples, [0] * len(samples), input_size=input_size, batch_size=batch_size, training=False, seed=0
    )
    return model.predict(ds.map(lambda x, y: x), verbose=0)
