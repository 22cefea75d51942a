"""Frame sources: image folders and globs, video files, live sources with timeouts, the Pi camera adapter."""

from __future__ import annotations

import os
import sys
import threading
import time
import types

import cv2
import numpy as np
import pytest

from maskgate.edge.core.errors import ConfigError
from maskgate.edge.gate.config import SourceConfig
from maskgate.edge.gate.sources import (
    ImageSource,
    LiveSource,
    SourceLostError,
    VideoFileSource,
    describe_uri,
    image_paths,
    open_source,
)


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(3):
        cv2.imwrite(str(d / f"{i}.jpg"), np.full((20, 30, 3), 40 * i, np.uint8))
    (d / "broken.png").write_bytes(b"\x89PNG nope")
    (d / "notes.txt").write_text("x")
    return d


def test_uri_kinds(tmp_path, folder):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    assert [describe_uri(u) for u in ("picamera", "0", "rtsp://cam/stream", str(video), str(folder))] == [
        "picamera",
        "camera",
        "stream",
        "video",
        "images",
    ]


def test_image_folder_in_name_order_with_unreadable_files_skipped_and_listed(folder):
    src = open_source(SourceConfig(uri=str(folder), fps=10))
    frames = list(src)
    assert [f.name for f in frames] == ["0.jpg", "1.jpg", "2.jpg"]
    assert [f.timestamp for f in frames] == [0.0, 0.1, 0.2]
    assert [name for name, _ in src.skipped] == ["broken.png"]


def test_each_still_can_stand_for_several_frames_and_loop(folder):
    src = ImageSource(image_paths(str(folder / "[01].jpg")), fps=5, frames_per_image=2, loop=True)
    frames = [src.read() for _ in range(6)]
    assert [f.name for f in frames] == ["0.jpg", "0.jpg", "1.jpg", "1.jpg", "0.jpg", "0.jpg"]
    assert [f.index for f in frames] == list(range(6)) and frames[5].timestamp == pytest.approx(1.0)


def test_a_loop_over_nothing_readable_ends(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 no")
    assert ImageSource([tmp_path / "bad.jpg"], loop=True).read() is None


def test_a_looping_folder_whose_files_all_break_is_lost_not_ended(tmp_path):
    """The gate must not exit 0 (no restart) because the images it played became unreadable."""
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.full((8, 8, 3), 7, np.uint8))
    src = ImageSource([path], loop=True)
    assert src.read() is not None
    path.write_bytes(b"broken")
    with pytest.raises(SourceLostError, match="none of 1 reads any more"):
        src.read()


@pytest.mark.parametrize(
    "uri, message", [("nowhere/x", "no such file, folder or camera"), ("empty", "no images found")]
)
def test_bad_image_sources_are_config_errors(tmp_path, monkeypatch, uri, message):
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=message):
        open_source(SourceConfig(uri=uri))


def test_video_file_frames_in_order_and_a_non_video_is_refused(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
    for i in range(5):
        writer.write(np.full((24, 32, 3), 50 * i, np.uint8))
    writer.release()
    with open_source(SourceConfig(uri=str(path))) as src:
        assert isinstance(src, VideoFileSource)
        frames = list(src)
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    assert frames[4].timestamp == pytest.approx(0.4)
    assert abs(int(frames[4].image.mean()) - 200) < 10
    bogus = tmp_path / "clip.mp4"
    bogus.write_text("not a video")
    with pytest.raises(ConfigError, match="not a video OpenCV can open"):
        open_source(SourceConfig(uri=str(bogus)))


def _clip(path, frames: int):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))  # noise: every frame a real size
    writer.release()
    return path


@pytest.mark.parametrize("loop", [False, True])
def test_a_video_that_becomes_unreadable_is_lost_not_ended(tmp_path, loop):
    """Read to its end a video is over (or starts again); truncated under the reader it is lost."""
    path = _clip(tmp_path / "clip.avi", 60)
    with VideoFileSource(str(path), loop=loop) as src:
        frames = [src.read() for _ in range(10)]
        assert all(f is not None for f in frames)
        os.truncate(path, path.stat().st_size // 3)
        with pytest.raises(SourceLostError, match="clip.avi"):
            for _ in range(100):
                src.read()


def test_a_video_read_to_its_end_ends_or_loops(tmp_path):
    path = _clip(tmp_path / "clip.avi", 12)
    with VideoFileSource(str(path)) as src:
        assert len(list(src)) == 12
    with VideoFileSource(str(path), loop=True) as src:
        assert [src.read().index for _ in range(30)][-1] == 29


def test_live_source_returns_the_newest_frame_and_drops_stale_ones():
    counter = iter(range(1000))

    def grab():
        time.sleep(0.01)
        return np.full((2, 2, 3), next(counter) % 256, np.uint8)

    src = LiveSource(grab, lambda: None, name="fake", timeout_s=1.0)
    time.sleep(0.2)
    frame = src.read()
    assert frame.image[0, 0, 0] >= 10  # about 20 frames came in; the old ones were not queued
    assert src.read().index > frame.index
    src.close()
    src.close()


def test_live_source_that_stops_delivering_is_lost_not_hung():
    src = LiveSource(lambda: (time.sleep(5), None)[1], lambda: None, name="camera 0", timeout_s=0.2)
    t = time.monotonic()
    with pytest.raises(SourceLostError, match="camera 0: no frame for 0.2 s"):
        src.read()
    assert time.monotonic() - t < 1.0
    failing = LiveSource(lambda: None, lambda: None, name="camera 1", timeout_s=5)
    with pytest.raises(SourceLostError, match="camera 1: the source returned no frame"):
        failing.read()


def test_a_camera_that_is_not_there_is_a_lost_source():
    with pytest.raises(SourceLostError, match="cannot open"):
        open_source(SourceConfig(uri="99", read_timeout_s=0.5))


def test_picamera_adapter_configures_bgr_frames_and_closes_in_order(monkeypatch):
    calls = []

    class FakePicamera2:
        def create_video_configuration(self, **kw):
            calls.append(("configure", kw["main"], kw["controls"]))
            return kw

        def configure(self, config):
            pass

        def start(self):
            calls.append("start")

        def capture_array(self):
            time.sleep(0.01)
            return np.zeros((480, 640, 3), np.uint8)

        def stop(self):
            calls.append("stop")

        def close(self):
            calls.append("close")

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=FakePicamera2))
    with open_source(SourceConfig(uri="picamera", fps=20), cancel=threading.Event()) as src:
        assert src.live and src.read().image.shape == (480, 640, 3)
    assert calls == [
        ("configure", {"size": (640, 480), "format": "RGB888"}, {"FrameRate": 20.0}),
        "start",
        "stop",
        "close",
    ]


def test_picamera_failing_to_start_is_a_lost_source_and_the_camera_is_released(monkeypatch):
    class Broken:
        def __init__(self):
            raise IndexError("list index out of range")  # what picamera2 raises with no camera attached

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=Broken))
    with pytest.raises(SourceLostError, match="cannot start the camera"):
        open_source(SourceConfig(uri="picamera"))

    closed = []

    class Busy:
        def create_video_configuration(self, **kw):
            return kw

        def configure(self, config):
            raise RuntimeError("Failed to acquire camera: Device or resource busy")

        def close(self):
            closed.append(True)

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=Busy))
    with pytest.raises(SourceLostError, match="resource busy"):
        open_source(SourceConfig(uri="picamera"))
    assert closed == [True]  # or every retry would find it still held
