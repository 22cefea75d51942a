"""Facts about the machine and libraries, recorded beside every result.

Versions come from package metadata, so recording them imports nothing heavy.
"""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version

PACKAGES = (
    "maskgate",
    "numpy",
    "opencv-python-headless",
    "opencv-python",
    "ai-edge-litert",
    "gpiozero",
    "pydantic",
    "tensorflow",
    "tensorflow-cpu",
    "keras",
    "scikit-learn",
    "matplotlib",
)


def library_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    found = {}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("model name", "Model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, object]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "arch": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def resolve_threads(threads: int = 0) -> int:
    """A thread count as configured: 0 means one per CPU core (at least one)."""
    return threads or os.cpu_count() or 1
