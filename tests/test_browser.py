"""The pages in a real browser, served by a real `maskgate run`: the shipped models on two scenes that
loop (a masked face that opens the door, an unmasked one that is refused), mock pins, a token.

What a kiosk installer and an operator would check by eye, checked by headless Chromium over the
DevTools protocol: the live picture moves, the kiosk's verdict follows the scenes, the event stream
is the gate's log, /metrics parses, a wrong token is refused, and the kiosk fits 800x480 and 1080p.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import cv2
import pytest
from broker import free_port
from prometheus_client.parser import text_string_to_metric_families

from browser import Browser, chromium_or_skip
from conftest import REPO, SHARED

SCENES = SHARED / "data" / "scenes" / "images"
OPENS, REFUSED = "maksssksksss10.jpg", "maksssksksss125.jpg"  # one masked face / one unmasked face, close
STRINGS = json.loads((REPO / "edge" / "web" / "static" / "strings.json").read_text(encoding="utf-8"))
# "... INFO unlock face(s) #1: ..." -> ("unlock", (1,)); the gate logs one such line per decision
DECISION = re.compile(
    r"^(?:\S+ \S+ [A-Z]+ )?(unlock|deny|cancel|relock|clear)(?: face\(s\) ([#\d, ]+))?(?::|$)"
)


class Gate:
    """`maskgate run` with its web server, as a subprocess; ``url(path)`` and ``stop()``."""

    def __init__(self, proc: subprocess.Popen, port: int, token: str) -> None:
        self.proc, self.port, self.token = proc, port, token

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> str:
        """SIGTERM; the gate's log."""
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=20)
        return err


@contextlib.contextmanager
def running_gate(tmp_path, shared_models, source: str, *extra: str):
    chromium_or_skip()
    port, token = free_port(), secrets.token_urlsafe(24)
    env = os.environ | {"MASKGATE_MIRROR": str(shared_models), "MASKGATE_CACHE": str(tmp_path / "cache")}
    args = [sys.executable, "-m", "maskgate.edge.cli", "run", "--config", "systemd/demo.toml",
            "--source", source, "--set", "source.loop=true", "--set", "web.enabled=true",
            "--set", f"web.listen=127.0.0.1:{port}", "--set", f"web.token={token}", *extra]  # fmt: skip
    proc = subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    gate = Gate(proc, port, token)
    try:
        deadline = time.monotonic() + 60
        while True:  # /healthz needs no token: it answers once the server is up
            try:
                urllib.request.urlopen(gate.url("/healthz"), timeout=2).close()
                break
            except urllib.error.HTTPError:
                break  # 503: serving, but no frames yet
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"maskgate run ended: {proc.stderr.read()[-2000:]}")
                if time.monotonic() > deadline:
                    pytest.fail("maskgate run did not serve its pages within 60 s")
                time.sleep(0.2)
        yield gate
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


@pytest.fixture
def scenes(tmp_path):
    if not (SCENES / OPENS).is_file():
        pytest.skip(f"shared scenes not found at {SCENES}")
    d = tmp_path / "scenes"
    d.mkdir()
    for name in (OPENS, REFUSED):
        shutil.copy(SCENES / name, d / name)
    return d


@pytest.fixture
def gate(tmp_path, shared_models, scenes):
    with running_gate(tmp_path, shared_models, str(scenes)) as g:
        yield g


def signed_in(gate: Gate, browser: Browser, path: str) -> None:
    """Open ``path`` with the one-time token link, as a kiosk's autostart does."""
    browser.goto(gate.url(f"{path}?token={gate.token}"))
    assert browser.eval("location.pathname + location.search") == path  # the token left the address bar


