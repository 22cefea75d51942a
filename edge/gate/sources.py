"""Where frames come from: a Pi camera, OpenCV ``VideoCapture``, or image files.

Every source gives ``Frame`` objects through ``read()`` and says when it is
finished (``None``) or lost (``SourceLostError``); the runtime above never
needs to know which kind it has. Live sources (cameras, streams) are read by
a background thread that keeps only the newest frame, so a slow inference
step processes what the camera sees *now*, not a queue of stale frames.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import ConfigError, ImageReadError, MaskgateError
from ..core.imageio import IMAGE_SUFFIXES, MAX_PIXELS, read_image
from ..core.native import captured_native_stderr
from .config import SourceConfig

logger = logging.getLogger(__name__)

PICAMERA = "picamera"
CANCEL_CHECK_S = 0.1
CLOSE_WAIT_S = 0.5
OPEN_TIMEOUT_S = 2.0
STREAM_PREFIXES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://")


class SourceLostError(MaskgateError, OSError):
    """The source stopped delivering frames (camera unplugged, stream dropped, read timeout, a
    video file that became unreadable). A fault, not a user error: a restart may mend it."""

    exit_status = 1
    detail = ""  # what the native library said (OpenCV, FFmpeg), shown once per outage


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # HxWx3 uint8 BGR
    index: int  # 0-based position in the stream
    timestamp: float  # seconds: time.monotonic() for live sources, media time for files
    name: str | None = None  # the file name, for image sources


class FrameSource(ABC):
    """A stream of frames; a context manager whose ``close()`` may be called more than once."""

    live: bool = False  # True for cameras and network streams: frames arrive in real time

    @abstractmethod
    def read(self) -> Frame | None:
        """The next frame, or ``None`` at the end of a finite source."""

    def close(self) -> None:  # noqa: B027 - sources without resources need nothing
        pass

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def image_paths(uri: str) -> list[Path]:
    """The images a file, folder or glob names, sorted; folders are read one level deep."""
    path = Path(uri)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    elif glob.has_magic(uri):
        found = [Path(p) for p in glob.glob(uri) if Path(p).is_file()]
    else:
        raise ConfigError(f"source {uri}: no such file, folder or camera")
    found = sorted(p for p in found if not p.name.startswith("."))
    if not found:
        raise ConfigError(f"source {uri}: no images found")
    return found


class ImageSource(FrameSource):
    """Still images as a stream: each stands for ``frames_per_image`` frames at ``fps``.

    Unreadable files are skipped with a warning and listed in ``skipped``;
    one bad file in a folder of thousands must not end a batch run.
    """

    def __init__(
        self,
        paths: list[Path],
        *,
        fps: float = 15.0,
        frames_per_image: int = 1,
        loop: bool = False,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        self.paths = paths
        self.max_pixels = max_pixels
        self.fps = fps
        self.frames_per_image = frames_per_image
        self.loop = loop
        self.skipped: list[tuple[str, str]] = []
        self._next = 0  # position in paths
        self._index = 0  # frames delivered
        self._current: tuple[np.ndarray, str] | None = None
        self._repeats = 0

    def read(self) -> Frame | None:
        if self._current is None or self._repeats >= self.frames_per_image:
            self._current = self._next_image()
            self._repeats = 0
            if self._current is None:
                return None
        image, name = self._current
        self._repeats += 1
        frame = Frame(image, self._index, self._index / self.fps, name)
        self._index += 1
        return frame

    def _next_image(self) -> tuple[np.ndarray, str] | None:
        failures = 0
        while True:
            if self._next >= len(self.paths):
                if not self.loop:
                    return None
                if failures >= len(self.paths):
                    if not self._index:  # nothing ever read: nothing to loop over, an end
                        return None
                    # they read before and none does now: a lost source (retried), not an end
                    raise SourceLostError(
                        f"images {self.paths[0].parent}: none of {len(self.paths)} reads any more"
                    )
                self._next = 0
            path = self.paths[self._next]
            self._next += 1
            try:
                return read_image(path, max_pixels=self.max_pixels), path.name
            except ImageReadError as e:
                failures += 1
                if len(self.skipped) < len(self.paths):
                    self.skipped.append((path.name, str(e)))
                    logger.warning("skipped %s: %s", path.name, e)


class VideoFileSource(FrameSource):
    """A video file through OpenCV, every frame in order, timestamped by its position in the file.

    The end of the file is the end of the source (or, with ``loop``, its start again); a file that
    stops giving frames before its end, or changes or disappears while it is read, is a lost source,
    not an end: a gate on it must not stop as if its work were done.
    """

    def __init__(self, path: str, *, loop: bool = False) -> None:
        import cv2

        self.path = path
        self.loop = loop
        with captured_native_stderr() as noise:
            self._cap = cv2.VideoCapture(path)
        if not self._cap.isOpened():
            why = f" ({noise.lines[-1][:120]})" if noise.lines else ""
            raise ConfigError(f"source {path}: not a video OpenCV can open{why}")
        self.fps = self._cap.get(cv2.CAP_PROP_FPS) or 25.0
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)  # 0: the container does not say
        self._stat = _file_identity(path)
        self._index = 0  # frames delivered
        self._position = 0  # frames read in the current pass

    def read(self) -> Frame | None:
        import cv2

        ok, image = self._cap.read()
        if not ok:
            self._check_end()
            if not self.loop or not self._index:
                return None
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self._position = 0
            ok, image = self._cap.read()
            if not ok:
                raise SourceLostError(f"video {self.path}: no frame after rewinding to its start")
        frame = Frame(image, self._index, self._index / self.fps, None)
        self._index += 1
        self._position += 1
        return frame

    def _check_end(self) -> None:
        """A failed read is the end only if the file is the one opened and was read to its end."""
        now = _file_identity(self.path)
        if now != self._stat:
            what = "was removed" if now is None else "changed while it was read"
            raise SourceLostError(f"video {self.path}: the file {what} (at frame {self._position})")
        # containers' frame counts are estimates: a few frames short of it is still the end
        if self.frame_count and self._position < self.frame_count - max(2, self.frame_count // 50):
            raise SourceLostError(
                f"video {self.path}: unreadable at frame {self._position} of {self.frame_count}"
            )

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _file_identity(path: str) -> tuple[int, int, int] | None:
    """Inode, size and modification time: what tells the same file from a replaced or truncated one."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class LiveSource(FrameSource):
    """A camera or stream read by a background thread that keeps only the newest frame.

    ``read()`` waits at most ``timeout_s`` for a frame newer than the last one
    returned; a source that stops delivering raises ``SourceLostError`` rather
    than blocking the gate (and its watchdog) indefinitely. Setting ``cancel``
    makes a waiting ``read()`` return ``None`` promptly, so a stop request is
    never stuck behind a silent camera.
    """

    live = True

    def __init__(
        self,
        grab: Callable[[], np.ndarray | None],
        release: Callable[[], None],
        *,
        name: str,
        timeout_s: float,
        cancel: threading.Event | None = None,
    ) -> None:
        self.name = name
        self._cancel = cancel or threading.Event()
        self._grab = grab
        self._release = release
        self._timeout = timeout_s
        self._cond = threading.Condition()
        self._latest: np.ndarray | None = None
        self._seq = 0  # frames grabbed
        self._returned = 0  # seq of the last frame returned
        self._error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"grab-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    image = self._grab()
                except Exception as e:  # any driver failure ends this source; the runtime reopens it
                    image, error = None, f"{e.__class__.__name__}: {e}"
                else:
                    error = "the source returned no frame"
                with self._cond:
                    if image is None:
                        self._error = error
                        self._cond.notify_all()
                        return
                    self._latest = image
                    self._seq += 1
                    self._cond.notify_all()
        finally:
            # Released by the thread that reads it: camera drivers and VideoCapture are not
            # safe to close from one thread while another is inside a read.
            try:
                self._release()
            except Exception as e:  # a driver that fails to close must not hide why the source ended
                logger.debug("%s: release failed: %s", self.name, e)

    def read(self) -> Frame | None:
        deadline = time.monotonic() + self._timeout
        with self._cond:
            while self._seq == self._returned and self._error is None:
                if self._cancel.is_set():
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SourceLostError(f"{self.name}: no frame for {self._timeout:g} s")
                self._cond.wait(min(left, CANCEL_CHECK_S))
            if self._seq == self._returned:
                raise SourceLostError(f"{self.name}: {self._error}")
            image, self._returned = self._latest, self._seq
        return Frame(image, self._returned - 1, time.monotonic(), None)

    def close(self) -> None:
        """Ask the reading thread to stop and release the device; wait a moment, never block on it.

        A grab stuck in the driver returns within a frame period or its read timeout, and the
        thread then releases the device itself.
        """
        self._stop.set()
        self._thread.join(timeout=CLOSE_WAIT_S)


