"""Model bundles: a folder with a TFLite model, its labels, metadata and checksums.

The device loads models only through ``load_bundle``, which refuses a bundle
whose files are missing, truncated or modified (``SHA256SUMS``, the format of
``sha256sum -c``), or whose metadata does not describe the model it holds.
A model that loads but was preprocessed differently would fail silently; a
bundle that refuses to load fails loudly, once, at start-up.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import atomic
from .errors import ModelFileError
from .labels import MASKED
from .preprocess import describe

FORMAT = "maskgate-bundle"
VERSION = 1
CHECKSUMS = "SHA256SUMS"
METADATA = "metadata.json"
LABELS = "labels.txt"
TFLITE_MAGIC = b"TFL3"  # bytes 4..8 of every TFLite flatbuffer


@dataclass(frozen=True)
class Bundle:
    path: Path
    metadata: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.metadata["kind"]

    @property
    def model_path(self) -> Path:
        return self.path / self.metadata["model"]

    @property
    def float_model_path(self) -> Path | None:
        name = self.metadata.get("float_model")
        return self.path / name if name else None

    @property
    def classes(self) -> list[str]:
        return list(self.metadata["classes"])

    @property
    def input_size(self) -> int:
        return int(self.metadata["input"]["size"][0])

    @property
    def threshold(self) -> float:
        return float(self.metadata["threshold"])

    def classifier(self, *, num_threads: int = 1, float_model: bool = False):
        """The bundle's classifier, checked against what the metadata promises."""
        from .classifier import TFLiteClassifier

        path = self.float_model_path if float_model else self.model_path
        if path is None:
            raise ModelFileError(f"bundle {self.path} has no float model")
        clf = TFLiteClassifier(path, num_threads=num_threads)
        expected_dtype = "float32" if float_model else self.metadata["input"]["dtype"]
        if clf.input_size != self.input_size or str(clf.input_dtype) != expected_dtype:
            raise ModelFileError(
                f"bundle {self.path}: {path.name} takes {clf.input_size} px {clf.input_dtype} input, "
                f"metadata says {self.input_size} px {expected_dtype}"
            )
        if clf.num_classes != len(self.classes):
            raise ModelFileError(
                f"bundle {self.path}: {path.name} has {clf.num_classes} outputs, "
                f"labels name {len(self.classes)} classes"
            )
        return clf


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_checksums(folder: Path) -> None:
    """SHA256SUMS over every other file of the folder, sorted, in ``sha256sum`` format."""
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != CHECKSUMS)
    lines = [f"{sha256_file(folder / n)}  {n}" for n in names]
    atomic.write_text(folder / CHECKSUMS, "\n".join(lines) + "\n")


def write_bundle(
    folder: Path,
    *,
    kind: str,
    metadata: dict,
    models: dict[str, bytes] | None = None,
    labels: list[str] | None = None,
    report: str | None = None,
) -> Bundle:
    """Write the given parts into a (staged) bundle folder, reseal its checksums and load it back.

    Loading it as the device would is the point: what a converter ships must pass the device's own
    check. Called again with only ``metadata`` and ``report``, it updates a bundle already written.
    """
    for name, data in (models or {}).items():
        atomic.write_bytes(folder / name, data)
    if labels is not None:
        atomic.write_text(folder / LABELS, "\n".join(labels) + "\n")
    atomic.write_text(folder / METADATA, json.dumps(metadata, indent=2) + "\n")
    if report is not None:
        atomic.write_text(folder / "report.md", report)
    write_checksums(folder)
    return load_bundle(folder, kind=kind)


def _read_checksums(path: Path) -> dict[str, str]:
    try:
        text = (path / CHECKSUMS).read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ModelFileError(f"bundle {path}: no {CHECKSUMS}; not a maskgate bundle") from e
    except OSError as e:
        raise ModelFileError(f"bundle {path}: cannot read {CHECKSUMS} ({e.strerror or e})") from e
    sums = {}
    for line in text.splitlines():
        digest, _, name = line.strip().partition("  ")
        if len(digest) != 64 or not name:
            raise ModelFileError(f"bundle {path}: malformed line in {CHECKSUMS}: {line[:80]!r}")
        sums[name] = digest
    return sums


def load_bundle(path: str | Path, kind: str | None = None) -> Bundle:
    """Verify and load a bundle (of ``kind``, if given); every problem is one ``ModelFileError`` line."""
    path = Path(path)
    if not path.is_dir():
        raise ModelFileError(f"bundle {path} not found (expected a folder with {METADATA} and {CHECKSUMS})")
    sums = _read_checksums(path)
    for required in (METADATA, LABELS):
        if required not in sums:
            raise ModelFileError(f"bundle {path}: {CHECKSUMS} does not cover {required}")
    for name, digest in sums.items():
        f = path / name
        if not f.is_file():
            raise ModelFileError(f"bundle {path}: {name} is missing")
        if sha256_file(f) != digest:
            raise ModelFileError(f"bundle {path}: {name} is corrupt or was modified (SHA-256 mismatch)")
    try:
        meta = json.loads((path / METADATA).read_text(encoding="utf-8"))
    except ValueError as e:
        raise ModelFileError(f"bundle {path}: {METADATA} is not valid JSON ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ModelFileError(f"bundle {path}: {METADATA} is not a {FORMAT} version {VERSION} description")
    missing = [
        k for k in ("kind", "model", "classes", "input", "threshold", "preprocessing") if k not in meta
    ]
    if missing:
        raise ModelFileError(f"bundle {path}: {METADATA} lacks {', '.join(missing)}")
    bundle = Bundle(path, meta)
    for name in filter(None, (meta["model"], meta.get("float_model"))):
        if name not in sums:
            raise ModelFileError(f"bundle {path}: model {name} is not covered by {CHECKSUMS}")
        with open(path / name, "rb") as f:
            if f.read(8)[4:8] != TFLITE_MAGIC:
                raise ModelFileError(f"bundle {path}: {name} is not a TFLite model")
    if kind is not None and meta["kind"] != kind:
        raise ModelFileError(f"bundle {path} holds a {meta['kind']}; a {kind} bundle is needed here")
    labels = [x.strip() for x in (path / LABELS).read_text(encoding="utf-8").splitlines() if x.strip()]
    if labels != bundle.classes:
        raise ModelFileError(f"bundle {path}: {LABELS} {labels} differs from the metadata's {bundle.classes}")
    if meta["kind"] == "classifier":
        if MASKED not in bundle.classes:
            raise ModelFileError(
                f"bundle {path}: classes {bundle.classes} lack {MASKED}; the gate cannot decide"
            )
        expected = describe(bundle.input_size)
    elif meta["kind"] == "detector":
        from .ssd import describe_preprocessing

        if not isinstance(meta.get("ssd"), dict) or not {"heads", "outputs"} <= set(meta["ssd"]):
            raise ModelFileError(f"bundle {path}: {METADATA} lacks the SSD's prior boxes and output order")
        expected = describe_preprocessing()
    elif meta["kind"] == "segmenter":
        from .unet import describe_preprocessing as describe_scene

        expected = describe_scene(bundle.input_size)
    else:
        raise ModelFileError(f"bundle {path}: unknown kind {meta['kind']!r}")
    if meta["preprocessing"] != expected:
        raise ModelFileError(
            f"bundle {path}: made for other preprocessing than this maskgate applies; convert the model again"
        )
    return bundle


def default_bundle_path(kind: str = "classifier") -> Path:
    """A bundle shipped with maskgate, ``models/<kind>``: a classifier and a detector are shipped."""
    from importlib.resources import files

    return Path(str(files("maskgate.models").joinpath(kind)))
