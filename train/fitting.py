"""How both trainers fit a model: weights, distribution, two phases, the best epoch kept, Ctrl-C.

The classifier (``maskgate train``) and the U-Net (``maskgate train-unet``)
differ in data, model, loss and outputs, not in how fitting goes, so that
lives here once:

- **Weights** of the ImageNet backbone come through the fetch step, verified,
  with a way out when offline (``resolve_weights``).
- **Distribution**: a cluster Keras cannot train on is refused before any
  slow work (``check_cluster``, no TensorFlow needed); otherwise the strategy
  follows from the machine (``start_tensorflow``).
- **Two phases** (``fit_in_phases``): a new head or decoder on a frozen
  backbone first, then the backbone's top opened at a lower learning rate.
  The best epoch by validation loss is kept across *both* phases, and phase 2
  starts from it rather than from phase 1's last epoch.
- **Ctrl-C** ends training early: the best model so far is evaluated and
  written like a finished run, marked interrupted. A second Ctrl-C, or one
  before any epoch ended, aborts.

Importing this module imports no TensorFlow: trainers call ``resolve_weights``
and ``check_cluster`` before it is loaded, so mistakes cost seconds.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from maskgate.edge.core import fetch
from maskgate.edge.core.errors import ConfigError, FetchError

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from .callbacks import RowFn

logger = logging.getLogger(__name__)


class WeightsOption(Protocol):
    """A training configuration's ``--weights``: 'imagenet', 'none' or a path."""

    weights: str

    def imagenet_entry(self) -> str:
        """The model-manifest entry of the ImageNet weights it is built for."""
        ...


def resolve_weights(cfg: WeightsOption) -> Path | None:
    """The backbone's weights file for ``--weights``, checked before any slow work.

    'imagenet' is fetched and verified like every third-party file; when that
    cannot happen, the message says how to do it offline (the mirror folder,
    the official URL to download from elsewhere, or ``--weights PATH``).
    """
    if cfg.weights == "none":
        return None
    if cfg.weights == "imagenet":
        name = cfg.imagenet_entry()
        try:
            return fetch.ensure(name)
        except fetch.NotInMirror as e:
            url = fetch.load_manifest()[name].url
            raise FetchError(
                f"--weights imagenet: {e} (${fetch.MIRROR_ENV}); put the file there (official copy: {url}) "
                "or pass --weights PATH"
            ) from e
        except fetch.DownloadFailed as e:
            url = fetch.load_manifest()[name].url
            raise FetchError(
                f"--weights imagenet: cannot download {url} ({e.reason}); offline, put {name} into a "
                f"folder and set ${fetch.MIRROR_ENV} to it, or pass --weights PATH"
            ) from e
        except FetchError as e:
            raise FetchError(f"--weights imagenet: {e}; or pass --weights PATH to a copy of it") from e
    path = Path(cfg.weights)
    if not path.is_file():
        raise ConfigError(f"--weights {path}: no such file (use 'imagenet', 'none' or a path)")
    return path


# ---------------------------------------------------------------- distribution


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


def choose_strategy() -> tf.distribute.Strategy:
    """Scale out without code changes: TF_CONFIG means a cluster worker, several local
    accelerators (or logical CPU devices) mean mirroring, anything else the default."""
    import tensorflow as tf

    check_cluster()
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    for kind in ("GPU", "CPU"):
        devices = tf.config.list_logical_devices(kind)
        if len(devices) > 1:
            return tf.distribute.MirroredStrategy([d.name for d in devices])
    return tf.distribute.get_strategy()


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The public name (TF's multi-worker class is internally CollectiveAllReduceStrategy)."""
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "MirroredStrategy"
    return "default strategy (one device)"


def start_tensorflow(seed: int) -> tf.distribute.Strategy:
    """Load TensorFlow, seed it, and choose the strategy: the first slow step of a run, so the last
    before it are the checks on the user's input. The log says which strategy was chosen."""
    import keras

    keras.utils.set_random_seed(seed)
    strategy = choose_strategy()
    logger.info("distribution: %s, %d replica(s)", strategy_name(strategy), strategy.num_replicas_in_sync)
    return strategy


# ---------------------------------------------------------------- two phases


@dataclass(frozen=True)
class Phase:
    """One ``fit`` call: its name in the history, its epochs at most and its learning rate.

    ``begin`` runs first, after the best weights so far are restored: it opens
    the layers the phase trains and logs what it does.
    """

    name: str
    epochs: int
    learning_rate: float
    begin: Callable[[], None] = field(default=lambda: None)


@dataclass
class Fitted:
    model: keras.Model  # the best model of every phase (or the last, if no epoch was kept)
    history: list[dict[str, Any]]  # a row per epoch, both phases
    interrupted: bool
    best_epoch: int  # counted across phases from 1; 0 if none was kept


def fit_in_phases(
    model: keras.Model,
    phases: Sequence[Phase],
    *,
    strategy: tf.distribute.Strategy,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    compile_args: Callable[[], dict[str, Any]],
    row: RowFn,
    callbacks: Callable[[], list] = list,
    checkpoint: Path | None = None,
    class_weight: dict[int, float] | None = None,
    progress: bool = True,
) -> Fitted:
    """Fit ``model`` phase after phase, keeping the best epoch of all; Ctrl-C keeps what was reached.

    ``compile_args`` gives the loss and metrics, made afresh inside the
    strategy's scope for each phase's compile (Adam at the phase's rate).
    ``callbacks`` gives each phase its own early stopping and the like, since
    those count epochs per ``fit``. ``checkpoint`` keeps the best model as a
    file there (inside the staged run directory) rather than in memory.
    """
    import keras

    from .callbacks import EpochLog, KeepBest

    log = EpochLog(row)
    keep = KeepBest(checkpoint)
    interrupted = False
    try:
        for k, phase in enumerate(phases):
            if k:
                keep.restore(model)  # start from the best so far, not the last epoch
            phase.begin()
            log.phase = phase.name
            with strategy.scope():
                model.compile(optimizer=keras.optimizers.Adam(phase.learning_rate), **compile_args())
            model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=phase.epochs,
                class_weight=class_weight,
                shuffle=False,  # the dataset shuffles itself
                verbose=(1 if sys.stderr.isatty() else 2) if progress else 0,
                callbacks=[log, keep, *callbacks()],
            )
    except KeyboardInterrupt:
        if not keep.found:
            raise
        interrupted = True
        kept = "checkpoint" if checkpoint is not None else "weights"
        logger.warning("interrupted: evaluating the best %s so far (Ctrl-C again aborts)", kept)
    return Fitted(keep.best_model(model), log.records, interrupted, keep.epoch)