def test_a_wrong_token_is_refused_and_the_one_time_link_sets_an_http_only_cookie(gate):
    with Browser() as b:
        b.goto(gate.url("/kiosk?token=not-the-token-at-all"))
        assert b.eval("document.body.innerText").startswith("401")
        b.goto(gate.url("/api/state"))
        assert b.eval("document.body.innerText").startswith("401")
        signed_in(gate, b, "/kiosk")
        cookie = next(c for c in b.cookies() if c["name"] == "maskgate_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert b.eval("document.cookie") == ""  # out of reach of the page's scripts
        assert b.eval("fetch('/api/state').then(r => r.status)") == 200


def test_the_kiosk_verdict_follows_the_scenes_with_an_icon_and_words(gate):
    en = STRINGS["en"]
    seen: dict[str, str] = {}
    with Browser() as b:
        signed_in(gate, b, "/kiosk")
        deadline = time.monotonic() + 30
        while not {"welcome", "mask"} <= set(seen) and time.monotonic() < deadline:
            state = b.eval("[document.body.className, document.getElementById('verdict').textContent,"
                           " document.getElementById('icon').textContent]")  # fmt: skip
            if state[0]:
                assert state[1] == en[state[0]] and state[2].strip()  # words and an icon, never colour alone
                seen[state[0]] = state[1]
            time.sleep(0.1)
    assert seen.get("welcome") == "Welcome — door open"
    assert seen.get("mask") == "Please wear a mask"


def test_the_live_view_shows_a_moving_picture_the_door_the_camera_and_the_events(gate):
    frame_hash = """(() => { const img = document.getElementById('live');
        if (!img.naturalWidth) return null;
        const c = document.createElement('canvas'); c.width = 64; c.height = 48;
        const g = c.getContext('2d'); g.drawImage(img, 0, 0, 64, 48);
        const d = g.getImageData(0, 0, 64, 48).data; let h = 0;
        for (let i = 0; i < d.length; i += 7) h = (h * 31 + d[i]) >>> 0;
        return [img.naturalWidth, h]; })()"""
    with Browser(1280, 800) as b:
        signed_in(gate, b, "/")
        width, first = b.wait_for(frame_hash)
        sizes = {min(cv2.imread(str(SCENES / name)).shape[1], 640) for name in (OPENS, REFUSED)}
        assert width in sizes  # the scene's own width, or web.stream_width (640) for a wider one
        hashes = {first}
        deadline = time.monotonic() + 15
        while len(hashes) < 2 and time.monotonic() < deadline:  # the scenes alternate every second
            hashes.add(b.wait_for(frame_hash)[1])
            time.sleep(0.2)
        assert len(hashes) >= 2, "the live picture did not change"
        assert b.wait_for("document.getElementById('camera').textContent.includes('up')")
        assert float(b.wait_for("parseFloat(document.getElementById('fps').textContent) || 0")) > 0
        assert b.wait_for("document.querySelectorAll('#events li').length >= 2")
        door = b.eval("document.getElementById('door').textContent")
        assert door in (STRINGS["en"]["door_open"], STRINGS["en"]["door_locked"])
        assert "retinaface" in b.eval("document.getElementById('versions').textContent")


def test_the_event_stream_in_the_browser_is_the_gates_log(gate):
    with Browser() as b:
        signed_in(gate, b, "/kiosk")
        b.eval("""window.got = []; const es = new EventSource('/api/events');
                  es.addEventListener('decision',
                                      e => window.got.push([e.lastEventId, JSON.parse(e.data)]));""")
        got = b.wait_for("window.got.length >= 4 && window.got", timeout=30)
    log = gate.stop()
    logged = []
    for line in log.splitlines():
        if m := DECISION.match(line):
            logged.append((m[1], [int(i) for i in re.findall(r"\d+", m[2] or "")]))
    streamed = [(ev["kind"], ev["faces"]) for _, ev in got]
    assert streamed == logged[: len(streamed)]
    assert [int(i) for i, _ in got] == [ev["id"] for _, ev in got] == list(range(1, len(got) + 1))
    assert {"unlock", "deny"} <= {kind for kind, _ in streamed}


def test_metrics_fetched_by_the_browser_parse_as_prometheus_text(gate):
    with Browser() as b:
        signed_in(gate, b, "/kiosk")
        b.wait_for("fetch('/api/state').then(r => r.json()).then(s => (s.decisions || {}).unlock > 0)", 30)
        text = b.eval("fetch('/metrics').then(r => r.text())")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families and all(name.startswith("maskgate_") for name in families)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples
    }
    assert samples[("maskgate_frames_total", ())] > 0
    assert samples[("maskgate_decisions_total", (("kind", "unlock"),))] >= 1


KIOSK_LAYOUT = """(() => {
    const out = [];
    const v = document.getElementById('verdict'), icon = document.getElementById('icon');
    for (const [lang, table] of Object.entries(STRINGS)) for (const key of KEYS) {
        document.body.className = key; v.textContent = table[key];
        const r = v.getBoundingClientRect(), i = icon.getBoundingClientRect();
        const s = getComputedStyle(document.body);
        out.push({lang, key, px: parseFloat(getComputedStyle(v).fontSize),
                  inside: r.left >= 0 && r.top >= 0 && r.right <= innerWidth && r.bottom <= innerHeight
                          && i.top >= 0 && i.bottom <= r.top,
                  scrolls: document.documentElement.scrollHeight > innerHeight
                           || document.documentElement.scrollWidth > innerWidth,
                  bg: s.backgroundColor, fg: s.color, cursor: s.cursor});
    }
    return out; })()"""


def luminance(css: str) -> float:
    channels = [int(c) / 255 for c in re.findall(r"\d+", css)[:3]]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


@pytest.mark.parametrize(("width", "height", "min_px"), [(800, 480, 40), (1920, 1080, 90)])
def test_every_kiosk_text_fits_the_screen_in_large_high_contrast_type(gate, width, height, min_px):
    keys = ["welcome", "mask", "closer", "idle", "offline"]
    with Browser(width, height) as b:
        signed_in(gate, b, "/kiosk")
        b.wait_for("document.body.className !== ''")
        script = KIOSK_LAYOUT.replace("STRINGS", json.dumps(STRINGS)).replace("KEYS", json.dumps(keys))
        rows = b.eval(f"new Promise(r => setTimeout(r, 0)).then(() => {script})")
    assert len(rows) == 2 * len(keys)
    for row in rows:
        where = f"{width}x{height} {row['lang']}:{row['key']}"
        assert row["inside"] and not row["scrolls"], f"{where}: does not fit the screen"
        assert row["cursor"] == "none", f"{where}: the pointer shows"
        assert row["px"] >= min_px, f"{where}: {row['px']} px type"
        ratio = contrast(row["bg"], row["fg"])
        assert ratio >= 7.0, f"{where}: contrast {ratio:.1f}"  # WCAG AAA


def test_a_lost_camera_is_shown_on_both_pages_and_healthz_says_503(tmp_path, shared_models):
    retry = ("--set", "source.reconnect_initial_s=0.1", "--set", "source.reconnect_max_s=0.2")
    with running_gate(tmp_path, shared_models, "7", *retry) as gate:  # camera 7: not there
        with Browser() as b:
            signed_in(gate, b, "/kiosk")
            assert b.wait_for("document.body.className === 'offline'")
            assert b.eval("document.getElementById('verdict').textContent") == STRINGS["en"]["offline"]
            signed_in(gate, b, "/")
            assert b.wait_for("/lost|reconnecting/.test(document.getElementById('camera').textContent)")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(gate.url("/healthz"), timeout=5)
        assert e.value.code == 503
