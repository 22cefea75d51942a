"""The MQTT publisher of ``maskgate run``: an observer of the gate's LiveState that never holds it up.

Two threads of its own, neither of them the gate's. The gate thread only ever touches the
``LiveState`` (a lock and a few assignments) and, after each event, sets a ``threading.Event``
(the listener); it never calls the client library. The *publish* thread wakes on that signal
(or every ``TICK_S``), copies the new events out of the LiveState's ring into a bounded queue,
and hands them, the retained state (when it changed) and the statistics (every minute) to the
client. The *network* thread runs the client's socket loop. When the broker is away the events
wait in the queue, ``mqtt.queue_size`` at most: beyond that the oldest are dropped and counted
(the state is not queued: the latest is sent on reconnecting). So a slow, absent or refusing
broker costs the gate nothing, and nothing here can move an output: no topic is subscribed to.

Client library: paho-mqtt 2.x, the Eclipse reference client: MQTT 3.1.1 and 5, TLS with client
certificates, a Last Will, a thread-safe ``publish`` that only queues (the socket is written by
the network loop), and a bounded queue of its own (``max_queued_messages_set``). aiomqtt wraps the
same client in asyncio, which the gate does not use. Its ``loop_start`` thread reconnects by
itself, with backoff, but swallows why a connection failed; the gate must say it in one line (a
refused login, a certificate that does not verify, a broker not listening), so the network thread
here runs the client's ``connect`` and ``loop_forever`` itself, with the same doubling backoff
(plus jitter, so a fleet does not reconnect in step after a broker restart).

Connection problems never stop the gate: a broker down at start, a refused login or a
certificate the CA does not sign are logged once per outage (and again only if the reason
changes) while the gate runs on without MQTT and keeps retrying, because the door must not
depend on a building's broker or its password rotation. What can be known without the network
is checked before the gate starts and refuses it (exit 2): a password file others can read, a CA
file that holds no certificate, a client certificate or key that do not load.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from .. import __version__
from ..core.errors import ConfigError
from ..core.settings import read_private_file
from ..gate.config import MqttConfig
from ..gate.live import LiveState
from .discovery import OFFLINE, ONLINE, discovery_configs
from .payloads import MqttCounts, event_payload, state_payload, stats_payload

logger = logging.getLogger("maskgate.mqtt")

TICK_S = 0.5  # the state is looked at this often between events (faces come and go without one)
STOP_WAIT_S = 1.5  # the most a stop waits for the broker to take the last state and 'offline'
CONNECT_TIMEOUT_S = 5.0
EXTRA_IN_FLIGHT = 16


@dataclass(frozen=True)
class Topics:
    """The gate's topics under its prefix."""

    prefix: str

    @classmethod
    def for_gate(cls, cfg: MqttConfig, gate: str) -> Topics:
        return cls(cfg.topic_prefix or f"maskgate/{gate}")

    @property
    def available(self) -> str:
        return f"{self.prefix}/available"

    @property
    def state(self) -> str:
        return f"{self.prefix}/state"

    @property
    def events(self) -> str:
        return f"{self.prefix}/events"

    @property
    def stats(self) -> str:
        return f"{self.prefix}/stats"


def read_password(cfg: MqttConfig) -> str | None:
    """The broker password from ``mqtt.password_file`` (its one line), or None."""
    if cfg.password_file is None:
        return None
    text = read_private_file(Path(cfg.password_file), "mqtt.password_file").rstrip("\r\n")
    if not text:
        raise ConfigError(f"mqtt.password_file {cfg.password_file}: is empty")
    return text


