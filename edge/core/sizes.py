"""Detector input sizes: how a user writes them, and the rule the SSD network takes them by.

Pure Python on purpose: the command line validates ``--sizes`` while it builds
its help, before numpy or OpenCV are loaded.
"""

from __future__ import annotations

from typing import Any

SIZE_MULTIPLE = 4  # input sides the rebuilt SSD reproduces OpenCV's outputs at (Caffe's pooling rounding)
MIN_SIDE = 32


def fit_size(width: int, height: int) -> tuple[int, int]:
    """The nearest input size the network takes (both sides multiples of 4, at least 32)."""
    return tuple(max(MIN_SIDE, int(round(v / SIZE_MULTIPLE)) * SIZE_MULTIPLE) for v in (width, height))


def network_size(input_size: tuple[int, int] | str, width: int, height: int) -> tuple[int, int]:
    """The detector's input (width, height) for a frame: the configured size, or the frame's own."""
    if input_size == "frame":
        return width, height
    return int(input_size[0]), int(input_size[1])


def parse_sizes(value: Any) -> Any:
    """``"300x300,640x480"`` (a command line) as [(300, 300), (640, 480)]; other values pass through."""
    if not isinstance(value, str):
        return value
    try:
        sizes = [tuple(int(v) for v in part.lower().split("x")) for part in value.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(len(s) != 2 for s in sizes):
        raise ValueError("expected sizes as WIDTHxHEIGHT[,WIDTHxHEIGHT...], e.g. 300x300,640x480")
    return sizes


def check_sizes(sizes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sizes the int8 detector takes as they are: no silent rounding between two backends' figures."""
    for w, h in sizes:
        if fit_size(w, h) != (w, h):
            raise ValueError(f"{w}x{h}: sides must be multiples of {SIZE_MULTIPLE}, at least {MIN_SIDE}")
    return sizes
