"""``maskgate detect``: batch inference over images or a video, one JSON line per frame.

Each line is ``{"image": name}`` (or ``{"frame": n}`` for videos and cameras)
with ``"faces": [{"box": [x1, y1, x2, y2], "label", "score",
"detection_score"}]`` in pixels of the original frame (and ``"landmarks"``, five
[x, y] points, from detectors that predict them), plus ``"ms"``, the
frame's detect + classify time. The JSONL file and the ``--annotate`` folder
appear only when the run completes; an interrupted run leaves neither.

``reference`` (``--reference aizoo``) runs a peer's published pipeline instead of
maskgate's (``tools.peers``), writing the same lines with the peer's own labels, so
``maskgate score`` compares both pipelines on any VOC folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from tqdm import tqdm

from ..core import atomic
from ..core.errors import ConfigError, DataError, OutputExistsError
from ..core.imageio import IMAGE_SUFFIXES
from ..core.timing import summarize
from ..gate.analyzer import FrameAnalyzer
from ..gate.config import GateConfig
from ..gate.draw import annotate
from ..gate.sources import FrameSource, ImageSource, VideoFileSource, open_source
from .peers import REFERENCES
from .peers.aizoo import AizooReference

logger = logging.getLogger(__name__)


class Annotator:
    """Writes annotated images under their own names, or one annotated video per video source."""

    def __init__(self, folder: Path, source: FrameSource) -> None:
        self.folder = folder
        self.video_fps = source.fps if isinstance(source, VideoFileSource) else None
        self.video_name = Path(getattr(source, "path", "camera")).stem + ".mp4"
        self._writer = None

    def write(self, frame, faces) -> None:
        import cv2

        image = annotate(frame.image, faces)
        if frame.name is not None:
            name = frame.name if Path(frame.name).suffix.lower() in IMAGE_SUFFIXES else frame.name + ".jpg"
            ok, buf = cv2.imencode(Path(name).suffix, image)
            if ok:
                atomic.write_bytes(self.folder / name, buf.tobytes())
            return
        if self._writer is None:
            h, w = image.shape[:2]
            path = self.folder / self.video_name
            self._writer = cv2.VideoWriter(
                str(path), cv2.VideoWriter_fourcc(*"mp4v"), self.video_fps or 15.0, (w, h)
            )
            if not self._writer.isOpened():
                raise DataError(f"--annotate: OpenCV cannot write {path.name} (no mp4v encoder)")
        self._writer.write(image)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def make_analyzer(cfg: GateConfig, reference: str | None) -> FrameAnalyzer | AizooReference:
    if reference is None:
        return FrameAnalyzer.from_config(cfg.detector, cfg.classifier)
    if reference == "aizoo":
        return AizooReference.fetched(threads=cfg.detector.threads)
    raise ConfigError(f"--reference {reference}: unknown; one of {', '.join(REFERENCES)}")


def detect(
    cfg: GateConfig,
    *,
    jsonl: Path,
    annotate_dir: Path | None = None,
    progress: bool = True,
    reference: str | None = None,
) -> dict:
    """Run the analyzer (or the ``reference`` peer, on the detector's threads) over ``cfg.source``
    and write the JSONL; return a summary."""
    if Path(jsonl).is_dir():
        raise OutputExistsError(f"--jsonl {jsonl} is a directory; name a file")
    atomic.check_creatable(Path(jsonl), "--jsonl")
    if annotate_dir is not None:
        if Path(annotate_dir).exists():
            raise OutputExistsError(f"--annotate {annotate_dir} already exists; choose another folder")
        atomic.check_creatable(Path(annotate_dir), "--annotate")
    latencies: list[float] = []
    frames = faces = 0
    with contextlib.ExitStack() as stack:
        analyzer = make_analyzer(cfg, reference)
        stack.callback(analyzer.close)
        source = stack.enter_context(open_source(cfg.source))
        total = len(source.paths) * source.frames_per_image if isinstance(source, ImageSource) else None
        out = stack.enter_context(atomic.staged_file(jsonl))
        annotator = None
        if annotate_dir is not None:
            folder = stack.enter_context(atomic.staged_dir(annotate_dir))
            annotator = Annotator(folder, source)
            stack.callback(annotator.close)  # runs before the staged folder is moved into place
        bar = stack.enter_context(tqdm(total=total, desc="detect", unit="frame", disable=not progress))
        for frame in source:
            analysis = analyzer.analyze(frame.image)
            key = {"image": frame.name} if frame.name is not None else {"frame": frame.index}
            row = key | {
                "faces": [f.as_json() for f in analysis.faces],
                "ms": round(analysis.timings.total, 2),
            }
            out.write(json.dumps(row) + "\n")
            if annotator is not None:
                annotator.write(frame, analysis.faces)
            latencies.append(analysis.timings.total)
            frames += 1
            faces += len(analysis.faces)
            bar.update()
            if cfg.source.max_frames is not None and frames >= cfg.source.max_frames:
                break
        if not frames:
            raise DataError(f"source {cfg.source.uri}: no readable frame")
    skipped = getattr(source, "skipped", [])
    return {"frames": frames, "faces": faces, "skipped": skipped, "latency_ms": summarize(latencies)}