def tls_context(cfg: MqttConfig) -> ssl.SSLContext | None:
    """The TLS context the settings describe (the broker's certificate and host name checked)."""
    if not cfg.tls:
        return None
    ca = cfg.tls_ca_file
    try:
        ctx = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    except ssl.SSLError as e:
        raise ConfigError(f"mqtt.tls_ca_file {ca}: holds no PEM CA certificate ({e.reason or e})") from None
    except OSError as e:
        raise ConfigError(f"mqtt.tls_ca_file {ca}: cannot be read: {e.strerror or e}") from None
    if cfg.tls_cert_file is not None:
        read_private_file(Path(cfg.tls_key_file), "mqtt.tls_key_file")
        try:
            ctx.load_cert_chain(str(cfg.tls_cert_file), str(cfg.tls_key_file))
        except (ssl.SSLError, OSError) as e:
            raise ConfigError(
                f"mqtt.tls_cert_file {cfg.tls_cert_file} with mqtt.tls_key_file {cfg.tls_key_file}: "
                f"do not load as a PEM certificate and its key ({getattr(e, 'reason', None) or e})"
            ) from None
    return ctx


def file_problems(cfg: MqttConfig) -> list[str]:
    """What is wrong with the files the [mqtt] section names (``--validate-config``)."""
    if not cfg.enabled:
        return []
    problems = []
    for check in (read_password, tls_context):
        try:
            check(cfg)
        except ConfigError as e:
            problems.append(str(e))
    return problems


