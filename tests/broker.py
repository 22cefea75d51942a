"""A real MQTT broker and a real subscriber for the tests and the fleet benchmark.

``Mosquitto`` runs Debian's mosquitto on 127.0.0.1 on a free port with a configuration of its own in a
temporary folder (anonymous, with a password file, or TLS with a CA made here by openssl), and can be
stopped and started again on the same port. ``Subscriber`` is a paho client that records every message
it receives and lets a test wait for one (with a timeout: nothing is timed). Nothing here imports
maskgate, so the benchmark script can use it as it is.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
)
PASSWD = shutil.which("mosquitto_passwd")
OPENSSL = shutil.which("openssl")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(test: Callable[[], object], timeout: float = 10.0, every: float = 0.02):
    """``test()``'s first true value, polled until ``timeout``; AssertionError if it never comes."""
    deadline = time.monotonic() + timeout
    while True:
        value = test()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {getattr(test, '__name__', test)}")
        time.sleep(every)


class Mosquitto:
    """mosquitto on 127.0.0.1:``port`` with the listener settings ``extra`` adds; ``start``/``stop``."""

    def __init__(
        self,
        root: Path,
        *,
        port: int | None = None,
        extra: str = "",
        allow_anonymous: bool = True,
        persistent: bool = False,
    ):
        if MOSQUITTO is None:
            raise RuntimeError("mosquitto is not installed")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = self.root / "mosquitto.conf"
        # run as root (CI), mosquitto would switch to its own user, who may not read the files made here
        user = f"user {getpass.getuser()}\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"{user}listener {self.port} 127.0.0.1\n{extra}\n"
            f"allow_anonymous {'true' if allow_anonymous else 'false'}\n"
            # persistent: sessions and retained messages outlive a restart (saved at stop, read at start)
            + (
                f"persistence true\npersistence_location {self.root}/\n"
                if persistent
                else "persistence false\n"
            )
            + "log_dest stderr\nlog_type error\nlog_type warning\n"
        )
        self.proc: subprocess.Popen | None = None
        self.log = self.root / "mosquitto.log"

    def start(self) -> Mosquitto:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto ended at start: {self.log.read_text()[-1000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("mosquitto did not listen within 10 s") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def password_file(root: Path, users: dict[str, str]) -> Path:
    """A mosquitto password file (hashed by mosquitto_passwd) for ``users``."""
    path = Path(root) / "passwd"
    path.write_text("")
    for user, password in users.items():
        subprocess.run([PASSWD, "-b", str(path), user, password], check=True, capture_output=True)
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA that signs the broker's certificate
    other_ca: Path  # a CA that signs nothing of this broker's
    cert: Path
    key: Path


def make_pki(root: Path) -> Pki:
    """Two CAs and a certificate for 127.0.0.1 (and localhost) signed by the first, with openssl."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([OPENSSL, *args], check=True, capture_output=True, cwd=root)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca_ext = [
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]
    for name in ("ca", "other-ca"):
        run("req", "-x509", *ec, "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
            "-subj", f"/CN=maskgate test {name}", *ca_ext)  # fmt: skip
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (root / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid,issuer\nsubjectKeyIdentifier=hash\n"
    )
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "server.ext")  # fmt: skip
    for key in root.glob("*.key"):
        key.chmod(0o600)
    return Pki(root / "ca.crt", root / "other-ca.crt", root / "server.crt", root / "server.key")


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool
    received: float  # wall-clock time it arrived

    @property
    def text(self) -> str:
        return self.payload.decode()

    def json(self):
        return json.loads(self.payload)


class Subscriber:
    """A paho client subscribed to ``topics`` that keeps every message, resubscribing on reconnect."""

    def __init__(
        self,
        port: int,
        topics: tuple[str, ...] = ("#",),
        *,
        username=None,
        password=None,
        tls=None,
        client_id: str = "",
        clean_session: bool = True,
    ):
        """``client_id`` and ``clean_session=False``: a session the broker keeps (with what arrives for
        it) while the subscriber is away, and across its restarts if it is persistent."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[Message] = []
        self._cond = threading.Condition()
        self.topics = topics
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
        )
        if username:
            self.client.username_pw_set(username, password)
        if tls is not None:
            self.client.tls_set(ca_certs=str(tls))
        self.client.reconnect_delay_set(min_delay=0.05, max_delay=0.2)  # back at once after a restart
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.subscribed = 0  # subscriptions the broker acknowledged: one per (re)connection
        self._subscribed = threading.Event()
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the subscriber could not subscribe")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe([(t, 1) for t in self.topics])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self.subscribed += 1
        self._subscribed.set()

    def _on_message(self, client, userdata, msg) -> None:
        with self._cond:
            self.messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain), time.time()))
            self._cond.notify_all()

    def on(self, topic: str) -> list[Message]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, test: Callable[[Message], bool], timeout: float = 10.0, after: int = 0) -> Message:
        """The first message (from index ``after`` on) that passes ``test``; AssertionError if none comes."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self.messages[after:]:
                    if test(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = sorted({m.topic for m in self.messages})
                    raise AssertionError(f"no such message within {timeout:g} s; topics seen: {seen}")
                self._cond.wait(left)

    def mark(self) -> int:
        with self._cond:
            return len(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
