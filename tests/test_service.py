"""The gate's main loop with fake frames and faces, real decision logic and MockFactory pins.

Covers the fail-safe rules: relay off at start, at the end, on a crash, and
while the camera is lost; reconnect with backoff; a stop request honoured
while the camera is silent.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from fakes import FakeAnalyzer, ScriptedSource, relay_states
from maskgate.edge.core.errors import ConfigError
from maskgate.edge.gate.config import GateConfig, build
from maskgate.edge.gate.notify import Notifier
from maskgate.edge.gate.outputs import Outputs
from maskgate.edge.gate.service import GateService
from maskgate.edge.gate.sources import LiveSource, SourceLostError

pytestmark = pytest.mark.arm64  # in `make check-arm64`'s subset (pyproject.toml)


def make_service(factory, sources, *, cfg: GateConfig | None = None, analyzer=None, **decision):
    cfg = cfg or build(
        {
            "decision": {"pulse_s": 30.0, **decision},
            "source": {"pace": False, "reconnect_initial_s": 0.01, "reconnect_max_s": 0.02},
        }
    )
    outputs = Outputs.from_config(cfg.outputs, pulse_s=cfg.decision.pulse_s, factory=factory)
    queue = list(sources)

    def open_source(stop):
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return GateService(
        cfg,
        outputs=outputs,
        analyzer=analyzer or FakeAnalyzer(),
        open_source=open_source,
        notifier=Notifier({}),
    )


def test_a_masked_face_unlocks_and_the_relay_is_off_when_the_source_ends(mock_factory):
    source = ScriptedSource([0, 1, 1, 1, 1, 1])
    svc = make_service(mock_factory, [source])
    assert svc.run(threading.Event()) == 0
    assert [e.kind for e in svc.events] == ["unlock"]
    assert relay_states(mock_factory) == [False, True, False]  # on at the unlock, off at the end
    assert source.closed


def test_an_unmasked_face_keeps_the_door_locked(mock_factory):
    svc = make_service(mock_factory, [ScriptedSource([1, 2, 2, 2, 2])])
    svc.run(threading.Event())
    assert [e.kind for e in svc.events] == ["deny"]
    assert relay_states(mock_factory) == [False]
    assert [bool(s.state) for s in mock_factory.pin(22).states] == [False, True, False]


def test_losing_the_camera_turns_the_relay_off_and_reconnects(mock_factory, caplog):
    first = ScriptedSource([1, 1, 1, 1], lost=True)
    second = ScriptedSource([0, 0], t0=100.0)
    svc = make_service(mock_factory, [first, SourceLostError("camera 0: cannot open"), second])
    with caplog.at_level("INFO", logger="maskgate.gate"):
        svc.run(threading.Event())
    assert [e.kind for e in svc.events] == ["unlock", "cancel"]
    assert svc.events[1].detail == "camera lost"
    assert relay_states(mock_factory) == [False, True, False]
    assert first.closed and second.closed
    messages = [r.getMessage() for r in caplog.records]
    assert sum("source lost: camera unplugged" in m for m in messages) == 1
    assert not any("retrying" in m for m in messages)  # the failed reopen is part of the same outage
    assert any("source back after 2 attempt(s)" in m for m in messages)


def test_a_file_that_will_not_play_on_ends_the_gate_with_a_fault_so_systemd_restarts_it(mock_factory, caplog):
    video = ScriptedSource([1, 1, 1, 1], lost=True, live=False)  # a video file truncated under the reader
    svc = make_service(mock_factory, [video])
    with caplog.at_level("INFO", logger="maskgate.gate"), pytest.raises(SourceLostError) as e:
        svc.run(threading.Event())
    assert e.value.exit_status == 1  # not 2: a restart may find the file whole again
    assert relay_states(mock_factory) == [False, True, False] and video.closed
    messages = [r.getMessage() for r in caplog.records]
    assert "source lost: camera unplugged; relay off" in messages


def test_a_looping_file_that_breaks_is_reopened_like_a_camera(mock_factory):
    cfg = build(
        {"source": {"pace": False, "loop": True, "reconnect_initial_s": 0.01, "reconnect_max_s": 0.02}}
    )
    broken, whole = ScriptedSource([0, 0], lost=True, live=False), ScriptedSource([0, 0, 0])
    # the file does not open at the first retry: lost like a camera, not a configuration error
    unopenable = ConfigError("source clip.avi: not a video OpenCV can open")
    svc = make_service(mock_factory, [broken, unopenable, whole], cfg=cfg)
    svc.run(threading.Event())
    assert svc.stats.frames == 5 and broken.closed and whole.closed


def test_a_camera_missing_at_start_is_awaited_with_one_log_line(mock_factory, caplog):
    missing = [SourceLostError("camera 0: cannot open")] * 3
    svc = make_service(mock_factory, [*missing, ScriptedSource([0, 0])])
    with caplog.at_level("INFO", logger="maskgate.gate"):
        svc.run(threading.Event())
    messages = [r.getMessage() for r in caplog.records]
    assert sum("camera 0: cannot open; retrying" in m for m in messages) == 1
    assert any("source back after 4 attempt(s)" in m for m in messages)
    assert svc.stats.frames == 2


class FlappingSource(ScriptedSource):
    """Opens fine, then fails its first read: a busy or half-unplugged camera."""

    def read(self):
        raise SourceLostError("camera 0: the source returned no frame")


def test_a_source_that_opens_but_never_delivers_is_retried_with_backoff_not_in_a_spin(mock_factory, caplog):
    cfg = build({"source": {"pace": False, "reconnect_initial_s": 0.05, "reconnect_max_s": 0.2}})
    opens = []
    stop = threading.Event()
    svc = make_service(mock_factory, [], cfg=cfg)

    def open_source(_stop):
        opens.append(time.monotonic())
        return FlappingSource([], live=True)

    svc._open = open_source
    threading.Timer(1.0, stop.set).start()
    with caplog.at_level("INFO", logger="maskgate.gate"):
        svc.run(stop)
    assert 4 <= len(opens) <= 9  # waits of 0.05, 0.1, 0.2, 0.2 ... s, not thousands of reopens
    assert [round(b - a, 1) for a, b in zip(opens, opens[1:], strict=False)][:3] == [0.1, 0.1, 0.2]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("source lost" in m for m in messages) == 1 and not any("source back" in m for m in messages)
    assert relay_states(mock_factory) == [False]


def test_a_crash_in_the_loop_leaves_the_relay_off(mock_factory):
    svc = make_service(mock_factory, [ScriptedSource([1] * 10)], analyzer=FakeAnalyzer(crash_at=6))
    with pytest.raises(RuntimeError, match="inference failed"):
        svc.run(threading.Event())
    assert relay_states(mock_factory) == [False, True, False]


def test_stop_is_honoured_promptly_while_the_camera_is_silent(mock_factory):
    unblock = threading.Event()
    log = []

    def grab():  # a camera that delivers one frame, then hangs in the driver
        if not log:
            log.append("frame")
            return np.zeros((4, 4, 3), np.uint8)
        unblock.wait(5)
        log.append("grab returned")
        return None

    stop = threading.Event()
    live = LiveSource(grab, lambda: log.append("released"), name="camera 0", timeout_s=60, cancel=stop)
    svc = make_service(mock_factory, [live])
    runner = threading.Thread(target=svc.run, args=(stop,))
    runner.start()
    time.sleep(0.3)
    t = time.monotonic()
    stop.set()
    runner.join(timeout=2.0)
    assert not runner.is_alive() and time.monotonic() - t < 2.0
    assert svc.stats.frames == 1
    assert log == ["frame"]  # the device is not released under a read that is still running
    unblock.set()
    live._thread.join(1)
    assert log == ["frame", "grab returned", "released"]  # the reading thread released it after


def test_max_frames_ends_the_run(mock_factory):
    cfg = build({"source": {"max_frames": 3, "pace": False}})
    svc = make_service(mock_factory, [ScriptedSource([0] * 10)], cfg=cfg)
    svc.run(threading.Event())
    assert svc.stats.frames == 3


def test_snapshots_are_saved_only_when_configured(mock_factory, tmp_path):
    cfg = build({"source": {"pace": False}, "service": {"snapshot_dir": str(tmp_path / "snaps")}})
    svc = make_service(mock_factory, [ScriptedSource([1, 1, 1, 0, 0, 2, 2, 2])], cfg=cfg)
    svc.run(threading.Event())
    names = sorted(p.name for p in (tmp_path / "snaps").iterdir())
    assert len(names) == 2 and {n.rsplit("-", 1)[1] for n in names} == {"unlock.jpg", "deny.jpg"}


def test_a_live_state_given_to_the_service_follows_frames_events_and_the_camera(mock_factory):
    from maskgate.edge.gate.live import LiveState

    live = LiveState()
    svc = make_service(mock_factory, [ScriptedSource([1, 1, 1, 1], lost=True), ScriptedSource([0, 0])])
    svc.live = live
    svc.run(threading.Event())
    state = live.snapshot()
    assert state["counters"]["frames"] == 6 and state["counters"]["relay_pulses"] == 1
    assert [e.kind for e in svc.events] == ["unlock", "cancel"]
    # the ring holds the decisions and, once per outage, the camera's going and coming back
    events = live.events_after(0)
    assert [e.kind for e in events] == ["unlock", "cancel", "camera_lost", "camera_back"]
    assert events[2].detail == "camera unplugged" and events[3].detail.startswith("after 1 attempt(s)")
    assert events[0].scores[0].face == 1 and events[0].scores[0].height_px == 120
    assert state["decisions"] == {"unlock": 1, "cancel": 1}  # the camera's events are no decisions
    assert state["counters"]["reconnects"] == 1 and state["camera"] == "ended"
    assert live.latest()[0] == 6


def test_stuck_web_clients_never_slow_the_gate_loop(mock_factory):
    """Viewers that never read their live picture or events: the gate runs as fast as without them."""
    import socket

    from maskgate.edge.gate.live import LiveState
    from maskgate.edge.web.server import WebServer

    codes = [1, 1, 1, 0, 0, 2, 2, 2, 0, 0] * 150

    def timed(live):
        svc = make_service(mock_factory, [ScriptedSource(codes)])
        svc.live = live
        t = time.monotonic()
        with svc.outputs:
            svc.run(threading.Event())
        return time.monotonic() - t, svc

    alone, _ = timed(LiveState())
    live = LiveState()
    cfg = build({"web": {"listen": "127.0.0.1:0", "stream_fps": 30, "max_clients": 8}}).web
    with WebServer(cfg, live) as server:
        stuck = []
        for path in ("/stream.mjpg", "/stream.mjpg", "/api/events"):
            s = socket.create_connection(("127.0.0.1", server.port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())  # and never read
            stuck.append(s)
        watched, svc = timed(live)
        for s in stuck:
            s.close()
    assert svc.stats.frames == len(codes) and live.snapshot()["counters"]["frames"] == len(codes)
    assert watched < 2 * alone + 0.5, (alone, watched)
