"""Conversion to int8 and model bundles, with a tiny model converted in seconds.

The run under test is hand-made: a small CNN (with the shared normalisation as
its first layer) trained on generated faces, saved with the files a training
run has. It learns the generated classes, so verification and refusal mean something.
"""

import json
import shutil

import numpy as np
import pytest

from conftest import make_faces
from maskgate.edge.cli import main
from maskgate.edge.core.bundle import load_bundle, write_checksums
from maskgate.edge.core.errors import ModelFileError
from maskgate.edge.gate.classifier import classifier_from_bundle

pytestmark = pytest.mark.tf

SIZE = 32


def _tiny_cnn():
    import keras

    from maskgate.edge.core.preprocess import INPUT_OFFSET, INPUT_SCALE

    return keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        keras.layers.Rescaling(INPUT_SCALE, offset=INPUT_OFFSET),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2, activation="softmax", name="probabilities"),
    ])  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    import keras

    from maskgate.train.dataset import load_example, scan_folder
    from maskgate.train.split import split_samples, write_manifest

    base = tmp_path_factory.mktemp("convert")
    faces = make_faces(base / "faces", per_class=30, messy=False)
    samples = scan_folder(faces, progress=False).samples
    split = split_samples(samples, val_fraction=0.2, test_fraction=0.3, seed=0)
    run = base / "run"
    run.mkdir()
    write_manifest(run / "split.json", samples, split, roots={"data": faces}, seed=0)
    (run / "labels.txt").write_text("with_mask\nwithout_mask\n")
    (run / "config.json").write_text(json.dumps({"threshold": 0.5, "alpha": None}))
    (run / "metrics.json").write_text(json.dumps({"accuracy": 1.0, "n": 0}))
    keras.utils.set_random_seed(0)
    model = _tiny_cnn()
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    train = [s for s, a in zip(samples, split.assignment, strict=True) if a != "test"]
    x = np.stack([load_example(s, SIZE) for s in train]).astype("float32")
    y = np.array([0 if s.label == "with_mask" else 1 for s in train])
    model.fit(x, y, epochs=60, batch_size=16, verbose=0)
    model.save(run / "model.keras")
    return run


