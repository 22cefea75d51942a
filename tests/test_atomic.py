import pytest

from maskgate.edge.core import atomic
from maskgate.edge.core.errors import OutputExistsError


def test_staged_dir_appears_only_on_success(tmp_path):
    final = tmp_path / "run"
    with atomic.staged_dir(final) as stage:
        (stage / "a.txt").write_text("x")
        assert not final.exists()
    assert (final / "a.txt").read_text() == "x"
    assert list(tmp_path.iterdir()) == [final]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_staged_dir_leaves_nothing_on_failure(tmp_path, exc):
    with pytest.raises(exc), atomic.staged_dir(tmp_path / "run") as stage:
        (stage / "half.txt").write_text("x")
        raise exc()
    assert list(tmp_path.iterdir()) == []


def test_staged_dir_refuses_an_existing_output(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(OutputExistsError, match="already exists"), atomic.staged_dir(tmp_path / "run"):
        pass


def test_write_bytes_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "f.bin"
    atomic.write_bytes(target, b"1")
    atomic.write_bytes(target, b"22")
    assert target.read_bytes() == b"22"
    assert [p.name for p in target.parent.iterdir()] == ["f.bin"]
