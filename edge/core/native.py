"""Native libraries' own messages on file descriptor 2, silenced or captured.

LiteRT, TensorFlow, OpenCV and FFmpeg write straight to descriptor 2, below Python's
``sys.stderr``: "Created TensorFlow Lite XNNPACK delegate", "cap_v4l.cpp ... can't open
camera", "[tcp @ 0x...] Connection refused". Around a call that prints them, these
helpers either drop them or hand them back as text, so the gate can say them once per
outage instead of on every retry. Failures still surface as Python exceptions.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Drop what native code writes to descriptor 2 inside the block."""
    with _redirected(open(os.devnull, "wb")):
        yield


class Captured:
    """The text native code wrote inside a ``captured_native_stderr`` block (after it ends)."""

    text = ""

    @property
    def lines(self) -> list[str]:
        return [line.strip() for line in self.text.splitlines() if line.strip()]


@contextlib.contextmanager
def captured_native_stderr(limit: int = 4096) -> Iterator[Captured]:
    """Collect what native code writes to descriptor 2 inside the block (its first ``limit`` bytes)."""
    captured = Captured()
    with tempfile.TemporaryFile() as sink:
        try:
            with _redirected(sink, close=False):
                yield captured
        finally:
            sink.seek(0)
            captured.text = sink.read(limit).decode("utf-8", "replace")


@contextlib.contextmanager
def _redirected(target, *, close: bool = True) -> Iterator[None]:
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 to redirect
        yield
        return
    try:
        os.dup2(target.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        if close:
            target.close()
