"""Shared fixtures: tiny generated datasets, an isolated model cache, simulated GPIO pins.

Generated data exercises every loader path in seconds; the real data in
../shared is used only where a test says so, and skipped with a reason when absent.
Test doubles for the gate (detector, analyzer, frame source) are in fakes.py.

Markers (pyproject.toml): ``tf`` for tests that need the train extra, ``slow`` for the slowest.
This module imports only what the ``edge`` extra installs, so ``pytest -m "not tf"`` runs
where TensorFlow is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MASKGATE_SHARED", REPO.parent / "shared"))
SHARED_MODELS = SHARED / "models"


# What a test marked ``tf`` may import: the train extra.
TRAIN_MODULES = ("tensorflow", "keras", "sklearn", "matplotlib")


def pytest_collection_modifyitems(config, items):
    """Without the train extra, tests marked ``tf`` are skipped, each with the reason, rather than
    failing on a missing module. ``-m "not tf"`` deselects them before this."""
    missing = [m for m in TRAIN_MODULES if importlib.util.find_spec(m) is None]
    if not missing:
        return
    skip = pytest.mark.skip(
        reason=f"needs the train extra ({', '.join(missing)} not installed): "
        "pip install -e '.[dev]', or deselect with -m 'not tf'"
    )
    for item in items:
        if item.get_closest_marker("tf"):
            item.add_marker(skip)


@pytest.fixture
def mock_factory():
    """gpiozero's MockFactory, also as the default pin factory while the test runs (as gpiozero's
    own tests do), so no device of a test can reach real pins."""
    saved = Device.pin_factory
    factory = Device.pin_factory = MockFactory()
    try:
        yield factory
    finally:
        factory.reset()
        Device.pin_factory = saved


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Each test gets an empty cache; none reads the user's, nor a mirror from the environment."""
    monkeypatch.setenv("MASKGATE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MASKGATE_MIRROR", raising=False)


@pytest.fixture
def shared_models() -> Path:
    if not (SHARED_MODELS / "deploy.prototxt").is_file():
        pytest.skip(f"shared model mirror not found at {SHARED_MODELS}")
    return SHARED_MODELS


