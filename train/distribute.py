"""Cluster checks that need no TensorFlow, so they run before any slow work."""

from __future__ import annotations

import json
import os

from maskgate.edge.core.errors import ConfigError


def cluster_workers(tf_config: str | None) -> int:
    """How many worker tasks a TF_CONFIG names (0 without one); needs no TensorFlow."""
    if not tf_config:
        return 0
    try:
        cluster = json.loads(tf_config)["cluster"]
        return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"TF_CONFIG is not a valid cluster description ({e})") from None


def check_cluster() -> None:
    """Refuse, before any work, a cluster this Keras cannot train on.

    Keras 3's ``fit`` fails under MultiWorkerMirroredStrategy with more than one
    worker (keras-team/keras#20585, tensorflow/tensorflow#72388): the first batch
    is reduced across workers in eager mode and TensorFlow rejects it.
    """
    n = cluster_workers(os.environ.get("TF_CONFIG"))
    if n > 1:
        raise ConfigError(
            f"TF_CONFIG names {n} workers, but Keras 3 cannot yet train across several workers "
            "(keras-team/keras#20585); train on one machine (several GPUs are used by MirroredStrategy)"
        )
