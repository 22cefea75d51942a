"""Opt-in evidence: the frame of each unlock or denial, in a folder of bounded size.

Off unless ``service.snapshot_dir`` is set: a gate films people, and by
default it keeps no pictures of them. When on, the oldest files go first
once the folder would exceed its cap, so it never fills the SD card.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..core import atomic
from ..core.errors import ConfigError

logger = logging.getLogger(__name__)

SUFFIX = ".jpg"


class SnapshotStore:
    def __init__(self, folder: Path, *, max_bytes: int) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._total = sum(f.stat().st_size for f in self.folder.glob(f"*{SUFFIX}"))
        except OSError as e:
            raise ConfigError(
                f"service.snapshot_dir: cannot create {folder} ({e.strerror or e}); "
                "under the service, use a folder below /var/lib/maskgate"
            ) from e

    def save(self, image: np.ndarray, kind: str, when: datetime | None = None) -> Path | None:
        """Write ``image`` as JPEG named by time and event; drop the oldest beyond the cap."""
        import cv2

        when = when or datetime.now(UTC)
        ok, buf = cv2.imencode(SUFFIX, image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok or buf.nbytes > self.max_bytes:
            return None
        path = self.folder / f"{when.strftime('%Y%m%dT%H%M%S.%f')[:-3]}Z-{kind}{SUFFIX}"
        try:
            atomic.write_bytes(path, buf.tobytes())
            self._total += buf.nbytes
            if self._total > self.max_bytes:  # the folder is listed only when something must go
                self.prune()
        except OSError as e:  # a full or read-only disk must not stop the gate
            logger.warning("snapshot not saved: %s", e.strerror or e)
            return None
        return path

    def prune(self) -> None:
        files = sorted(self.folder.glob(f"*{SUFFIX}"))  # names sort by time
        sizes = [f.stat().st_size for f in files]
        total = sum(sizes)
        for f, size in zip(files, sizes, strict=True):
            if total <= self.max_bytes:
                break
            f.unlink(missing_ok=True)
            total -= size
        self._total = total
