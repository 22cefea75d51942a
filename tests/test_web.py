"""The web server over a LiveState fed by hand, on 127.0.0.1 at a free port, asked with urllib.

No browser: the pages are fetched as files; the API, the event stream, the live picture, the
health check, the metrics and the token rules are checked on the wire.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import socket
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from fakes import detected_face
from maskgate.edge.core.errors import ConfigError
from maskgate.edge.gate.analyzer import Timings
from maskgate.edge.gate.config import build
from maskgate.edge.gate.live import LiveState
from maskgate.edge.gate.outputs import Signals
from maskgate.edge.web import server as server_module
from maskgate.edge.web.server import WebServer

TOKEN = "correct-horse-battery-staple"


def web_cfg(**web):
    return build({"web": {"enabled": True, "listen": "127.0.0.1:0", **web}}).web


def feed(live: LiveState, n: int = 1) -> None:
    image = np.full((240, 320, 3), 90, np.uint8)
    for _ in range(n):
        live.frame(image, [detected_face(True, (40, 40, 120, 160))], Timings(3.0, 0.5, 1.5),
                   Signals(True, True, False, False, 1), "unlocked")  # fmt: skip


@pytest.fixture
def live():
    live = LiveState(max_events=8)
    live.set_versions(detector="fake", classifier="fake-bundle")
    return live


@pytest.fixture
def server(live):
    with WebServer(web_cfg(), live) as s:
        yield s


def get(server, path, headers=None, timeout=5):
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_state_is_json_with_door_faces_fps_latencies_camera_uptime_and_versions(server, live):
    feed(live, 3)
    status, headers, body = get(server, "/api/state")
    state = json.loads(body)
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert state["door"]["relay"] is True and state["faces"][0]["decision"] == "masked"
    assert state["camera"] == "up" and state["versions"]["detector"] == "fake"
    assert set(state["latency_ms"]) == {"detect", "preprocess", "classify", "total"}
    assert {"fps", "uptime_s", "healthy", "kiosk"} <= set(state)


def test_healthz_is_200_while_frames_flow_and_503_while_the_camera_is_lost(server, live):
    assert get(server, "/healthz")[0] == 503  # no frame yet
    feed(live)
    assert get(server, "/healthz")[0] == 200
    live.camera("reconnecting")
    assert get(server, "/healthz")[0] == 503


def test_pages_and_static_files_are_served_and_unknown_paths_are_404(server):
    pages = {"/": "text/html", "/kiosk": "text/html", "/static/kiosk.js": "text/javascript",
             "/static/index.css": "text/css", "/static/strings.json": "application/json"}  # fmt: skip
    for path, kind in pages.items():
        status, headers, _ = get(server, path)
        assert status == 200 and headers["Content-Type"].startswith(kind), path
    strings = json.loads(get(server, "/static/strings.json")[2])
    assert set(strings["en"]) == set(strings["de"])  # every text in both languages
    for path in ("/nothing", "/static/__init__.py", "/static/../server.py", "/static/.hidden.js"):
        assert get(server, path)[0] == 404, path


def test_no_endpoint_accepts_a_write(server):
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}/api/state", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 405


def test_metrics_parse_as_prometheus_text_with_maskgate_names(server, live):
    from prometheus_client.parser import text_string_to_metric_families

    feed(live, 4)
    live.event("unlock", (1,))
    status, _, body = get(server, "/metrics")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert status == 200 and all(name.startswith("maskgate_") for name in families)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples
    }
    assert samples[("maskgate_frames_total", ())] == 4
    assert samples[("maskgate_decisions_total", (("kind", "unlock"),))] == 1
    assert samples[("maskgate_camera_up", ())] == 1
    assert samples[("maskgate_stage_latency_seconds_count", (("stage", "detect"),))] == 4


def read_events(server, n, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/api/events", headers=headers or {})
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("Content-Type").startswith("text/event-stream")
    events, current = [], {}
    while len(events) < n:
        line = r.fp.readline().decode().rstrip("\n")
        if not line:
            if "data" in current:
                events.append(current)
            current = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            current[key] = value
    conn.close()
    return events


def test_sse_delivers_decisions_and_resumes_after_last_event_id(server, live):
    for kind in ("unlock", "relock", "deny"):
        live.event(kind)
    events = read_events(server, 3)
    assert [json.loads(e["data"])["kind"] for e in events] == ["unlock", "relock", "deny"]
    assert [e["id"] for e in events] == ["1", "2", "3"]
    live.event("clear")
    resumed = read_events(server, 2, {"Last-Event-ID": "2"})
    assert [e["id"] for e in resumed] == ["3", "4"]


def test_the_live_picture_is_mjpeg_parts_that_decode_scaled_to_the_width(live):
    import cv2

    feed(live)
    with WebServer(web_cfg(stream_width=160, stream_fps=20), live) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/stream.mjpg")
        r = conn.getresponse()
        assert r.getheader("Content-Type").startswith("multipart/x-mixed-replace")
        images = []
        while len(images) < 2:
            line = r.fp.readline()
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
                r.fp.readline()
                data = r.fp.read(length)
                images.append(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
                feed(live)  # a new frame for the next part
        conn.close()
    assert all(img is not None and img.shape == (120, 160, 3) for img in images)
    greenness = images[0][..., 1].astype(int) - images[0][..., 2].astype(int)  # on a grey frame
    assert greenness.max() > 60  # a green box and label drawn: the gate counts the face masked


def test_the_live_picture_colours_a_box_by_the_gates_decision_not_the_likeliest_class():
    from maskgate.edge.gate.draw import GREEN, RED, annotate

    image = np.zeros((100, 100, 3), np.uint8)
    doubtful = dataclasses.replace(detected_face(True, (10, 10, 60, 60)), masked=False)  # below threshold
    assert tuple(annotate(image, [doubtful])[35, 10]) == GREEN  # by class: with_mask
    assert tuple(annotate(image, [doubtful], by_decision=True)[35, 10]) == RED


def test_a_token_is_needed_off_loopback_and_checked_when_set(live):
    with pytest.raises(ConfigError, match="web.listen 0.0.0.0:8080 is not a loopback address"):
        build({"web": {"listen": "0.0.0.0:8080"}})
    with pytest.raises(ConfigError, match="web.token needs at least 16 characters") as e:
        build({"web": {"token": "hunter2"}})
    assert "hunter2" not in str(e.value)  # a secret is never echoed
    assert build({"web": {"listen": "[::1]:8080"}}).web.token is None  # loopback needs none
    assert "*****" in str(build({"web": {"token": TOKEN}}).web.model_dump(mode="json"))
    with WebServer(web_cfg(token=TOKEN), live) as server:
        assert get(server, "/api/state")[0] == 401
        assert get(server, "/api/state", {"Authorization": "Bearer wrong-token-of-some-length"})[0] == 401
        assert get(server, "/api/state", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
        assert get(server, "/healthz")[0] == 503  # the probe needs no token and tells only up or down
        assert get(server, "/kiosk?token=wrong")[0] == 401


def own_address() -> str:
    """This machine's address on its network (not loopback), as a client elsewhere would reach it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        address = s.getsockname()[0]
    if address.startswith("127.") or address == "0.0.0.0":
        pytest.skip("no network address besides loopback")
    return address


