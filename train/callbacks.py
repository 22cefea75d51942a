"""The Keras callbacks both trainers fit with (see ``maskgate.train.fitting``).

Kept in a module of their own because a callback class needs Keras when it
is defined; ``fitting`` imports this one only once TensorFlow is wanted.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras

# What one history row holds: (phase, epoch number across phases, Keras's epoch logs, model) -> row.
RowFn = Callable[[str, int, dict[str, Any], keras.Model], dict[str, Any]]


class EpochLog(keras.callbacks.Callback):
    """One history row per epoch across every phase, kept even when Ctrl-C ends a phase.

    ``model.fit``'s own History is returned only when a fit ends normally and
    starts afresh each call; the run's history.csv must hold both phases and
    an interrupted one. Which columns a row has is the trainer's (``row``).
    """

    def __init__(self, row: RowFn) -> None:
        super().__init__()
        self.row = row
        self.phase = ""
        self.records: list[dict[str, Any]] = []

    def on_epoch_end(self, epoch, logs=None):
        self.records.append(self.row(self.phase, len(self.records) + 1, logs or {}, self.model))


class KeepBest(keras.callbacks.Callback):
    """Keeps the model of the epoch with the lowest val_loss across *all* phases.

    Keras's ModelCheckpoint and EarlyStopping forget their best value between
    ``fit`` calls, so the first fine-tuning epoch would replace a better
    model of the first phase. With ``path`` the model is saved there (written
    under a temporary name and renamed, so Ctrl-C never truncates it); without,
    its weights are kept in memory.
    """

    def __init__(self, path: Path | None = None) -> None:
        super().__init__()
        self.path = path
        self.best = float("inf")
        self.epoch = 0  # the best epoch, counted across phases from 1
        self.weights: list | None = None
        self.saved = False
        self._seen = 0

    @property
    def found(self) -> bool:
        """Whether any epoch was kept (none when Ctrl-C came before the first epoch ended)."""
        return self.saved or self.weights is not None

    def on_epoch_end(self, epoch, logs=None):
        self._seen += 1
        value = (logs or {}).get("val_loss")
        if value is None or not value < self.best:
            return
        self.best, self.epoch = float(value), self._seen
        if self.path is None:
            self.weights = self.model.get_weights()
            return
        tmp = self.path.with_name(".tmp-" + self.path.name)
        try:
            self.model.save(tmp)
            os.replace(tmp, self.path)
            self.saved = True
        finally:
            tmp.unlink(missing_ok=True)  # a Ctrl-C mid-save must not leave it in the run

    def restore(self, model: keras.Model) -> None:
        """Give ``model`` the kept weights, so the next phase starts from the best so far."""
        if self.path is None:
            if self.weights is not None:
                model.set_weights(self.weights)
        elif self.saved:
            model.load_weights(self.path)

    def best_model(self, model: keras.Model) -> keras.Model:
        """The model to evaluate and save: the kept one, or ``model`` itself if nothing was kept."""
        if self.path is None:
            self.restore(model)
            return model
        return keras.models.load_model(self.path) if self.saved else model
