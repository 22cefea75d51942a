"""Test doubles for the device side, in one place: tests import them from here rather than keep copies.

The simulated GPIO is gpiozero's own MockFactory, given to each test as the ``mock_factory`` fixture
(conftest.py, after gpiozero's own tests); ``levels`` reads back what a pin went through. The rest
stand in for the camera and the models so the gate's logic runs on scripted input:

- ``FixedDetector``: a face detector that reports the same boxes on every frame;
- ``FakeAnalyzer``: reads the scene from a frame's first pixel (1 = masked face, 2 = unmasked, 0 = nobody);
- ``ScriptedSource``: frames at 10 fps from a list of such scene codes, then the end or a lost camera.

Only edge/ and gpiozero are imported, so these work where the ``edge`` extra alone is installed.
"""

from __future__ import annotations

import numpy as np

from maskgate.edge.detectors.base import Detection, FaceDetector
from maskgate.edge.gate.analyzer import Analysis, Face
from maskgate.edge.gate.sources import Frame, FrameSource, SourceLostError

CLASSES = ["with_mask", "without_mask"]
BOX = (100, 100, 200, 220)  # a face 120 px high, close to the camera
RELAY_PIN = 17  # the default outputs.relay_pin


def levels(factory, pin: int) -> list[bool]:
    """Every level a MockFactory pin was driven to, from its power-up state on."""
    return [bool(s.state) for s in factory.pin(pin).states]


def relay_states(factory) -> list[bool]:
    return levels(factory, RELAY_PIN)


class FixedDetector(FaceDetector):
    """Reports ``detections`` on every frame and counts its calls."""

    name = "fixed"

    def __init__(self, detections: list[Detection]) -> None:
        self.detections = detections
        self.calls = 0

    def detect(self, image):
        self.calls += 1
        return list(self.detections)


def detected_face(masked: bool, box=BOX) -> Face:
    """A confidently classified face, as the analyzer reports one."""
    p = np.array([0.97, 0.03] if masked else [0.04, 0.96], np.float32)
    return Face(box, 0.99, CLASSES[0 if masked else 1], float(p.max()), float(p[0]), masked)


class FakeAnalyzer:
    """Reads the 'scene' from the frame's first pixel: 1 = masked face, 2 = unmasked, 0 = nobody."""

    classes = CLASSES

    def __init__(self, crash_at: int | None = None) -> None:
        self.crash_at = crash_at
        self.calls = 0

    def analyze(self, image: np.ndarray) -> Analysis:
        self.calls += 1
        if self.calls == self.crash_at:
            raise RuntimeError("inference failed")
        code = int(image[0, 0, 0])
        return Analysis([detected_face(code == 1)] if code else [])


class ScriptedSource(FrameSource):
    """Frames at 10 fps from a list of scene codes; ``lost`` raises SourceLostError at the end instead."""

    def __init__(
        self, codes: list[int], *, lost: bool = False, t0: float = 0.0, live: bool | None = None
    ) -> None:
        self.codes, self.lost, self.t0 = list(codes), lost, t0
        # a source that can be lost stands for a camera: the gate reconnects to it
        self.live = lost if live is None else live
        self.i = 0
        self.closed = False

    def read(self) -> Frame | None:
        if self.i == len(self.codes):
            if self.lost:
                raise SourceLostError("camera unplugged")
            return None
        image = np.full((4, 4, 3), self.codes[self.i], np.uint8)
        frame = Frame(image, self.i, self.t0 + self.i / 10)
        self.i += 1
        return frame

    def close(self) -> None:
        self.closed = True


# --- hostile image files, built by hand: a few bytes that claim millions of pixels -----------------


def png(width: int, height: int, *, bit_depth: int = 1, rows: bytes | None = None) -> bytes:
    """A valid grey PNG of the given size (or, with ``rows``, one whose pixel data lies)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    stride = (width * bit_depth + 7) // 8
    raw = rows if rows is not None else (b"\0" + b"\0" * stride) * height
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def bmp_header(width: int, height: int, bits: int = 24) -> bytes:
    """A BMP header claiming ``width`` x ``height`` pixels, and no pixels."""
    import struct

    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bits, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + 16, 0, 0, 54) + info + b"\0" * 16
