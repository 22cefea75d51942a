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

import numpy as np
from pydantic import BaseModel, TypeAdapter, ValidationError

from . import atomic, preprocess
from .errors import ModelFileError
from .labels import MASKED
from .metadata import KINDS, MODELS, BundleMetadata
from .settings import describe

_ADAPTER: TypeAdapter[BundleMetadata] = TypeAdapter(BundleMetadata)

CHECKSUMS = "SHA256SUMS"
METADATA = "metadata.json"
LABELS = "labels.txt"
TFLITE_MAGIC = b"TFL3"  # bytes 4..8 of every TFLite flatbuffer


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: where it is, and its typed metadata. Building a runtime from it is the
    consumer's business (the gate's classifier, a detector backend)."""

    path: Path
    metadata: BundleMetadata

    @property
    def kind(self) -> str:
        return self.metadata.kind

    @property
    def model_path(self) -> Path:
        return self.path / self.metadata.model

    @property
    def float_model_path(self) -> Path | None:
        name = self.metadata.float_model
        return self.path / name if name else None

    @property
    def classes(self) -> list[str]:
        return list(self.metadata.classes)

    @property
    def input_size(self) -> int:
        return self.metadata.input_size

    @property
    def threshold(self) -> float:
        return self.metadata.threshold


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
    metadata: BundleMetadata | dict[str, Any],
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
    meta = parse_metadata(metadata, f"bundle {folder}")  # what the device will read, checked now
    atomic.write_text(folder / METADATA, meta.model_dump_json(indent=2) + "\n")
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
    except UnicodeDecodeError as e:
        raise ModelFileError(f"bundle {path}: {CHECKSUMS} is not text in sha256sum's format") from e
    sums = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        digest, _, name = line.strip().partition("  ")
        name = name.removeprefix("*")  # sha256sum's binary-mode marker
        if len(digest) != 64 or not name or any(c not in "0123456789abcdefABCDEF" for c in digest):
            raise ModelFileError(f"bundle {path}: malformed line in {CHECKSUMS}: {line[:80]!r}")
        if "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
            # a bundle is one flat folder: a name elsewhere would have the device hash any file
            raise ModelFileError(f"bundle {path}: {CHECKSUMS} names {name[:60]!r}, not a file of the bundle")
        sums[name] = digest.lower()
    return sums


def load_bundle(path: str | Path, kind: str | None = None) -> Bundle:
    """Verify and load a bundle (of ``kind``, if given); every problem is one ``ModelFileError`` line."""
    path = Path(path)
    try:
        return _verified(path, kind)
    except ModelFileError:
        raise
    except OSError as e:  # unreadable file (permissions, I/O error): the bundle cannot be trusted either
        what = Path(e.filename).name if e.filename else "a file"
        raise ModelFileError(f"bundle {path}: cannot read {what} ({e.strerror or e})") from e


def _verified(path: Path, kind: str | None) -> Bundle:
    if not path.is_dir():
        raise ModelFileError(f"bundle {path} not found (expected a folder with {METADATA} and {CHECKSUMS})")
    sums = _read_checksums(path)
    for required in (METADATA, LABELS):
        if required not in sums:
            raise ModelFileError(f"bundle {path}: {CHECKSUMS} does not cover {required}")
    for name, digest in sums.items():
        f = path / name
        if not f.is_file() or f.is_symlink():
            raise ModelFileError(f"bundle {path}: {name} is missing (or not a plain file)")
        if sha256_file(f) != digest:
            raise ModelFileError(f"bundle {path}: {name} is corrupt or was modified (SHA-256 mismatch)")
    try:
        text = (path / METADATA).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ModelFileError(f"bundle {path}: {METADATA} cannot be read ({e})") from e
    meta = parse_metadata(text, f"bundle {path}")
    for name in filter(None, (meta.model, meta.float_model)):
        if name not in sums:
            raise ModelFileError(f"bundle {path}: model {name} is not covered by {CHECKSUMS}")
        with open(path / name, "rb") as f:
            if f.read(8)[4:8] != TFLITE_MAGIC:
                raise ModelFileError(f"bundle {path}: {name} is not a TFLite model")
    if kind is not None and meta.kind != kind:
        raise ModelFileError(f"bundle {path} holds a {meta.kind}; a {kind} bundle is needed here")
    try:
        text = (path / LABELS).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ModelFileError(f"bundle {path}: {LABELS} is not UTF-8 text") from e
    labels = [x.strip() for x in text.splitlines() if x.strip()]
    if labels != list(meta.classes):
        raise ModelFileError(f"bundle {path}: {LABELS} {labels} differs from the metadata's {meta.classes}")
    if meta.kind == "classifier" and MASKED not in meta.classes:
        raise ModelFileError(f"bundle {path}: classes {meta.classes} lack {MASKED}; the gate cannot decide")
    if meta.preprocessing != expected_preprocessing(meta):
        raise ModelFileError(
            f"bundle {path}: made for other preprocessing than this maskgate applies; convert the model again"
        )
    for name in filter(None, (meta.model, meta.float_model)):
        check_model(path, name, meta, float_model=name == meta.float_model)
    return Bundle(path, meta)


def check_model(folder: Path, name: str, meta: BundleMetadata, *, float_model: bool = False) -> None:
    """The model's own tensors against what the metadata promises: input size and type, and the
    number of outputs the device will read. Loaded once at start-up, so a bundle that lies is
    refused before the gate runs, not discovered at the first face."""
    from .litert import load_interpreter

    it = load_interpreter(folder / name)
    inputs, outputs = it.get_input_details(), it.get_output_details()
    if len(inputs) != 1:
        raise ModelFileError(f"bundle {folder}: {name} has {len(inputs)} inputs; maskgate feeds one image")
    shape, dtype = [int(v) for v in inputs[0]["shape"]], str(np.dtype(inputs[0]["dtype"]))
    expected = "float32" if float_model else meta.input.dtype
    if meta.kind == "detector":  # any size: only the layout and the type are fixed
        if len(shape) != 4 or shape[3] != 3 or dtype != expected:
            raise ModelFileError(
                f"bundle {folder}: {name} takes {shape} {dtype} input, metadata says NHWC {expected}"
            )
        if len(outputs) != len(meta.output_order):
            raise ModelFileError(
                f"bundle {folder}: {name} has {len(outputs)} outputs, the metadata describes "
                f"{len(meta.output_order)} ({meta.network} heads)"
            )
        if meta.network == "retinaface":
            _check_retinaface_heads(it, folder, name, meta)
        return
    side = meta.input_size
    if len(shape) != 4 or shape[1:] != [side, side, 3] or dtype != expected:
        got = f"{shape[1]} px" if len(shape) == 4 else str(shape)
        raise ModelFileError(
            f"bundle {folder}: {name} takes {got} {dtype} input, metadata says {side} px {expected}"
        )
    out_shape = [int(v) for v in outputs[0]["shape"]] if len(outputs) == 1 else []
    if meta.kind == "classifier" and (not out_shape or out_shape[-1] != len(meta.classes)):
        n = out_shape[-1] if out_shape else len(outputs)
        raise ModelFileError(
            f"bundle {folder}: {name} has {n} outputs, labels name {len(meta.classes)} classes"
        )
    if meta.kind == "segmenter" and out_shape[:3] != [1, side, side]:
        raise ModelFileError(
            f"bundle {folder}: {name} maps {shape} to {out_shape}; the metadata promises {side} px in and out"
        )


def _check_retinaface_heads(it, folder: Path, name: str, meta: BundleMetadata) -> None:
    """Each output the metadata names must have its level's cells and its head's channels: a swapped
    output order or a wrong anchor count would otherwise decode boxes against the wrong anchors."""
    spec, side = meta.retinaface, 64
    if meta.input.size_multiple != preprocess.RETINAFACE_SIZE_MULTIPLE:
        raise ModelFileError(
            f"bundle {folder}: input.size_multiple {meta.input.size_multiple}; this maskgate pads "
            f"RetinaFace's input to multiples of {preprocess.RETINAFACE_SIZE_MULTIPLE}"
        )
    x = it.get_input_details()[0]
    try:  # run once: the upsampling's size is computed in the graph, so output shapes are known after
        it.resize_tensor_input(x["index"], [1, side, side, 3])
        it.allocate_tensors()
        it.set_tensor(x["index"], np.zeros((1, side, side, 3), x["dtype"]))
        it.invoke()
    except (RuntimeError, ValueError) as e:
        raise ModelFileError(f"bundle {folder}: {name} cannot run at {side}x{side} ({e})") from e
    shapes = [list(it.get_tensor(d["index"]).shape) for d in it.get_output_details()]
    for k, index in enumerate(spec.outputs):
        level, head = divmod(k, 3)
        cells = -(-side // spec.steps[level])
        want = [1, cells, cells, len(spec.min_sizes[level]) * (4, 2, 10)[head]]
        if shapes[index] != want:
            what = ("box offsets", "class logits", "landmarks")[head]
            raise ModelFileError(
                f"bundle {folder}: {name} output {index} is {shapes[index]}, but the metadata makes it "
                f"level {level}'s {what}, {want}"
            )


def expected_preprocessing(meta: BundleMetadata) -> dict[str, Any]:
    """How this maskgate prepares the input of a model of this kind and size."""
    if meta.kind == "classifier":
        return preprocess.describe(meta.input_size)
    if meta.kind == "segmenter":
        return preprocess.describe_scene(meta.input_size)
    return preprocess.describe_ssd() if meta.network == "ssd" else preprocess.describe_retinaface()


def parse_metadata(data: str | dict[str, Any] | BundleMetadata, where: str) -> BundleMetadata:
    """Validated metadata, from the file's text or from what a converter built, through one path
    (JSON), so a converter cannot write what the device would refuse."""
    if not isinstance(data, str):
        data = data.model_dump_json() if isinstance(data, BaseModel) else json.dumps(data)
    try:
        return _ADAPTER.validate_json(data)
    except ValidationError as e:
        errors = e.errors()
        if errors and errors[0]["type"] == "json_invalid":
            raise ModelFileError(f"{where}: {METADATA} is not valid JSON ({errors[0]['msg']})") from None
        raise ModelFileError(f"{where}: {METADATA} {_describe(errors)}") from None


def _describe(errors: list[dict]) -> str:
    """Each problem as ``key.path: what is wrong`` (``core.settings.describe``), the discriminated
    union's own level taken off its key paths, at most five of them."""
    lines = []
    for err in errors[:5]:
        loc = list(err["loc"])
        if err["type"] == "union_tag_not_found":
            lines.append(f"lacks kind (one of {', '.join(KINDS)})")
        elif err["type"] == "union_tag_invalid":
            lines.append(f"says kind {err['input'].get('kind')!r}: must be one of {', '.join(KINDS)}")
        elif loc and loc[0] in MODELS:
            line = describe(err | {"loc": tuple(loc[1:])}, MODELS[loc[0]])
            lines.append(line if line.startswith("lacks ") else f"says {line}")
        else:
            lines.append(f"says {'.'.join(map(str, loc)) or '(top level)'}: {err['msg']}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(lines) + more


def default_bundle_path(kind: str = "classifier") -> Path:
    """A bundle shipped with maskgate, ``models/<name>``: classifier, retinaface, detector, segmenter."""
    from importlib.resources import files

    return Path(str(files("maskgate.models").joinpath(kind)))