def face(rng: np.random.Generator, masked: bool, size: int = 48) -> np.ndarray:
    """A crude BGR 'face': skin oval, eyes, and either a blue mask or a red mouth.

    The classes differ in colour and layout so a tiny model can learn them.
    """
    # A random low-frequency background makes every generated photo distinct to a
    # difference hash, as distinct real photos are.
    noise = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    img = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    c = size // 2 + int(rng.integers(-size // 10, size // 10 + 1))
    cv2.ellipse(img, (c, c), (size // 3, size // 2 - 4), 0, 0, 360, (140, 170, 220), -1)
    cv2.circle(img, (c - size // 8, c - size // 8), 2, (20, 20, 20), -1)
    cv2.circle(img, (c + size // 8, c - size // 8), 2, (20, 20, 20), -1)
    if masked:
        cv2.rectangle(img, (c - size // 4, c), (c + size // 4, c + size // 3), (200, 120, 40), -1)
    else:
        cv2.line(img, (c - size // 8, c + size // 5), (c + size // 8, c + size // 5), (40, 40, 200), 2)
    return img


def make_faces(root: Path, per_class: int = 12, seed: int = 0, messy: bool = True) -> Path:
    rng = np.random.default_rng(seed)
    for cls, masked in (("with_mask", True), ("without_mask", False)):
        d = root / cls
        d.mkdir(parents=True)
        for i in range(per_class):
            cv2.imwrite(str(d / f"{i:03d}.jpg"), face(rng, masked, int(rng.integers(40, 80))))
    if messy:
        d = root / "with_mask"
        img = face(rng, True)
        Image.fromarray(img[:, :, ::-1]).convert("P").save(d / "palette.png")
        rgba = np.dstack([face(rng, True)[:, :, ::-1], np.full((48, 48), 128, np.uint8)])
        Image.fromarray(rgba, "RGBA").save(d / "alpha.png")
        Image.fromarray(face(rng, True)[:, :, ::-1]).save(d / "photo.webp")
        cv2.imwrite(str(d / "gray.png"), cv2.cvtColor(face(rng, True), cv2.COLOR_BGR2GRAY))
        ok, buf = cv2.imencode(".jpg", face(rng, True))
        (d / "odd.jpg_1088wx1632h").write_bytes(buf.tobytes())
        (d / "copy_of_000.jpg").write_bytes((d / "000.jpg").read_bytes())  # byte duplicate
        (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
        (d / "notes.txt").write_text("not an image")
        (d / ".DS_Store").write_bytes(b"\0\0")
        u = root / "without_mask"
        base = face(rng, False, 64)
        for k, im in enumerate((base, base[:, ::-1], cv2.GaussianBlur(base, (5, 5), 0))):
            cv2.imwrite(str(u / f"augmented_image_{k}.jpg"), im)
    return root


def make_voc(root: Path, scenes: int = 6, seed: int = 1) -> Path:
    """Scenes with two faces each, one per class, and one small face below min size."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for s in range(scenes):
        scene = np.full((120, 160, 3), 90, np.uint8)
        objs = []
        for (x, y), (name, masked) in zip(
            ((10, 20), (90, 30)), (("with_mask", True), ("without_mask", False)), strict=True
        ):
            scene[y : y + 48, x : x + 48] = face(rng, masked)
            objs.append((name, x, y, x + 48, y + 48))
        objs.append(("mask_weared_incorrect", 70, 90, 80, 100))
        cv2.imwrite(str(root / "images" / f"scene{s}.jpg"), scene)
        xml = "".join(
            f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
            f"<ymax>{d}</ymax></bndbox></object>"
            for n, a, b, c, d in objs
        )
        (root / "annotations" / f"scene{s}.xml").write_text(
            f"<annotation><filename>scene{s}.jpg</filename>{xml}</annotation>"
        )
    return root


def maskgate(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """Run the CLI as a user would, in a fresh interpreter, with extra environment variables."""
    return subprocess.run(
        [sys.executable, "-m", "maskgate.edge.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env=os.environ | (env_extra or {}),
    )


def assert_one_line_error(r: subprocess.CompletedProcess, *fragments: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("maskgate: error:")]
    assert len(lines) == 1, r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


@dataclass(frozen=True)
class Wheel:
    path: Path
    log: str  # pip's and the build backend's output, warnings included


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Wheel:
    """The wheel of this checkout as pip builds it for a Pi (no dependencies), built once per session."""
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-v", "-w", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (path,) = out.glob("maskgate-*.whl")
    return Wheel(path, r.stdout + r.stderr)


@pytest.fixture
def faces_dir(tmp_path) -> Path:
    return make_faces(tmp_path / "faces")


@pytest.fixture
def voc_dir(tmp_path) -> Path:
    return make_voc(tmp_path / "voc")


@pytest.fixture(scope="session")
def unet_run(tmp_path_factory):
    """A complete tiny train-unet run (6 generated scenes at 64 px, untrained encoder, one epoch per
    phase), shared by the segmentation and conversion tests. Split as the shipped segmenter is
    (``--scene-split``): scene3 is the one scene on the report side, so it is the test split."""
    from maskgate.train.segmentation.config import SegmentTrainConfig
    from maskgate.train.segmentation.run import train_unet

    tmp = tmp_path_factory.mktemp("unet")
    voc = make_voc(tmp / "voc", scenes=6)
    cfg = SegmentTrainConfig(
        voc=voc, out=tmp / "run", input_size=64, weights="none", decoder_filters=8, batch_size=4, epochs=1,
        fine_tune_epochs=1, val_fraction=0.2, scene_split=True, overlays=2, seed=5,
    )  # fmt: skip
    return train_unet(cfg, progress=False)
