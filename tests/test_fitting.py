"""The training spine both trainers share: two phases, the best epoch of both kept, Ctrl-C.

A four-weight linear model on random numbers: seconds. The classifier's and
the U-Net's own runs (test_train, test_segment) exercise the same code end to end.
"""

import numpy as np
import pytest

from conftest import assert_one_line_error, make_voc, maskgate

pytestmark = pytest.mark.tf


def _setup():
    import keras
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    return keras, tf, ds, model


def _row(phase, epoch, logs, model):
    return {"phase": phase, "epoch": epoch, "val_loss": logs["val_loss"]}


def test_the_best_epoch_of_both_phases_is_kept_and_ctrl_c_keeps_it():
    from maskgate.train.fitting import Phase, fit_in_phases

    keras, tf, ds, model = _setup()
    seen = []  # (val_loss, weights) of every epoch, as the spine saw it

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((logs["val_loss"], self.model.get_weights()))
            if len(seen) == 3:  # spoil the end of phase one: phase two must not start from here
                self.model.set_weights([np.full_like(w, 100.0) for w in self.model.get_weights()])
            if len(seen) == 5:
                raise KeyboardInterrupt

    begun = []
    phases = [
        Phase("one", 3, 0.05, begin=lambda: begun.append(model.get_weights())),
        Phase("two", 4, 5.0, begin=lambda: begun.append(model.get_weights())),  # a rate that diverges
    ]
    fitted = fit_in_phases(
        model,
        phases,
        strategy=tf.distribute.get_strategy(),
        train_ds=ds,
        val_ds=ds,
        compile_args=lambda: {"loss": "mse"},
        row=_row,
        callbacks=lambda: [Record()],
        progress=False,
    )
    assert fitted.interrupted
    assert [(h["phase"], h["epoch"]) for h in fitted.history] == [
        ("one", 1), ("one", 2), ("one", 3), ("two", 4), ("two", 5)
    ]  # fmt: skip
    best = min(range(5), key=lambda i: seen[i][0])
    assert fitted.best_epoch == best + 1
    assert all(np.array_equal(a, b) for a, b in zip(fitted.model.get_weights(), seen[best][1], strict=True))
    best_of_one = min(range(3), key=lambda i: seen[i][0])  # phase two starts from it, not from epoch 3
    assert all(np.array_equal(a, b) for a, b in zip(begun[1], seen[best_of_one][1], strict=True))


def test_ctrl_c_before_any_epoch_ended_aborts():
    from maskgate.train.fitting import Phase, fit_in_phases

    keras, tf, ds, model = _setup()

    class CtrlC(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_in_phases(
            model,
            [Phase("one", 2, 0.05)],
            strategy=tf.distribute.get_strategy(),
            train_ds=ds,
            val_ds=ds,
            compile_args=lambda: {"loss": "mse"},
            row=_row,
            callbacks=lambda: [CtrlC()],
            progress=False,
        )


def test_the_segmenter_refuses_an_unsupported_cluster_before_decoding(tmp_path):
    voc = make_voc(tmp_path / "voc", scenes=3)
    tf_config = '{"cluster": {"worker": ["h1:1", "h2:1"]}, "task": {"type": "worker", "index": 0}}'
    r = maskgate(
        "train-unet", "--voc", str(voc), "--out", str(tmp_path / "run"), "--weights", "none",
        env_extra={"TF_CONFIG": tf_config},
    )  # fmt: skip
    assert_one_line_error(r, "TF_CONFIG names 2 workers")
    assert not (tmp_path / "run").exists()
