"""Detector backends by name: a ``detector.backend`` made into its class.

Backends are imported only when one is made, so naming them (validating a
configuration, building ``--help``) loads no numpy, OpenCV or LiteRT. A new
backend is a ``FaceDetector`` subclass with a ``from_config`` and a line in
``config.BACKENDS``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .config import BACKENDS, DetectorConfig

if TYPE_CHECKING:
    from .base import FaceDetector


def backend_class(name: str) -> type[FaceDetector]:
    """The detector class registered as ``name``."""
    module, _, attr = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def make_detector(cfg: DetectorConfig) -> FaceDetector:
    """The detector ``cfg.backend`` names, with its model files fetched and verified."""
    return backend_class(cfg.backend).from_config(cfg)
