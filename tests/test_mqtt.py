"""The MQTT publisher against a real mosquitto, with a real paho subscriber and the gate's real loop.

The gate runs on scripted frames (fakes.FakeAnalyzer) with gpiozero's MockFactory pins; the broker is
Debian's mosquitto on a free port of 127.0.0.1 (tests/broker.py), stopped and started mid-run, with a
password file, or behind TLS with a CA made by openssl. Waits are for messages, with timeouts; nothing
is timed. Without mosquitto the tests skip, except in CI (``CI`` set), where that is a failure.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest
from broker import MOSQUITTO, OPENSSL, Mosquitto, Subscriber, free_port, make_pki, password_file, wait_until

from conftest import REPO, assert_one_line_error, face, maskgate
from fakes import FakeAnalyzer, ScriptedSource, levels
from maskgate.edge.core.errors import ConfigError
from maskgate.edge.gate.config import build
from maskgate.edge.gate.live import LiveState
from maskgate.edge.gate.notify import Notifier
from maskgate.edge.gate.outputs import Outputs
from maskgate.edge.gate.service import GateService
from maskgate.edge.gate.sources import Frame, FrameSource
from maskgate.edge.mqtt.discovery import discovery_configs
from maskgate.edge.mqtt.payloads import EVENT_KINDS, EventPayload, StatePayload, StatsPayload
from maskgate.edge.mqtt.publisher import MqttPublisher

PIN_NAMES = {"relay": 17, "green": 27, "red": 22}


@pytest.fixture(autouse=True)
def _need_mosquitto():
    if MOSQUITTO is None:
        if os.environ.get("CI"):
            pytest.fail("mosquitto is not installed; .ci/run installs Debian's mosquitto")
        pytest.skip("mosquitto is not installed: apt-get install mosquitto")


@pytest.fixture
def broker(tmp_path):
    with Mosquitto(tmp_path / "broker") as b:
        yield b


@pytest.fixture
def subscriber(broker):
    with Subscriber(broker.port) as s:
        yield s


def mqtt_cfg(port: int, **mqtt):
    settings = {"enabled": True, "host": "127.0.0.1", "port": port, "reconnect_initial_s": 0.05,
                "reconnect_max_s": 0.2, "keepalive_s": 5, **mqtt}  # fmt: skip
    return build(
        {
            "decision": {"pulse_s": 30.0},
            "source": {"pace": False, "reconnect_initial_s": 0.01, "reconnect_max_s": 0.02},
            "mqtt": settings,
        }
    )


def gate_service(cfg, factory, source: FrameSource, live: LiveState | None) -> GateService:
    outputs = Outputs.from_config(cfg.outputs, pulse_s=cfg.decision.pulse_s, factory=factory)
    return GateService(
        cfg, outputs=outputs, analyzer=FakeAnalyzer(), open_source=lambda stop: source,
        notifier=Notifier({}), live=live,
    )  # fmt: skip


class FedSource(FrameSource):
    """A camera whose frames the test hands in, one scene code at a time; None ends it."""

    live = True

    def __init__(self) -> None:
        self.codes: queue.Queue[int | None] = queue.Queue()
        self.i = 0

    def read(self) -> Frame | None:
        code = self.codes.get(timeout=30)
        if code is None:
            return None
        frame = Frame(np.full((4, 4, 3), code, np.uint8), self.i, self.i / 10)
        self.i += 1
        return frame


def topic(gate: str, leaf: str) -> str:
    return f"maskgate/{gate}/{leaf}"


def is_event(gate: str, kind: str):
    return lambda m: m.topic == topic(gate, "events") and m.json()["kind"] == kind


def mqtt_warnings(caplog) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "maskgate.mqtt" and r.levelno >= logging.WARNING
    ]


def test_a_gate_run_publishes_availability_state_events_and_stats_as_typed_json(
    broker, subscriber, mock_factory
):
    cfg = mqtt_cfg(broker.port, stats_every_s=1)
    live, source = LiveState(), FedSource()
    svc = gate_service(cfg, mock_factory, source, live)
    gate = threading.Thread(target=svc.run, args=(threading.Event(),))

    def state(test):
        m = subscriber.wait_for(lambda m: m.topic == topic("front", "state") and test(m.json()))
        return StatePayload.model_validate_json(m.payload)

    with MqttPublisher(cfg.mqtt, live, gate="front") as pub:
        subscriber.wait_for(lambda m: m.topic == topic("front", "available") and m.text == "online")
        gate.start()
        for code in (0, 1, 1, 1, 1):  # a masked face, confirmed: the door opens and stays open ...
            source.codes.put(code)
        unlock = EventPayload.model_validate_json(subscriber.wait_for(is_event("front", "unlock")).payload)
        opened = state(lambda s: s["door"] == "unlocked")
        for code in (0, 2, 2, 2, 2):  # ... until an unmasked face is confirmed
            source.codes.put(code)
        deny = EventPayload.model_validate_json(subscriber.wait_for(is_event("front", "deny")).payload)
        cancel = EventPayload.model_validate_json(subscriber.wait_for(is_event("front", "cancel")).payload)
        alarm = state(lambda s: s["alarm"] and s["door"] == "locked")
        stats = subscriber.wait_for(lambda m: m.topic == topic("front", "stats") and m.json()["frames"] > 0)
        source.codes.put(None)
        gate.join(10)
        assert pub.counts().dropped == 0
    assert [e.kind for e in svc.events] == ["unlock", "deny", "cancel"]
    # one message per decision, in order, with the numbers the gate decided on and no image
    events = [EventPayload.model_validate_json(m.payload) for m in subscriber.on(topic("front", "events"))]
    assert [e.kind for e in events] == ["unlock", "deny", "cancel"] and [e.id for e in events] == [1, 2, 3]
    assert all(m.retain is False for m in subscriber.on(topic("front", "events")))
    assert unlock.faces == [1] and unlock.scores[0].p_masked == pytest.approx(0.97)
    assert unlock.scores[0].height_px == 120 and unlock.event_type == "unlock" and unlock.gate == "front"
    assert deny.scores[0].p_masked == pytest.approx(0.04) and deny.time >= unlock.time
    assert cancel.detail == "unmasked face in view"
    assert opened.faces.masked == 1 and opened.camera == "up" and opened.unlocks == 1
    assert alarm.faces.unmasked == 1 and alarm.denials == 1
    assert StatsPayload.model_validate_json(stats.payload).decisions["unlock"] == 1
    # after a clean stop: 'offline', and the last state (door locked, camera ended), both retained
    subscriber.wait_for(lambda m: m.topic == topic("front", "available") and m.text == "offline")
    with Subscriber(broker.port, (topic("front", "#"),)) as late:
        available = late.wait_for(lambda m: m.topic == topic("front", "available"))
        last = late.wait_for(lambda m: m.topic == topic("front", "state"))
    assert available.retain and available.text == "offline"
    last_state = StatePayload.model_validate_json(last.payload)
    assert last.retain and last_state.camera_status == "ended" and last_state.door == "locked"


def test_home_assistant_discovery_configs_are_retained_with_one_device_and_availability(broker, subscriber):
    cfg = mqtt_cfg(broker.port)
    with MqttPublisher(cfg.mqtt, LiveState(), gate="lobby.east", version="9.9"):
        # 'online' follows the configs on the same connection: once it is there, so are they
        subscriber.wait_for(lambda m: m.topic == topic("lobby.east", "available") and m.text == "online")
        with Subscriber(broker.port, ("homeassistant/#",)) as ha:  # Home Assistant, starting later
            wait_until(lambda: len(ha.messages) == 9)
            configs = {m.topic: m.json() for m in ha.messages}
            assert all(m.retain for m in ha.messages)
    expected = discovery_configs(
        gate="lobby.east", prefix="maskgate/lobby.east", discovery_prefix="homeassistant", version="9.9"
    )
    assert configs == expected
    assert set(configs) >= {
        "homeassistant/binary_sensor/lobby_east/door/config",
        "homeassistant/sensor/lobby_east/masked_faces/config",
        "homeassistant/sensor/lobby_east/unmasked_faces/config",
        "homeassistant/event/lobby_east/decision/config",
    }
    for config in configs.values():
        assert config["availability_topic"] == "maskgate/lobby.east/available"
        assert config["device"]["identifiers"] == ["maskgate_lobby_east"]
        assert config["device"]["name"] == "lobby.east" and config["device"]["sw_version"] == "9.9"
        assert config["state_topic"].startswith("maskgate/lobby.east/")
    assert len({c["unique_id"] for c in configs.values()}) == len(configs)
    door = configs["homeassistant/binary_sensor/lobby_east/door/config"]
    assert door["device_class"] == "lock" and door["state_topic"] == "maskgate/lobby.east/state"
    event = configs["homeassistant/event/lobby_east/decision/config"]
    assert event["state_topic"] == "maskgate/lobby.east/events" and event["event_types"] == list(EVENT_KINDS)


def _pin_history(factory) -> dict[str, list[bool]]:
    return {name: levels(factory, pin) for name, pin in PIN_NAMES.items()}


def test_the_relay_and_leds_go_through_the_same_levels_with_mqtt_on_off_or_the_broker_away(
    broker, mock_factory
):
    codes = [0, 1, 1, 1, 1, 0, 0, 2, 2, 2, 0, 0, 0, 1, 1, 1, 1] * 3
    histories, kinds = {}, {}
    dead_port = free_port()
    for setting in ("off", "on", "broker away"):
        cfg = mqtt_cfg(broker.port if setting == "on" else dead_port)
        live = LiveState() if setting != "off" else None
        svc = gate_service(cfg, mock_factory, ScriptedSource(list(codes)), live)
        if live is None:
            svc.run(threading.Event())
        else:
            with MqttPublisher(cfg.mqtt, live, gate=f"same-{setting.replace(' ', '-')}") as pub:
                if setting == "on":
                    wait_until(lambda pub=pub: pub.connected)
                svc.run(threading.Event())
        histories[setting], kinds[setting] = _pin_history(mock_factory), [e.kind for e in svc.events]
        mock_factory.reset()
    assert histories["on"] == histories["off"] == histories["broker away"]
    assert kinds["on"] == kinds["off"] == kinds["broker away"]
    assert True in histories["off"]["relay"] and True in histories["off"]["red"]  # the script did open it


def test_a_broker_restart_mid_run_the_gate_keeps_deciding_and_mqtt_catches_up(
    broker, subscriber, mock_factory, caplog
):
    cfg = mqtt_cfg(broker.port)
    live, source, stop = LiveState(), FedSource(), threading.Event()
    svc = gate_service(cfg, mock_factory, source, live)
    gate = threading.Thread(target=svc.run, args=(stop,))
    with (
        caplog.at_level(logging.INFO, logger="maskgate.mqtt"),
        MqttPublisher(cfg.mqtt, live, gate="door") as pub,
    ):
        gate.start()
        for code in (1, 1, 1, 1):
            source.codes.put(code)
        subscriber.wait_for(is_event("door", "unlock"))
        broker.stop()
        wait_until(lambda: not pub.connected)
        for code in (2, 2, 2, 2):  # an unmasked person while the broker is away: the gate still denies
            source.codes.put(code)
        wait_until(lambda: [e.kind for e in svc.events] == ["unlock", "deny", "cancel"])
        wait_until(lambda: levels(mock_factory, PIN_NAMES["red"])[-1] is True)
        wait_until(lambda: pub.attempts >= 4)  # it keeps trying ...
        assert pub.counts().queued == 2  # ... and holds the decisions meanwhile
        mark = subscriber.mark()
        # the publisher's next attempt waits until the subscriber is back: events are not retained
        allowed, connect = threading.Event(), pub._client.connect
        pub._client.connect = lambda *a, **k: (allowed.wait(10), connect(*a, **k))[1]
        broker.start()
        wait_until(lambda: subscriber.subscribed >= 2)
        allowed.set()
        subscriber.wait_for(
            lambda m: m.topic == topic("door", "available") and m.text == "online", after=mark
        )
        subscriber.wait_for(is_event("door", "deny"), after=mark)
        subscriber.wait_for(is_event("door", "cancel"), after=mark)
        state = subscriber.wait_for(lambda m: m.topic == topic("door", "state"), after=mark)
        assert StatePayload.model_validate_json(state.payload).alarm is True
        source.codes.put(None)
        gate.join(10)
    warnings = mqtt_warnings(caplog)
    assert len(warnings) == 1 and "lost the broker" in warnings[0], warnings  # one line for the outage
    infos = [r.getMessage() for r in caplog.records if r.name == "maskgate.mqtt"]
    assert sum("connected to 127.0.0.1" in m and "again after" in m for m in infos) == 1
    assert pub.counts().dropped == 0 and pub.counts().events == 3


def test_a_broker_down_at_start_is_waited_for_and_a_full_queue_drops_the_oldest(tmp_path, caplog):
    port = free_port()
    cfg = mqtt_cfg(port, queue_size=3, stats_every_s=1)
    live = LiveState()
    with (
        caplog.at_level(logging.INFO, logger="maskgate.mqtt"),
        MqttPublisher(cfg.mqtt, live, gate="early") as pub,
    ):
        for i in range(5):
            live.event("deny", (i,))
        wait_until(lambda: pub.attempts >= 3 and pub.counts().dropped == 2)
        assert pub.counts().queued == 3
        # the next attempt waits until the subscriber is there: events are not retained
        allowed, connect = threading.Event(), pub._client.connect
        pub._client.connect = lambda *a, **k: (allowed.wait(10), connect(*a, **k))[1]
        with Mosquitto(tmp_path / "broker", port=port), Subscriber(port, ("maskgate/early/#",)) as sub:
            wait_until(lambda: sub.subscribed >= 1)
            allowed.set()
            wait_until(lambda: len(sub.on(topic("early", "events"))) == 3)
            events = [m.json() for m in sub.on(topic("early", "events"))]
            stats = sub.wait_for(lambda m: m.topic == topic("early", "stats"))
            warnings = mqtt_warnings(caplog)
    assert [e["id"] for e in events] == [3, 4, 5]  # the two oldest were dropped
    assert StatsPayload.model_validate_json(stats.payload).mqtt.dropped == 2
    assert len(warnings) == 1 and "nothing listens at 127.0.0.1" in warnings[0], warnings


def test_a_password_protected_broker_takes_the_right_login_and_a_wrong_one_is_one_line(
    tmp_path, mock_factory, caplog
):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    users = password_file(secrets, {"gate": "s3cret-pass", "ha": "ha-pass"})
    (secrets / "right").write_text("s3cret-pass\n")
    (secrets / "wrong").write_text("guess\n")
    for f in ("right", "wrong"):
        (secrets / f).chmod(0o600)
    extra = f"password_file {users}"
    with (
        Mosquitto(tmp_path / "broker", extra=extra, allow_anonymous=False) as b,
        Subscriber(b.port, ("maskgate/#",), username="ha", password="ha-pass") as sub,
    ):
        cfg = mqtt_cfg(b.port, username="gate", password_file=str(secrets / "right"))
        with MqttPublisher(cfg.mqtt, LiveState(), gate="auth"):
            sub.wait_for(lambda m: m.topic == topic("auth", "available") and m.text == "online")
        cfg = mqtt_cfg(b.port, username="gate", password_file=str(secrets / "wrong"))
        live = LiveState()
        svc = gate_service(cfg, mock_factory, ScriptedSource([1, 1, 1, 1, 1]), live)
        with (
            caplog.at_level(logging.INFO, logger="maskgate.mqtt"),
            MqttPublisher(cfg.mqtt, live, gate="intruder") as pub,
        ):
            svc.run(threading.Event())  # the gate decides regardless
            wait_until(lambda: pub.attempts >= 3)
            assert not pub.connected
    assert [e.kind for e in svc.events] == ["unlock"]
    warnings = mqtt_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert (
        "refused the connection: Not authorized (check mqtt.username and mqtt.password_file)" in warnings[0]
    )
    assert not any(m.topic.startswith("maskgate/intruder") for m in sub.messages)


def test_a_password_file_others_can_read_is_refused_before_anything_starts(tmp_path):
    path = tmp_path / "password"
    path.write_text("s3cret-pass\n")
    path.chmod(0o640)
    cfg = mqtt_cfg(1883, username="gate", password_file=str(path))
    with pytest.raises(
        ConfigError, match=r"mqtt.password_file .*: readable by others \(mode 640\); chmod 600"
    ):
        MqttPublisher(cfg.mqtt, LiveState(), gate="g")


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_tls_connects_with_the_brokers_ca_and_a_wrong_ca_is_one_line_while_the_gate_runs(
    tmp_path, mock_factory, caplog
):
    pki = make_pki(tmp_path / "pki")
    extra = f"cafile {pki.ca}\ncertfile {pki.cert}\nkeyfile {pki.key}\n"
    with (
        Mosquitto(tmp_path / "broker", extra=extra) as b,
        Subscriber(b.port, ("maskgate/#",), tls=pki.ca) as sub,
    ):
        cfg = mqtt_cfg(b.port, tls=True, tls_ca_file=str(pki.ca))
        with MqttPublisher(cfg.mqtt, LiveState(), gate="tls"):
            sub.wait_for(lambda m: m.topic == topic("tls", "available") and m.text == "online")
        cfg = mqtt_cfg(b.port, tls=True, tls_ca_file=str(pki.other_ca))
        live = LiveState()
        svc = gate_service(cfg, mock_factory, ScriptedSource([1, 1, 1, 1, 1]), live)
        with (
            caplog.at_level(logging.INFO, logger="maskgate.mqtt"),
            MqttPublisher(cfg.mqtt, live, gate="mitm") as pub,
        ):
            svc.run(threading.Event())
            wait_until(lambda: pub.attempts >= 3)
            assert not pub.connected
    assert [e.kind for e in svc.events] == ["unlock"]
    warnings = mqtt_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "TLS certificate at 127.0.0.1" in warnings[0] and "does not verify against" in warnings[0]
    assert "(check mqtt.tls_ca_file and mqtt.host)" in warnings[0]


# --- `maskgate run` as systemd runs it ------------------------------------------------------------


@pytest.fixture
def scene_dir(tmp_path):
    """Two generated pictures for `maskgate run` to loop over (the shipped models run on them)."""
    d = tmp_path / "scenes"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        img = np.full((240, 320, 3), 90, np.uint8)
        img[60:156, 100:196] = cv2.resize(face(rng, bool(i)), (96, 96))
        cv2.imwrite(str(d / f"scene{i}.jpg"), img)
    return d


def _run_args(scene_dir, port: int, *extra: str) -> list[str]:
    return [
        "run", "--source", str(scene_dir), "--set", "source.loop=true", "--set", "source.fps=10",
        "--set", "outputs.pin_factory=mock", "--set", "mqtt.enabled=true", "--set", "mqtt.host=127.0.0.1",
        "--set", f"mqtt.port={port}", "--set", "service.gate_name=subprocess", *extra,
    ]  # fmt: skip


def _start(args: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    return subprocess.Popen(
        [sys.executable, "-m", "maskgate.edge.cli", *args],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_maskgate_run_says_online_then_offline_after_sigterm_or_by_its_last_will(
    broker, subscriber, scene_dir, sig
):
    proc = _start(_run_args(scene_dir, broker.port))
    try:
        subscriber.wait_for(lambda m: m.topic == topic("subprocess", "available") and m.text == "online", 60)
        subscriber.wait_for(
            lambda m: m.topic == topic("subprocess", "state") and m.json()["camera"] == "up", 30
        )
        mark = subscriber.mark()
        proc.send_signal(sig)
        proc.wait(timeout=10)
        offline = subscriber.wait_for(lambda m: m.topic == topic("subprocess", "available"), after=mark)
    finally:
        proc.kill()
    err = proc.stderr.read()
    assert offline.text == "offline"
    if sig == signal.SIGTERM:
        assert proc.returncode == 0, err
        # the clean stop sent the last state, and the log lines carry the time and the level
        last = StatePayload.model_validate_json(subscriber.on(topic("subprocess", "state"))[-1].payload)
        assert last.camera_status == "ended" and last.door == "locked"
        stamp = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} "
        assert re.search(stamp + r"INFO mqtt: connected to 127\.0\.0\.1:\d+$", err, re.M), err
        assert re.search(stamp + r"INFO SIGTERM: stopping$", err, re.M), err
    with Subscriber(broker.port, (topic("subprocess", "available"),)) as late:
        assert late.wait_for(lambda m: m.retain).text == "offline"


def test_maskgate_run_refuses_a_ca_file_that_is_no_certificate_in_one_line(tmp_path, scene_dir):
    bad = tmp_path / "ca.pem"
    bad.write_text("this is not a certificate\n")
    args = _run_args(scene_dir, free_port(), "--set", "mqtt.tls=true", "--set", f"mqtt.tls_ca_file={bad}")
    r = maskgate(*args)
    assert_one_line_error(r, f"mqtt.tls_ca_file {bad}: holds no PEM CA certificate")
    r = maskgate(*args, "--validate-config")
    assert r.returncode == 2 and f"mqtt.tls_ca_file {bad}: holds no PEM CA certificate" in r.stderr


def test_log_lines_are_plain_with_a_priority_when_stderr_is_the_journal(tmp_path):
    log = tmp_path / "journal"
    with open(log, "w") as stderr:
        st = os.fstat(stderr.fileno())
        env = os.environ | {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        subprocess.run(
            [sys.executable, "-m", "maskgate.edge.cli", "run", "--source", str(tmp_path / "none.jpg"),
             "--set", "outputs.pin_factory=mock"],
            cwd=REPO, stderr=stderr, env=env, timeout=120, check=False,
        )  # fmt: skip
    lines = log.read_text().splitlines()
    assert "<6>configuration: built-in defaults" in lines, lines
    assert any(line.startswith("maskgate: error:") for line in lines)