def open_capture(uri: str | int, cfg: SourceConfig, cancel: threading.Event | None = None) -> LiveSource:
    """A USB camera (index) or network stream through OpenCV ``VideoCapture``."""
    import cv2

    # Bounded waits: a stream that does not answer must not block the loop (or its stop request).
    timeouts = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        int(OPEN_TIMEOUT_S * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        int(cfg.read_timeout_s * 1000),
    ]
    # OpenCV and FFmpeg say why a source does not open on descriptor 2 ("can't open camera by
    # index", "Connection refused"), on every retry; taken into the one line the outage logs instead.
    with captured_native_stderr() as noise:
        cap = cv2.VideoCapture(uri, cv2.CAP_ANY, timeouts) if isinstance(uri, str) else cv2.VideoCapture(uri)
    name = f"camera {uri}" if isinstance(uri, int) else f"stream {uri}"
    if not cap.isOpened():
        cap.release()
        error = SourceLostError(f"{name}: cannot open")
        error.detail = noise.lines[-1][:160] if noise.lines else ""
        raise error
    if isinstance(uri, int):
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
        cap.set(cv2.CAP_PROP_FPS, cfg.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)

    def grab() -> np.ndarray | None:
        ok, image = cap.read()
        return image if ok else None

    return LiveSource(grab, cap.release, name=name, timeout_s=cfg.read_timeout_s, cancel=cancel)