@pytest.fixture(scope="module")
def tiny_bundle(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "b"
    assert main(["-q", "convert", "--model", str(tiny_run), "--out", str(out), "--latency-runs", "5"]) == 0
    return out


def test_bundle_holds_a_full_integer_model_as_its_metadata_says(tiny_bundle):
    from maskgate.edge.core.litert import load_interpreter

    b = load_bundle(tiny_bundle)
    meta = b.metadata.model_dump(mode="json")
    assert meta["input"] == {
        "size": [SIZE, SIZE],
        "dtype": "uint8",
        "quantization": {"scale": 1.0, "zero_point": 0},
    }
    assert meta["output"]["dtype"] == "uint8"
    assert meta["classes"] == ["with_mask", "without_mask"] == b.classes
    it = load_interpreter(b.model_path)
    assert it.get_input_details()[0]["dtype"] == np.uint8 and it.get_output_details()[0]["dtype"] == np.uint8
    dtypes = {np.dtype(t["dtype"]).name for t in it.get_tensor_details()}
    assert dtypes <= {"uint8", "int8", "int32"}, dtypes  # no float tensor anywhere: integer-only
    assert {
        "SHA256SUMS",
        "metadata.json",
        "labels.txt",
        "model.tflite",
        "model_float32.tflite",
        "report.md",
    } == {p.name for p in tiny_bundle.iterdir()}


def test_verification_compares_float_and_int8(tiny_bundle):
    v = load_bundle(tiny_bundle).metadata.metrics.verification
    assert v["float"]["accuracy"] >= 0.9  # the tiny model did learn
    assert v["agreement"] >= 0.9 and v["accuracy_drop_pp"] <= 0.5
    assert 0 <= v["probability_diff_mean"] <= v["probability_diff_max"] <= 1
    report = (tiny_bundle / "report.md").read_text()
    assert "TFLite int8" in report and "Latency per face" in report


def test_int8_classifier_matches_the_float_model(tiny_run, tiny_bundle):
    import keras

    from maskgate.train.dataset import load_example
    from maskgate.train.evaluate import run_split_samples

    test = run_split_samples(tiny_run, "test")
    x = np.stack([load_example(s, SIZE) for s in test])
    clf = classifier_from_bundle(load_bundle(tiny_bundle))
    p_q = clf.predict(x)
    p_f = keras.models.load_model(tiny_run / "model.keras").predict(x.astype("float32"), verbose=0)
    assert p_q.shape == p_f.shape and np.abs(p_q - p_f).max() < 0.1
    assert np.allclose(p_q.sum(axis=1), 1.0, atol=0.02)


def test_uint8_faces_enter_the_int8_model_untouched(tiny_bundle):
    """Preprocessing is shared bit for bit: prepared faces are the quantised input as they are."""
    clf = classifier_from_bundle(load_bundle(tiny_bundle))
    faces = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    assert clf._quantize(faces) is faces


def test_convert_calibrates_on_the_shared_preprocessing(tiny_run):
    from maskgate.convert.run import _load
    from maskgate.edge.core.imageio import read_image
    from maskgate.edge.core.preprocess import prepare_face
    from maskgate.train.evaluate import run_split_samples

    train = run_split_samples(tiny_run, "train")[:5]
    expected = np.stack([prepare_face(read_image(s.path), SIZE) for s in train])
    assert np.array_equal(_load(train, SIZE), expected)


def test_a_broken_int8_model_is_refused_and_nothing_written(tiny_run, tmp_path, monkeypatch, capsys):
    """Deliberately break the model that goes into int8 (swap its two outputs): conversion must refuse."""
    import keras

    from maskgate.convert import quantize

    real = quantize.to_tflite

    def broken(model, mode, representative=None):
        if mode == "int8":
            model = keras.models.clone_model(model)
            model.set_weights(keras.models.load_model(tiny_run / "model.keras").get_weights())
            dense = model.get_layer("probabilities")
            kernel, bias = dense.get_weights()
            dense.set_weights([kernel[:, ::-1], bias[::-1]])
        return real(model, mode, representative)

    monkeypatch.setattr(quantize, "to_tflite", broken)
    out = tmp_path / "b"
    code = main(["convert", "--model", str(tiny_run), "--out", str(out), "--latency-runs", "0"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("maskgate: error: int8 model loses") and "no bundle written" in err[-1]
    assert list(tmp_path.iterdir()) == []


def test_representative_folder_and_no_float_model(tiny_run, tmp_path):
    reps = make_faces(tmp_path / "reps", per_class=4, seed=5, messy=True)
    out = tmp_path / "b"
    assert (
        main(
            [
                "-q",
                "convert",
                "--model",
                str(tiny_run),
                "--out",
                str(out),
                "--representative",
                str(reps),
                "--samples",
                "8",
                "--no-float32",
                "--latency-runs",
                "0",
            ]
        )
        == 0
    )
    b = load_bundle(out)
    assert b.float_model_path is None and not (out / "model_float32.tflite").exists()
    assert b.metadata.source["calibration"]["images"] == 8


def test_evaluate_accepts_bundles_and_tflite_files(tiny_bundle, tmp_path):
    faces = make_faces(tmp_path / "held-out", per_class=5, seed=9, messy=False)
    results = []
    for model in (tiny_bundle, tiny_bundle / "model.tflite"):
        out = tmp_path / f"{len(results)}.json"
        assert main(["-q", "evaluate", "--model", str(model), "--data", str(faces), "--json", str(out)]) == 0
        results.append(json.loads(out.read_text()))
    for m in results:
        assert {"accuracy", "far", "frr", "per_class", "confusion", "n"} <= set(m) and m["n"] == 10
    assert results[0]["confusion"] == results[1]["confusion"]
    assert results[0]["model"]["kind"] == "bundle" and results[1]["model"]["kind"] == "tflite"


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda b: b.joinpath("model.tflite").write_bytes(b.joinpath("model.tflite").read_bytes()[:-100]),
            "model.tflite is corrupt or was modified",
        ),
        (lambda b: b.joinpath("labels.txt").unlink(), "labels.txt is missing"),
        (lambda b: b.joinpath("SHA256SUMS").unlink(), "no SHA256SUMS"),
        (lambda b: b.joinpath("metadata.json").write_text("{}"), "metadata.json is corrupt or was modified"),
    ],
)
def test_damaged_bundles_are_rejected(tiny_bundle, tmp_path, damage, message):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    damage(b)
    with pytest.raises(ModelFileError, match=message):
        load_bundle(b)


