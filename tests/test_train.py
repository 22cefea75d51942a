"""The training stage end to end with tiny models: every output, evaluation, Ctrl-C, bad weights.

Tiny means a 32-px, alpha-0.35 MobileNetV2 without pretrained weights, trained
for an epoch or two on a few dozen generated faces: seconds, not minutes.
Accuracy is not asserted here; it is measured by the benchmark run.
"""

import json

import numpy as np
import pytest

from conftest import make_faces, make_voc
from maskgate.edge.cli import main
from maskgate.edge.core.errors import ModelFileError

pytestmark = pytest.mark.tf

TINY = [
    "--input-size",
    "32",
    "--alpha",
    "0.35",
    "--weights",
    "none",
    "--batch-size",
    "8",
    "--dense-units",
    "8",
    "--workers",
    "2",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("train")
    faces = make_faces(base / "faces", per_class=14)
    voc = make_voc(base / "voc")
    out = base / "run"
    code = main(
        [
            "-q",
            "train",
            "--data",
            str(faces),
            "--voc",
            str(voc),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--fine-tune-epochs",
            "1",
            "--fine-tune-blocks",
            "2",
            *TINY,
        ]
    )
    assert code == 0
    return out


@pytest.mark.slow
def test_run_directory_is_complete(run_dir):
    expected = {
        "model.keras",
        "labels.txt",
        "metrics.json",
        "report.md",
        "config.json",
        "environment.json",
        "dataset.json",
        "split.json",
        "history.csv",
        "curves.png",
        "confusion.png",
    }
    assert expected <= {p.name for p in run_dir.iterdir()}
    assert not (run_dir / "checkpoint.keras").exists()
    assert (run_dir / "labels.txt").read_text().split() == ["with_mask", "without_mask"]
    assert not [p for p in run_dir.parent.iterdir() if p.name.endswith(".partial")]


@pytest.mark.slow
def test_metrics_json_has_the_documented_keys_and_consistent_counts(run_dir):
    m = json.loads((run_dir / "metrics.json").read_text())
    assert {"accuracy", "far", "frr", "per_class", "confusion", "n", "roc_auc"} <= set(m)
    split = json.loads((run_dir / "split.json").read_text())
    n_test = sum(split["counts"]["test"].values())
    assert m["n"] == n_test == sum(map(sum, m["confusion"]))
    assert m["interrupted"] is False and m["epochs"] == 2
    assert 0.0 <= m["accuracy"] <= 1.0


@pytest.mark.slow
def test_config_records_preprocessing_dataset_and_versions(run_dir):
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["input_size"] == 32 and cfg["alpha"] == 0.35 and cfg["weights"] == "none"
    assert cfg["preprocessing"]["normalization"]["inside_model"] is True
    ds = json.loads((run_dir / "dataset.json").read_text())
    assert len(ds["content_hash"]) == 64
    assert {p.rsplit("/", 1)[-1] for p, _ in ds["skipped"]} == {"corrupt.jpg", "notes.txt"}
    assert ds["voc_skipped"] == {"class mask_weared_incorrect not trained": 6}
    env = json.loads((run_dir / "environment.json").read_text())
    assert "tensorflow-cpu" in env["libraries"] or "tensorflow" in env["libraries"]
    report = (run_dir / "report.md").read_text()
    assert "corrupt.jpg" in report and ds["content_hash"] in report and "| fine-tune |" in report


@pytest.mark.slow
def test_history_has_both_phases(run_dir):
    rows = (run_dir / "history.csv").read_text().splitlines()
    assert rows[0].startswith("phase,loss")
    assert [r.split(",")[0] for r in rows[1:]] == ["head", "fine-tune"]


@pytest.mark.slow
def test_split_keeps_scene_faces_together(run_dir):
    split = json.loads((run_dir / "split.json").read_text())
    sides: dict = {}
    for row in split["samples"]:
        if row["root"] == "voc":
            sides.setdefault(row["path"], set()).add(row["split"])
    assert sides and all(len(v) == 1 for v in sides.values())


@pytest.mark.slow
def test_evaluate_split_test_reproduces_the_runs_metrics(run_dir, tmp_path):
    """`evaluate --split test` rebuilds the run's test set (files and VOC crops) and gets its numbers."""
    out = tmp_path / "eval.json"
    assert main(["-q", "evaluate", "--model", str(run_dir), "--split", "test", "--json", str(out)]) == 0
    m = json.loads(out.read_text())
    run = json.loads((run_dir / "metrics.json").read_text())
    assert m["n"] == run["n"] and m["confusion"] == run["confusion"]
    for key in ("accuracy", "far", "frr", "roc_auc"):
        assert m[key] == pytest.approx(run[key], abs=1e-6), key
    config = json.loads((run_dir / "config.json").read_text())
    assert config["threshold_source"] == "validation split" and 0.5 <= config["threshold"] < 1
    assert m["threshold"] == config["threshold"] == run["threshold"]  # taken from the run's configuration


@pytest.mark.slow
def test_evaluate_a_folder(run_dir, tmp_path):
    faces = make_faces(tmp_path / "held-out", per_class=4, seed=7, messy=False)
    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "-q",
                "evaluate",
                "--model",
                str(run_dir / "model.keras"),
                "--data",
                str(faces),
                "--json",
                str(out),
                "--threshold",
                "0.7",
            ]
        )
        == 0
    )
    m = json.loads(out.read_text())
    assert {"accuracy", "far", "frr", "per_class", "confusion", "n"} <= set(m)
    assert m["n"] == 8 and m["threshold"] == 0.7 and m["class_names"] == ["with_mask", "without_mask"]
    assert sum(map(sum, m["confusion"])) == 8