class MqttPublisher:
    """Publishes a LiveState to a broker from threads of its own; ``start``/``stop`` or ``with``.

    Construction reads and checks the password and TLS files (a ConfigError, before the gate
    starts); nothing touches the network until ``start``.
    """

    def __init__(
        self,
        cfg: MqttConfig,
        live: LiveState,
        *,
        gate: str,
        version: str = __version__,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.cfg, self.live, self.gate = cfg, live, gate
        self.topics = Topics.for_gate(cfg, gate)
        self.client_id = cfg.client_id or f"maskgate-{gate}"
        self._clock, self._wall = clock, wall
        self._discovery = (
            discovery_configs(
                gate=gate, prefix=self.topics.prefix, discovery_prefix=cfg.discovery_prefix, version=version
            )
            if cfg.discovery
            else {}
        )
        password, context = read_password(cfg), tls_context(cfg)
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,  # the network thread reconnects, and says why it had to
        )
        if cfg.username is not None:
            client.username_pw_set(cfg.username, password)
        if context is not None:
            client.tls_set_context(context)
        client.will_set(self.topics.available, OFFLINE, qos=cfg.qos, retain=True)
        # QoS 1/2 messages the library holds until the broker acknowledges them: bounded too, above
        # the events' own bound by what a connection sends besides (discovery, 'online', state, stats)
        client.max_queued_messages_set(cfg.queue_size + len(self._discovery) + EXTRA_IN_FLIGHT)
        client.connect_timeout = CONNECT_TIMEOUT_S
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self._client = client

        self._wake = threading.Event()  # set by the gate thread after each event: the only thing it does
        self._closing = threading.Event()
        self._connected = threading.Event()
        self._fresh = threading.Event()  # a new connection: discovery, 'online' and the state go out first
        self._outbox: deque[str] = deque()  # event JSON waiting for the broker
        self._last_id = 0
        self._last_state: dict[str, Any] | None = None
        self._threads: list[threading.Thread] = []
        self._started = False
        # counters: written by one thread each, read by any
        self.published = self.events_published = self.dropped = 0
        self.attempts = self.connects = 0
        self._outage_since: float | None = None
        self._outage_reason: str | None = None
        self._attempts_in_outage = 0
        self._refused = False  # the broker answered and said no: retry at the longest interval
        live.add_listener(self._wake.set)

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> MqttPublisher:
        if self._started:
            return self
        self._started = True
        logger.info(
            "mqtt: publishing to %s:%d as %s under %s/", self.cfg.host, self.cfg.port, self.client_id,
            self.topics.prefix,
        )  # fmt: skip
        for name, target in (("mqtt-network", self._network_loop), ("mqtt-publish", self._publish_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """The last state and 'offline' (retained) if connected, then a clean disconnect; bounded."""
        if not self._started:
            return
        self._started = False
        self._closing.set()
        self._wake.set()
        network, publish = self._threads
        publish.join(timeout=STOP_WAIT_S + 1.0)
        self._client.disconnect()  # a clean DISCONNECT: the broker drops the Last Will
        network.join(timeout=1.0)
        self._threads = []

    def __enter__(self) -> MqttPublisher:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def counts(self) -> MqttCounts:
        return MqttCounts(
            published=self.published,
            events=self.events_published,
            dropped=self.dropped,
            queued=len(self._outbox),
            connects=self.connects,
        )

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # --- the network thread ----------------------------------------------------------------------

    def _network_loop(self) -> None:
        cfg = self.cfg
        delay = cfg.reconnect_initial_s
        while not self._closing.is_set():
            self.attempts += 1
            self._attempts_in_outage += 1
            self._refused = False
            connects = self.connects
            try:
                self._client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
            except (OSError, ValueError, UnicodeError) as e:  # ssl.SSLError and socket errors are OSErrors
                self._down(self._describe(e), rejected=isinstance(e, ssl.SSLError))
            else:
                if self._closing.is_set():
                    break
                self._client.loop_forever()  # until the connection ends (or a stop disconnects)
            if self._closing.is_set():
                break
            if self.connects > connects:  # it was up: start the backoff over
                delay = cfg.reconnect_initial_s
            wait = cfg.reconnect_max_s if self._refused else delay
            self._closing.wait(wait * random.uniform(0.8, 1.2))
            delay = min(delay * 2, cfg.reconnect_max_s)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._refused = True
            hint = {
                "Not authorized": "check mqtt.username and mqtt.password_file",
                "Bad user name or password": "check mqtt.username and mqtt.password_file",
                "Client identifier not valid": "check mqtt.client_id",
            }.get(str(reason_code), "see the broker's log")
            where = f"{self.cfg.host}:{self.cfg.port}"
            self._down(f"the broker at {where} refused the connection: {reason_code} ({hint})", rejected=True)
            return
        self.connects += 1
        if self._outage_since is not None:
            logger.info(
                "mqtt: connected to %s:%d%s after %.1f s (%d attempt(s)); %d event(s) dropped so far",
                self.cfg.host, self.cfg.port, " again" if self.connects > 1 else "",
                self._clock() - self._outage_since, self._attempts_in_outage, self.dropped,
            )  # fmt: skip
        elif self.connects == 1:
            logger.info("mqtt: connected to %s:%d", self.cfg.host, self.cfg.port)
        self._outage_since = self._outage_reason = None
        self._attempts_in_outage = 0
        self._connected.set()
        self._fresh.set()
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was_up = self._connected.is_set()
        self._connected.clear()
        if was_up and not self._closing.is_set():
            why = "" if str(reason_code) == "Unspecified error" else f" ({reason_code})"
            self._down(f"lost the broker at {self.cfg.host}:{self.cfg.port}{why}")

    def _down(self, reason: str, *, rejected: bool = False) -> None:
        """One warning per outage, not one per retry. A broker that is away and comes back is one
        outage whatever each attempt meets on the way (lost, refused, timed out); one that answers
        but rejects the gate (a login, a certificate) is told as soon as it does, once."""
        if self._outage_since is None:
            self._outage_since = self._clock()
            self._attempts_in_outage = max(self._attempts_in_outage, 1)
            logger.warning(
                "mqtt: %s; retrying every %g-%g s, the gate runs on and holds up to %d event(s) meanwhile",
                reason, self.cfg.reconnect_initial_s, self.cfg.reconnect_max_s, self.cfg.queue_size,
            )  # fmt: skip
        elif rejected and reason != self._outage_reason:
            logger.warning("mqtt: still not connected: %s", reason)
        if rejected or self._outage_reason is None:
            self._outage_reason = reason

    def _describe(self, e: BaseException) -> str:
        where = f"{self.cfg.host}:{self.cfg.port}"
        if isinstance(e, ssl.SSLCertVerificationError):
            ca = self.cfg.tls_ca_file or "the system's CA certificates"
            return (
                f"the broker's TLS certificate at {where} does not verify against {ca}: "
                f"{e.verify_message or e.reason} (check mqtt.tls_ca_file and mqtt.host)"
            )
        if isinstance(e, ssl.SSLError):
            return f"TLS with the broker at {where} failed: {e.reason or e} (is it a TLS port?)"
        if isinstance(e, socket.gaierror):
            return f"the broker's host {self.cfg.host} is not known ({e.strerror})"
        if isinstance(e, ConnectionRefusedError):
            return f"nothing listens at {where} (connection refused)"
        if isinstance(e, TimeoutError):
            return f"the broker at {where} does not answer (timed out after {CONNECT_TIMEOUT_S:g} s)"
        if isinstance(e, OSError):
            return f"cannot connect to the broker at {where}: {e.strerror or e}"
        return f"cannot connect to the broker at {where}: {e}"

    # --- the publish thread ----------------------------------------------------------------------

    def _publish_loop(self) -> None:
        every = self.cfg.stats_every_s
        stats_since, stats_base = self._clock(), self.live.metrics()
        next_stats = stats_since + every
        while True:
            closing = self._closing.is_set()
            if not closing:
                self._wake.wait(TICK_S)
            self._wake.clear()
            self._collect()
            now = self._clock()
            if self._connected.is_set():
                if self._fresh.is_set():
                    self._fresh.clear()
                    self._announce()
                self._flush()
                self._state(force=False)
                if now >= next_stats or (closing and now > stats_since):
                    stats_since, stats_base = self._stats(stats_since, stats_base)
            if now >= next_stats:
                next_stats = now + every
            if closing:
                break
        self._goodbye()

    def _collect(self) -> None:
        """The ring's new events into the bounded queue; beyond the bound the oldest go (counted)."""
        events = self.live.events_after(self._last_id)
        if not events:
            return
        if events[0].id > self._last_id + 1:  # the ring moved on before this thread got to it
            self.dropped += events[0].id - self._last_id - 1
        for event in events:
            if len(self._outbox) >= self.cfg.queue_size:
                self._outbox.popleft()
                self.dropped += 1
            self._outbox.append(event_payload(self.gate, event).model_dump_json())
        self._last_id = events[-1].id

    def _send(self, topic: str, payload: str, *, retain: bool = False) -> mqtt.MQTTMessageInfo | None:
        """Hand one message to the client; None if it did not take it."""
        info = self._client.publish(topic, payload, qos=self.cfg.qos, retain=retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
            info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and self.cfg.qos > 0  # held by the client, resent
        ):
            self.published += 1
            return info
        return None

    def _flush(self) -> None:
        while self._outbox and self._connected.is_set():
            info = self._client.publish(self.topics.events, self._outbox[0], qos=self.cfg.qos)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
                info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and self.cfg.qos > 0
            ):
                self._outbox.popleft()
                self.published += 1
                self.events_published += 1
            else:  # the connection just went (QoS 0), or the broker is slow to acknowledge: try later
                break

    def _announce(self) -> None:
        for topic, config in self._discovery.items():
            self._send(topic, _json(config), retain=True)
        self._send(self.topics.available, ONLINE, retain=True)
        self._state(force=True)

    def _state(self, *, force: bool) -> mqtt.MQTTMessageInfo | None:
        payload = state_payload(self.gate, self.live.snapshot(), self._wall())
        key = payload.model_dump(exclude={"time"})
        if not force and key == self._last_state:
            return None
        info = self._send(self.topics.state, payload.model_dump_json(), retain=True)
        if info is not None:
            self._last_state = key
        return info

    def _stats(self, since: float, base: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        now, metrics = self._clock(), self.live.metrics()
        payload = stats_payload(
            self.gate,
            metrics,
            base,
            interval_s=now - since,
            uptime_s=now - self.live.started,
            wall=self._wall(),
            mqtt=self.counts(),
        )
        self._send(self.topics.stats, payload.model_dump_json())
        return now, metrics

    def _goodbye(self) -> None:
        """On a clean stop: the last events, state and 'offline', retained, waited for (bounded)."""
        if not self._connected.is_set():
            return
        deadline = self._clock() + STOP_WAIT_S
        self._state(force=True)
        info = self._send(self.topics.available, OFFLINE, retain=True)
        if info is None:
            return
        with contextlib.suppress(RuntimeError, ValueError):  # the connection went: the Last Will says it
            info.wait_for_publish(timeout=max(0.0, deadline - self._clock()))


def _json(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))