def open_picamera(cfg: SourceConfig, cancel: threading.Event | None = None) -> LiveSource:
    """The Raspberry Pi camera through picamera2 (imported only here: it exists only on a Pi)."""
    from picamera2 import Picamera2

    cam = None
    try:
        cam = Picamera2()
        # "RGB888" is B, G, R byte order in memory: OpenCV's order, so no conversion per frame.
        config = cam.create_video_configuration(
            main={"size": (cfg.width, cfg.height), "format": "RGB888"},
            controls={"FrameRate": cfg.fps},
            buffer_count=2,
        )
        cam.configure(config)
        cam.start()
    except Exception as e:  # libcamera raises RuntimeError, IndexError (no camera), OSError
        if cam is not None:
            with contextlib.suppress(Exception):  # released, or every retry would find it busy
                cam.close()
        raise SourceLostError(f"source picamera: cannot start the camera ({e})") from e

    def release() -> None:
        try:
            cam.stop()
        finally:
            cam.close()

    return LiveSource(
        cam.capture_array, release, name="picamera", timeout_s=cfg.read_timeout_s, cancel=cancel
    )


def describe_uri(uri: str) -> str:
    """What kind of source ``uri`` names: picamera, camera, stream, video or images."""
    if uri == PICAMERA:
        return "picamera"
    if uri.isdigit():
        return "camera"
    if uri.lower().startswith(STREAM_PREFIXES):
        return "stream"
    path = Path(uri)
    if path.is_file() and path.suffix.lower() not in IMAGE_SUFFIXES:
        return "video"
    return "images"


def open_source(cfg: SourceConfig, *, cancel: threading.Event | None = None) -> FrameSource:
    """The source ``cfg.uri`` names; a missing file is a ``ConfigError``, a camera that
    will not open a ``SourceLostError`` (it may come back)."""
    uri = cfg.uri
    kind = describe_uri(uri)
    if kind == "picamera":
        return open_picamera(cfg, cancel)
    if kind == "camera":
        return open_capture(int(uri), cfg, cancel)
    if kind == "stream":
        return open_capture(uri, cfg, cancel)
    if kind == "video":
        return VideoFileSource(uri, loop=cfg.loop)
    return ImageSource(
        image_paths(uri),
        fps=cfg.fps,
        frames_per_image=cfg.frames_per_image,
        loop=cfg.loop,
        max_pixels=int(cfg.max_image_mp * 1e6),
    )
