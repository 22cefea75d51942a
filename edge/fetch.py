"""The one way third-party files enter maskgate: fetched, verified, cached.

Nothing downloads weights at run time elsewhere. A file comes from a local
mirror directory (for offline sites and CI) or from its official URL, must
match a SHA-256 listed in ``models/manifest.toml``, and is written into the
cache atomically, so a half-downloaded file can never be mistaken for a good one.
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
            name, digests = entry["name"], entry["sha256"]
            digests = [digests] if isinstance(digests, str) else list(digests)
            if not digests or not all(
                isinstance(d, str) and re.fullmatch(r"[0-9a-fA-F]{64}", d) for d in digests
            ):
                raise FetchError(
                    f"model manifest {path}: {name} needs sha256 as 64 hex digits (or a list of them)"
                )
            item = ModelFile(
                name=name,
                url=entry["url"],
                sha256=tuple(d.lower() for d in digests),
                license=entry["license"],
                purpose=entry.get("purpose", ""),
                text=bool(entry.get("text", False)),
                note=entry.get("note", ""),
                used_by=tuple(entry.get("used_by", ("edge", "train"))),
            )
        except (KeyError, TypeError) as e:
            raise FetchError(f"model manifest {path}: entry {i + 1} lacks a valid {e}") from e
        files[item.name] = item
    return files


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


def digest(data: bytes, *, text: bool = False) -> str:
    if text:
        data = data.replace(b"\r\n", b"\n")
    return hashlib.sha256(data).hexdigest()


def _verified(item: ModelFile, data: bytes) -> bool:
    return digest(data, text=item.text) in item.sha256


def cached_path(item: ModelFile, cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / item.name


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
        try:
            data = source.read_bytes()
        except FileNotFoundError as e:
            raise FetchError(f"{item.name}: not in mirror {mirror}") from e
        except OSError as e:
            raise FetchError(f"{item.name}: cannot read {source}: {e.strerror or e}") from e
        state, origin = State.COPIED, str(source)
    else:
        data = _download(item)
        state, origin = State.DOWNLOADED, item.url
    if not _verified(item, data):
        note = f" ({item.note})" if item.note else ""
        found = digest(data, text=item.text)
        raise FetchError(f"{item.name}: SHA-256 {found} from {origin} does not match the manifest{note}")
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
        raise FetchError(
            f"{item.name}: cannot download {item.url} ({reason}); "
            f"offline, pass --mirror DIR or set {MIRROR_ENV}"
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