def _rewrite(bundle_dir, tmp_path, edit):
    """Damage that keeps the checksums consistent: only the content checks can catch it."""
    b = tmp_path / "b"
    shutil.copytree(bundle_dir, b)
    edit(b)
    write_checksums(b)
    return b


def test_consistent_but_wrong_bundles_are_rejected(tiny_bundle, tmp_path):
    def labels(b):
        b.joinpath("labels.txt").write_text("without_mask\nwith_mask\n")

    with pytest.raises(ModelFileError, match="differs from the metadata"):
        load_bundle(_rewrite(tiny_bundle, tmp_path / "1", labels))

    def not_tflite(b):
        b.joinpath("model.tflite").write_bytes(b"\0" * 64)

    with pytest.raises(ModelFileError, match="not a TFLite model"):
        load_bundle(_rewrite(tiny_bundle, tmp_path / "2", not_tflite))

    def other_preprocessing(b):
        meta = json.loads(b.joinpath("metadata.json").read_text())
        meta["preprocessing"]["color_order"] = "BGR"
        b.joinpath("metadata.json").write_text(json.dumps(meta))

    with pytest.raises(ModelFileError, match="other preprocessing"):
        load_bundle(_rewrite(tiny_bundle, tmp_path / "3", other_preprocessing))

    def wrong_size(b):
        meta = json.loads(b.joinpath("metadata.json").read_text())
        meta["input"]["size"] = [64, 64]
        meta["preprocessing"]["input_size"] = [64, 64]
        b.joinpath("metadata.json").write_text(json.dumps(meta))

    with pytest.raises(ModelFileError, match="takes 32 px uint8 input, metadata says 64 px"):
        classifier_from_bundle(load_bundle(_rewrite(tiny_bundle, tmp_path / "4", wrong_size)))

    def no_masked_class(b):
        meta = json.loads(b.joinpath("metadata.json").read_text())
        meta["classes"] = ["cat", "dog"]
        b.joinpath("metadata.json").write_text(json.dumps(meta))
        b.joinpath("labels.txt").write_text("cat\ndog\n")

    with pytest.raises(ModelFileError, match=r"classes \['cat', 'dog'\] lack with_mask"):
        load_bundle(_rewrite(tiny_bundle, tmp_path / "5", no_masked_class))


