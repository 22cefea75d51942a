"""Write files and directories so a crash or Ctrl-C never leaves half of one.

Everything is written beside its destination under a temporary name and
renamed into place; a rename within one filesystem is atomic.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputExistsError


def write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode(0o666))  # mkstemp's 0600 would hide the file from a service user
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def check_creatable(path: Path, what: str) -> None:
    """Fail early, before minutes of work, if ``path`` could not be created."""
    from .errors import ConfigError

    parent = Path(path).absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path}: cannot be created, {parent} is not a writable directory")


def _umask_mode(mode: int) -> int:
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


@contextlib.contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield a sibling staging directory that becomes ``final`` only on success.

    On any exception (including KeyboardInterrupt) the staging directory is
    removed, so ``final`` either exists complete or not at all.
    """
    final = Path(final)
    if final.exists():
        raise OutputExistsError(f"output {final} already exists; choose another path or remove it")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    os.chmod(staging, _umask_mode(0o777))
    try:
        yield staging
        if final.exists():
            raise OutputExistsError(f"output {final} appeared while writing; left it untouched")
        os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def staged_file(final: Path) -> Iterator:
    """A text file to write beside ``final`` under a temporary name; it becomes ``final`` on success.

    For outputs written line by line (``detect --jsonl``): a run that fails or is
    interrupted leaves no partial file behind.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode(0o666))
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