@pytest.mark.slow
def test_evaluate_rejects_a_damaged_model(run_dir, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad, ignore=shutil.ignore_patterns("*.png"))
    (bad / "model.keras").write_bytes(b"PK\x03\x04 not really a zip")
    code = main(
        [
            "evaluate",
            "--model",
            str(bad),
            "--data",
            str(make_faces(tmp_path / "f", 3, messy=False)),
            "--json",
            str(tmp_path / "o.json"),
        ]
    )
    assert code == 2
    assert "cannot be loaded" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


def _tiny_config(tmp_path, **kw):
    from maskgate.train.config import TrainConfig

    faces = make_faces(tmp_path / "faces", per_class=10, messy=False)
    base = dict(
        data=faces,
        out=tmp_path / "run",
        input_size=32,
        alpha=0.35,
        weights="none",
        batch_size=8,
        dense_units=8,
        epochs=2,
        fine_tune_epochs=1,
        fine_tune_blocks=1,
    )
    return TrainConfig(**(base | kw))


@pytest.mark.slow
def test_ctrl_c_keeps_the_best_checkpoint_as_a_complete_run(tmp_path):
    import keras

    from maskgate.train.run import train

    class CtrlC(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    cfg = _tiny_config(tmp_path)
    out = train(cfg, callbacks=[CtrlC()], progress=False)
    m = json.loads((out / "metrics.json").read_text())
    assert m["interrupted"] is True and m["epochs"] == 2
    assert "Interrupted" in (out / "report.md").read_text()
    assert keras.models.load_model(out / "model.keras").output_shape == (None, 2)


def test_ctrl_c_before_any_checkpoint_leaves_nothing(tmp_path):
    import keras

    from maskgate.train.run import train

    class CtrlC(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise KeyboardInterrupt

    cfg = _tiny_config(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[CtrlC()], progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces"]


@pytest.mark.slow
def test_failure_while_writing_leaves_no_run_directory(tmp_path, monkeypatch):
    from maskgate.train import run

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(run, "write_outputs", boom)
    with pytest.raises(OSError, match="disk full"):
        run.train(_tiny_config(tmp_path, epochs=1, fine_tune_epochs=0), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces"]


def test_weights_that_do_not_fit_are_one_clear_error(shared_models):
    from maskgate.train.model import IMAGENET_WEIGHTS, build_classifier

    with pytest.raises(ModelFileError, match="does not fit MobileNetV2 alpha=0.35"):
        build_classifier(2, input_size=32, alpha=0.35, weights=shared_models / IMAGENET_WEIGHTS)


def test_imagenet_weights_load_through_the_fetch_step(shared_models, monkeypatch):
    """The default path: fetch from the mirror, verify, build with ImageNet weights."""
    from maskgate.train.config import TrainConfig
    from maskgate.train.fitting import resolve_weights
    from maskgate.train.model import backbone_of, build_classifier

    monkeypatch.setenv("MASKGATE_MIRROR", str(shared_models))
    path = resolve_weights(TrainConfig(data=".", out="o"))
    model = build_classifier(2, input_size=96, weights=path)
    kernel = backbone_of(model).get_layer("Conv1").get_weights()[0]
    assert kernel.shape == (3, 3, 3, 32) and float(np.abs(kernel).std()) > 0.05  # not a fresh init
    assert not backbone_of(model).trainable


def test_unfreeze_top_trains_only_the_top_blocks_and_never_batchnorm():
    import keras

    from maskgate.train.model import backbone_of, build_classifier, unfreeze_top

    model = build_classifier(2, input_size=32, alpha=0.35)
    unfreeze_top(model, 2)
    trainable = [layer.name for layer in backbone_of(model).layers if layer.trainable]
    assert trainable and all(n.startswith(("block_15", "block_16", "Conv_1")) for n in trainable)
    assert not any(
        isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
        for layer in backbone_of(model).layers
    )


def test_augmentation_keeps_shape_and_range_and_changes_pixels():
    import tensorflow as tf

    from maskgate.train.model import augmentation

    x = tf.random.uniform((4, 32, 32, 3), 0, 255, seed=1)
    y = augmentation(0)(x, training=True)
    assert y.shape == x.shape
    assert float(tf.reduce_min(y)) >= 0.0 and float(tf.reduce_max(y)) <= 255.0 + 1e-3
    assert float(tf.reduce_mean(tf.abs(y - x))) > 1.0


def test_training_pipeline_feeds_the_shared_preprocessing(tmp_path):
    """What the model sees in training is bit-for-bit what edge/ prepares on the device."""
    from maskgate.edge.core.imageio import read_image
    from maskgate.edge.core.preprocess import prepare_face
    from maskgate.train.dataset import scan_folder
    from maskgate.train.pipeline import make_dataset

    faces = make_faces(tmp_path / "f", per_class=3, messy=False)
    samples = scan_folder(faces, progress=False).samples
    ds = make_dataset(
        samples, [0] * len(samples), input_size=40, batch_size=len(samples), training=False, seed=0
    )
    batch = next(iter(ds))[0].numpy()
    expected = np.stack([prepare_face(read_image(s.path), 40) for s in samples]).astype(np.float32)
    assert np.array_equal(batch, expected)


@pytest.mark.slow
def test_multi_worker_strategy_from_tf_config(tmp_path):
    """TF_CONFIG selects MultiWorkerMirroredStrategy; a one-worker cluster on loopback trains and
    its chief writes the run. Run in a fresh process: a strategy cannot be undone in-process."""
    import os
    import socket
    import subprocess
    import sys

    from conftest import REPO

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    faces = make_faces(tmp_path / "faces", per_class=8, messy=False)
    tf_config = json.dumps(
        {"cluster": {"worker": [f"127.0.0.1:{port}"]}, "task": {"type": "worker", "index": 0}}
    )
    env = os.environ | {"TF_CONFIG": tf_config}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "maskgate.edge.cli",
            "train",
            "--data",
            str(faces),
            "--out",
            str(tmp_path / "run"),
            "--epochs",
            "1",
            "--fine-tune-epochs",
            "0",
            *TINY,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "distribution: MultiWorkerMirroredStrategy, 1 replica(s)" in r.stderr
    assert (tmp_path / "run" / "model.keras").is_file()


def test_fine_tuning_leaves_batchnorm_statistics_alone():
    """Keras 3 passes the outer `training=True` into the backbone; frozen BN must still not update."""
    import keras

    from maskgate.train.model import backbone_of, build_classifier, unfreeze_top

    model = build_classifier(2, input_size=32, alpha=0.35, dense_units=0)
    unfreeze_top(model, 3)
    bns = [la for la in backbone_of(model).layers if isinstance(la, keras.layers.BatchNormalization)]
    before = [np.array(la.moving_mean) for la in bns]
    kernel_before = np.array(backbone_of(model).get_layer("Conv_1").kernel)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    model.fit(x, np.array([0, 1] * 4), epochs=1, batch_size=8, verbose=0)
    assert all(np.array_equal(b, np.array(la.moving_mean)) for b, la in zip(before, bns, strict=True))
    assert not np.array_equal(kernel_before, np.array(backbone_of(model).get_layer("Conv_1").kernel))


def test_best_checkpoint_keeps_the_best_epoch_across_phases(tmp_path):
    import keras

    from maskgate.train.callbacks import KeepBest

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    path = tmp_path / "checkpoint.keras"
    cb = KeepBest(path)
    cb.set_model(model)
    saved = []
    for epoch, loss in enumerate([0.5, 0.7, 0.3, 0.4]):
        model.layers[0].kernel.assign(np.full((2, 1), float(epoch), "float32"))
        cb.on_epoch_end(epoch, {"val_loss": loss})
        saved.append(float(np.array(keras.models.load_model(path).layers[0].kernel)[0, 0]))
    assert saved == [0.0, 0.0, 2.0, 2.0]
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.keras"]


@pytest.mark.slow
def test_mirrored_strategy_over_two_replicas(tmp_path):
    """Several local devices mean MirroredStrategy; two logical CPUs stand in for two GPUs, so the
    multi-replica path (global batch split, class weights, best checkpoint) runs for real."""
    import subprocess
    import sys

    from conftest import REPO

    faces = make_faces(tmp_path / "faces", per_class=8, messy=False)
    code = (
        "import sys, tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
        "from maskgate.edge.cli import main\n"
        f"sys.exit(main(['train', '--data', {str(faces)!r}, '--out', {str(tmp_path / 'run')!r},"
        f" '--epochs', '1', '--fine-tune-epochs', '1', *{TINY!r}]))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "distribution: MirroredStrategy, 2 replica(s)" in r.stderr
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"] == 2