def test_off_loopback_only_clients_from_web_allow_are_served(live):
    feed(live)
    here = own_address()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    elsewhere = next(n for n in ("198.51.100.0/24", "203.0.113.0/24") if not here.startswith(n[:8]))
    for allow, status in (([elsewhere], 403), ([f"{here}/32"], 200)):
        with WebServer(web_cfg(listen="0.0.0.0:0", token=TOKEN, allow=allow), live) as server:
            url = f"http://{here}:{server.port}/api/state"
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
                    got = r.status
            except urllib.error.HTTPError as e:
                got = e.code
            assert got == status, allow
            assert get(server, "/api/state", headers)[0] == 200  # loopback always may
    with pytest.raises(ConfigError, match="'192.168.1' is not a network"):
        build({"web": {"allow": ["192.168.1"]}})


def test_a_one_time_token_link_sets_an_http_only_cookie(live):
    with WebServer(web_cfg(token=TOKEN), live) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", f"/kiosk?token={TOKEN}")
        r = conn.getresponse()
        r.read()
        assert r.status == 303 and r.getheader("Location") == "/kiosk"  # the token leaves the address bar
        cookie = r.getheader("Set-Cookie")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        session = cookie.split(";")[0]
        assert TOKEN not in session
        assert get(server, "/kiosk", {"Cookie": session})[0] == 200
        assert get(server, "/kiosk", {"Cookie": "maskgate_session=forged"})[0] == 401


def test_a_token_file_readable_by_others_is_refused(tmp_path, live):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        WebServer(web_cfg(token_file=str(path)), live)
    os.chmod(path, 0o600)
    with WebServer(web_cfg(token_file=str(path)), live) as server:
        assert get(server, "/api/state", {"Authorization": f"Bearer {TOKEN}"})[0] == 200


def test_clients_beyond_max_clients_get_503_and_the_rest_are_served(live):
    feed(live)
    with WebServer(web_cfg(max_clients=1), live) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/api/events")
        assert conn.getresponse().status == 200  # holds the only slot
        assert get(server, "/api/state")[0] == 503
        conn.close()
        deadline = time.monotonic() + 3
        while get(server, "/api/state")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert get(server, "/api/state")[0] == 200


def test_open_connections_idle_ones_too_are_bounded_and_an_idle_one_is_closed(live, monkeypatch):
    monkeypatch.setattr(server_module, "IDLE_S", 0.5)
    feed(live)
    with WebServer(web_cfg(max_clients=1), live) as server:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(2)]
        time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as third:
            assert third.recv(100).startswith(b"HTTP/1.1 503")  # two open connections: the bound
            assert third.recv(100) == b""  # and closed
        for conn in idle:  # no request within IDLE_S: closed by the server
            assert conn.recv(100) == b""
            conn.close()
        assert get(server, "/api/state")[0] == 200  # the slots are free again


def test_a_failing_handler_logs_one_line_and_no_traceback(server, live, caplog, monkeypatch):
    def broken():
        raise RuntimeError("state exploded")

    monkeypatch.setattr(live, "snapshot", broken)
    with caplog.at_level("DEBUG"):
        assert get(server, "/api/state")[0] == 500
    assert any("state exploded" in r.getMessage() for r in caplog.records)
    assert not any(r.exc_info for r in caplog.records)


def test_a_port_in_use_is_a_one_line_config_error(server, live):
    with pytest.raises(ConfigError, match="web.listen"):
        WebServer(web_cfg(), live, port=server.port).start()
