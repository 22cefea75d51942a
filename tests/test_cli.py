"""User mistakes end in one line on stderr, exit status 2, no traceback, nothing written."""

import pytest

from conftest import assert_one_line_error, make_faces, maskgate


@pytest.fixture
def out(tmp_path):
    return tmp_path / "run"


def _assert_nothing_written(out):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


@pytest.mark.tf
def test_missing_data_directory(tmp_path, out):
    r = maskgate("train", "--data", str(tmp_path / "nope"), "--out", str(out))
    assert_one_line_error(r, "nope", "does not exist")
    _assert_nothing_written(out)


@pytest.mark.tf
def test_single_class(tmp_path, out):
    root = make_faces(tmp_path / "f", per_class=5, messy=False)
    import shutil

    shutil.rmtree(root / "without_mask")
    r = maskgate("train", "--data", str(root), "--out", str(out))
    assert_one_line_error(r, "one class (with_mask)")
    _assert_nothing_written(out)


@pytest.mark.tf
def test_existing_output_directory(tmp_path, out):
    root = make_faces(tmp_path / "f", per_class=5, messy=False)
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = maskgate("train", "--data", str(root), "--out", str(out))
    assert_one_line_error(r, "already exists")
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--input-size", "8"], ["--input-size", "greater than or equal to 32"]),
        (["--val-fraction", "0.45", "--test-fraction", "0.4"], ["must leave at least 20%"]),
        (["--epochs", "many"], ["--epochs", "valid integer"]),
        pytest.param(["--weights", "/no/such.h5"], ["--weights", "no such file"], marks=pytest.mark.tf),
        pytest.param(["--alpha", "0.5"], ["--alpha 0.5", "only alpha 1.0"], marks=pytest.mark.tf),
        (["--family-pattern", "(unclosed"], ["--family-pattern", "not a valid regular expression"]),
        (["--epochs", "0", "--fine-tune-blocks", "0"], ["nothing to train"]),
        (["--patience", "2", "--lr-patience", "2"], ["--lr-patience must be below --patience"]),
    ],
)
def test_bad_options_name_the_flag(tmp_path, out, args, fragments):
    root = make_faces(tmp_path / "f", per_class=5, messy=False)
    r = maskgate("train", "--data", str(root), "--out", str(out), *args)
    assert_one_line_error(r, *fragments)
    _assert_nothing_written(out)


@pytest.mark.tf
def test_evaluate_missing_model(tmp_path):
    r = maskgate(
        "evaluate",
        "--model",
        str(tmp_path / "m"),
        "--data",
        str(tmp_path),
        "--json",
        str(tmp_path / "x.json"),
    )
    assert_one_line_error(r, "not found")
    assert not (tmp_path / "x.json").exists()


def test_unknown_option_is_argparse_usage_error(tmp_path):
    r = maskgate("train", "--data", "d", "--out", "o", "--no-such-flag")
    assert r.returncode == 2 and "unrecognized arguments: --no-such-flag" in r.stderr
    assert "Traceback" not in r.stderr


def test_help_lists_every_training_option():
    r = maskgate("train", "--help")
    assert r.returncode == 0
    from maskgate.train.config import TrainConfig

    for name in TrainConfig.model_fields:
        assert "--" + name.replace("_", "-") in r.stdout


@pytest.mark.tf
def test_weights_that_do_not_fit(tmp_path, out, shared_models):
    """Real ImageNet alpha-1.0 weights offered to an alpha-0.35 model: one line, no run left."""
    root = make_faces(tmp_path / "f", per_class=5, messy=False)
    weights = shared_models / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    r = maskgate(
        "train",
        "--data",
        str(root),
        "--out",
        str(out),
        "--alpha",
        "0.35",
        "--input-size",
        "32",
        "--weights",
        str(weights),
    )
    assert_one_line_error(r, "does not fit MobileNetV2 alpha=0.35")
    _assert_nothing_written(out)


@pytest.mark.parametrize(
    "tf_config, fragments",
    [
        (
            '{"cluster": {"worker": ["h1:1", "h2:1"]}, "task": {"type": "worker", "index": 0}}',
            ["TF_CONFIG names 2 workers", "keras-team/keras#20585"],
        ),
        ("{not json", ["TF_CONFIG is not a valid cluster description"]),
    ],
)
@pytest.mark.tf
def test_unsupported_cluster_is_refused_before_any_work(tmp_path, out, tf_config, fragments):
    root = make_faces(tmp_path / "f", per_class=5, messy=False)
    r = maskgate("train", "--data", str(root), "--out", str(out), env_extra={"TF_CONFIG": tf_config})
    assert_one_line_error(r, *fragments)
    _assert_nothing_written(out)


def test_a_missing_pi_camera_library_says_it_comes_from_apt_into_a_system_site_venv():
    """picamera2 needs libcamera, which only Raspberry Pi OS's packages have: pip cannot mend it."""
    import importlib.util

    if importlib.util.find_spec("picamera2") is not None:
        pytest.skip("picamera2 is installed here")
    r = maskgate("run", "--source", "picamera", "--set", "outputs.pin_factory=mock")
    assert_one_line_error(r, "needs the module picamera2", "sudo apt install python3-picamera2",
                          "python3 -m venv --system-site-packages")  # fmt: skip
    assert "pip install" not in r.stderr