def test_convert_bad_inputs_are_one_line(tiny_run, tiny_bundle, tmp_path, capsys):
    cases = [
        (["--model", str(tmp_path / "none"), "--out", str(tmp_path / "o1")], "not found"),
        (["--model", str(tiny_run), "--out", str(tiny_bundle)], "already exists"),
        (
            [
                "--model",
                str(tiny_run),
                "--out",
                str(tmp_path / "o2"),
                "--representative",
                str(tmp_path / "x"),
            ],
            "--representative",
        ),
        (["--model", str(tiny_run), "--out", str(tmp_path / "o3"), "--tolerance", "-1"], "--tolerance"),
    ]
    for args, fragment in cases:
        assert main(["convert", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("maskgate: error:") and fragment in err[-1], err
    assert not any((tmp_path / f"o{i}").exists() for i in (1, 2, 3))


def test_the_int8_threshold_is_chosen_on_int8_outputs_of_the_validation_split(tiny_run, tmp_path):
    import shutil

    from maskgate.edge.core.bundle import load_bundle
    from maskgate.train.evaluate import predict_tflite, run_split_samples
    from maskgate.train.metrics import choose_threshold

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "config.json").write_text(
        json.dumps({"threshold": 0.5, "threshold_source": "validation split", "false_accept_cost": 5.0})
    )
    out = tmp_path / "b"
    assert main(["-q", "convert", "--model", str(run), "--out", str(out), "--latency-runs", "0"]) == 0
    b = load_bundle(out)
    val = run_split_samples(run, "val")
    p = predict_tflite(classifier_from_bundle(b), val, 32)[:, 0]
    expected = choose_threshold(p, np.array([s.label == "with_mask" for s in val]), false_accept_cost=5.0)
    v = b.metadata.metrics.verification
    assert b.threshold == expected and v["int8"]["threshold"] == expected and v["float"]["threshold"] == 0.5


def test_a_threshold_at_the_end_of_the_int8_output_grid_is_named():
    from maskgate.convert.run import threshold_grid_warning

    uint8 = {"dtype": np.uint8, "quantization": (1 / 256, 0)}
    top = threshold_grid_warning(0.9941, uint8)  # between the top two steps: only 255/256 unlocks
    assert top is not None and "int8 threshold 0.9941 sits at the end of the int8 output grid" in top
    assert "steps of 0.0039 (1/256)" in top and "only its top step, 0.9961, unlocks" in top
    assert "no p(masked) the device can compute" in threshold_grid_warning(0.999, uint8)
    assert "only its bottom step, 0.0000, is denied" in threshold_grid_warning(0.003, uint8)
    for fine in (0.5, 0.9102, 0.992, 0.0079):  # two or more steps on either side
        assert threshold_grid_warning(fine, uint8) is None, fine
    assert threshold_grid_warning(0.9999, {"dtype": np.float32, "quantization": (0.0, 0)}) is None


def test_convert_warns_of_a_threshold_at_the_end_of_the_grid(tiny_run, tmp_path, caplog):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "config.json").write_text(json.dumps({"threshold": 0.9941}))  # a --threshold, kept as it is
    out = tmp_path / "b"
    args = ["--model", str(run), "--out", str(out), "--latency-runs", "0", "--no-float32"]
    assert main(["convert", *args]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("sits at the end of the int8 output grid" in w for w in warnings), warnings
    assert load_bundle(out).threshold == 0.9941


def test_an_accuracy_change_reads_as_a_drop_or_a_gain(tiny_bundle):
    from maskgate.convert.report import change

    assert change(2.27) == "drop 2.27 pp" and change(-2.27) == "gain 2.27 pp"
    assert change(-0.0001) == "drop 0.00 pp" and change(-0.01234, unit="", digits=4) == "gain 0.0123"
    report = (tiny_bundle / "report.md").read_text()
    assert "Accuracy drop " in report or "Accuracy gain " in report
    assert " -" not in report.split("Accuracy ", 1)[1].split(";")[0]


def test_calibration_reports_progress_when_stderr_is_not_a_terminal(tiny_run, tmp_path):
    """Through a pipe, as under systemd or CI: progress lines, though the converter's own stderr is muted."""
    import subprocess
    import sys

    from conftest import REPO

    out = tmp_path / "b"
    script = (
        "import sys; import maskgate.edge.core.progress as p; p.EVERY_S = 0.0\n"  # a line per sample
        "from maskgate.edge.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    args = ["convert", "--model", str(tiny_run), "--out", str(out), "--samples", "8", "--latency-runs", "0"]
    r = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=REPO,
                       timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "calibrating: 1/8 samples" in r.stderr and "calibrating: 8/8 samples" in r.stderr, r.stderr
    assert "\r" not in r.stderr  # no bar redrawn into a log
