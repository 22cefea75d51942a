"""The relay guard: a pulse ends on the guard's clock, whatever happens to the gate process.

The logic is tested exactly with a hand-driven clock; the process boundary with a real guard
process on mock pins, observed from outside a gate process that is frozen or killed mid-pulse:
the guard's own log lines say when the relay went on and off.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from maskgate.edge.core.errors import ConfigError
from maskgate.edge.gate.config import OutputsConfig
from maskgate.edge.gate.guard import Guard, GuardedRelay, GuardLostError

pytestmark = pytest.mark.arm64  # in `make check-arm64`'s subset (pyproject.toml)


class Pin:
    def __init__(self) -> None:
        self.value = None
        self.changes: list[bool] = []

    def on(self) -> None:
        self.value = True
        self.changes.append(True)

    def off(self) -> None:
        self.value = False
        self.changes.append(False)


def _guard(max_pulse_s=3.0, timeout_s=1.0):
    relay, green = Pin(), Pin()
    return Guard(relay, green, max_pulse_s=max_pulse_s, heartbeat_timeout_s=timeout_s, now=0.0), relay, green


def test_off_at_start_and_a_pulse_ends_at_its_own_deadline():
    g, relay, green = _guard()
    assert relay.value is False and green.value is False
    g.order("pulse 2", 10.0)
    assert relay.value and green.value and g.wait_s(10.0) == pytest.approx(1.0)  # the heartbeat bound first
    for t in (10.5, 11.0, 11.5):
        g.order("beat", t)
        g.tick(t)
        assert relay.value
    g.tick(11.99)
    assert relay.value
    g.tick(12.0)
    assert relay.value is False and green.value is False and g.wait_s(12.0) is None


def test_a_pulse_never_exceeds_the_configured_length():
    g, relay, _ = _guard(max_pulse_s=3.0)
    g.order("pulse 60", 0.0)
    assert g.deadline == 3.0


def test_a_silent_gate_is_taken_for_hung_and_the_relay_goes_off():
    g, relay, _ = _guard(max_pulse_s=5.0, timeout_s=1.0)
    g.order("pulse 5", 0.0)
    g.tick(0.9)
    assert relay.value
    g.tick(1.01)  # no beat since 0.0
    assert relay.value is False


def test_off_and_unknown_orders():
    g, relay, _ = _guard()
    g.order("pulse 3", 0.0)
    g.order("off", 0.5)
    assert relay.value is False
    for bad in ("on", "pulse", "pulse -1", "pulse nan", "pulse inf", "open the door", "pulse 1e999"):
        g.order(bad, 1.0)
        assert relay.value is False, bad


def test_after_sigterm_the_guard_stays_locked_and_leaves_when_the_gate_does():
    g, relay, _ = _guard()
    g.order("pulse 3", 0.0)
    g.terminate("SIGTERM", 0.5)
    assert relay.value is False and not g.done(0.5)
    g.order("pulse 3", 1.0)  # a gate still running asks again: refused
    assert relay.value is False and g.deadline is None
    assert g.done(0.5 + 3.0)  # the gate never closed its pipe: the guard leaves on its own


# --- the process boundary -----------------------------------------------------------------------

GATE = textwrap.dedent("""
    import sys, time
    from maskgate.edge.gate.config import OutputsConfig
    from maskgate.edge.gate.guard import GuardedRelay
    relay = GuardedRelay(OutputsConfig(pin_factory="mock"), max_on_s=float(sys.argv[1]))
    print("pid", relay.pid, flush=True)
    relay.pulse()
    print("pulsed", flush=True)
    time.sleep(60)  # the test freezes or kills this process now
""")


class Watch:
    """A gate process with a guarded relay; the guard's log lines stamped as they arrive."""

    def __init__(self, pulse_s: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", GATE, str(pulse_s)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ | {"PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.guard_pid = int(self.proc.stdout.readline().split()[1])
        assert self.proc.stdout.readline().strip() == "pulsed"

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.strip()))

    def wait_for(self, text: str, timeout: float) -> float:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for t, line in self.lines:
                if text in line:
                    return t
            time.sleep(0.01)
        raise AssertionError(f"no {text!r} within {timeout} s: {self.lines}")

    def close(self) -> None:
        for pid in (self.proc.pid, self.guard_pid):
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()


@pytest.fixture
def watch():
    made = []

    def start(pulse_s):
        made.append(Watch(pulse_s))
        return made[-1]

    yield start
    for w in made:
        w.close()


# Bounds for a shared CI machine; the fault benchmark measures the real figures (docs/runtime.md).
SLACK_S = 0.5


def test_a_frozen_gate_cannot_hold_the_relay_on(watch):
    w = watch(2.0)
    on = w.wait_for("relay on", 10)
    os.kill(w.proc.pid, signal.SIGSTOP)
    off = w.wait_for("relay off", 10)
    # the guard saw no heartbeat and locked at once, or at the latest at the pulse's end
    assert off - on <= 2.0 + SLACK_S
    assert any("no heartbeat" in line or "pulse ended" in line for _, line in w.lines)
    assert w.proc.poll() is None  # still frozen, not dead: the guard acted on its own


def test_a_killed_gate_turns_the_relay_off_at_once(watch):
    w = watch(30.0)
    w.wait_for("relay on", 10)
    killed = time.monotonic()
    os.kill(w.proc.pid, signal.SIGKILL)
    off = w.wait_for("relay off", 10)
    assert off - killed <= SLACK_S
    assert any("the gate is gone" in line for _, line in w.lines)


def test_a_gate_holding_the_gil_cannot_hold_the_relay_on(tmp_path):
    """A native call that never releases the GIL stops the heartbeat thread: the guard locks."""
    code = GATE.replace("time.sleep(60)", "import re; re.match(r'(a+)+$', 'a' * 40 + 'b')  # holds the GIL")
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    proc = subprocess.Popen([sys.executable, "-c", code, "20"], **pipes)
    try:
        proc.stdout.readline()
        assert proc.stdout.readline().strip() == "pulsed"
        start = time.monotonic()
        lines = []
        while time.monotonic() - start < 10:
            line = proc.stderr.readline()
            lines.append(line)
            if "relay off" in line:
                break
        assert "no heartbeat from the gate" in lines[-1], lines
        assert time.monotonic() - start <= 1.0 + 1.0 + SLACK_S  # timeout plus a beat, not 20 s
    finally:
        proc.kill()
        proc.wait()


def test_pins_the_guard_cannot_open_are_one_line():
    """The guard's own reason (here: no lgpio on this machine) comes back as the gate's error."""
    import importlib.util

    if importlib.util.find_spec("lgpio") is not None:
        pytest.skip("lgpio is installed here: the factory would open")
    with pytest.raises(ConfigError, match="outputs.pin_factory: lgpio is not usable here"):
        GuardedRelay(OutputsConfig(pin_factory="lgpio"), max_on_s=1.0)


def test_a_dead_guard_is_reported_not_ignored():
    relay = GuardedRelay(OutputsConfig(pin_factory="mock"), max_on_s=1.0)
    try:
        os.kill(relay.pid, signal.SIGKILL)
        relay._proc.wait()
        with pytest.raises(GuardLostError):
            relay.pulse()
    finally:
        relay.close()


def test_a_gate_whose_guard_died_stops_with_status_1_so_systemd_restarts_it(tmp_path):
    """Found on the next frame, not at the next unlock; one line, no traceback."""
    code = textwrap.dedent("""
        import os, signal, sys, time
        from maskgate.edge.cli import main
        from maskgate.edge.gate import guard

        real = guard.GuardedRelay.__init__

        def init(self, *a, **k):  # kill the guard as soon as it is up
            real(self, *a, **k)
            os.kill(self.pid, signal.SIGKILL)
            time.sleep(0.3)

        guard.GuardedRelay.__init__ = init
        sys.exit(main(["run", "--source", sys.argv[1], "--set", "outputs.pin_factory=mock",
                       "--set", "source.loop=true", "--set", "source.pace=false"]))
    """)
    import cv2
    import numpy as np

    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((120, 160, 3), 90, np.uint8))
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.jpg")], capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "maskgate: error: the relay guard exited" in r.stderr


def test_systemd_stopping_the_whole_unit_is_a_clean_stop(tmp_path):
    """systemctl stop sends SIGTERM to every process of the unit at once: the guard locks and waits
    for the gate, so the gate does not mistake it for a crash; both end, status 0, no error line."""
    import cv2
    import numpy as np

    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((120, 160, 3), 90, np.uint8))
    args = [sys.executable, "-m", "maskgate.edge.cli", "run", "--source", str(tmp_path / "a.jpg"),
            "--set", "outputs.pin_factory=mock", "--set", "source.loop=true"]  # fmt: skip
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for line in proc.stderr:
            if "models:" in line:  # a log line: after its time and level
                break
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=20) == 0, rest
        assert "maskgate: error" not in rest and "Traceback" not in rest, rest
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def test_a_guard_that_stops_reading_is_lost_and_never_blocks_the_gate():
    """A frozen guard leaves its pipe full; the gate's next order fails at once instead of hanging."""
    relay = GuardedRelay(OutputsConfig(pin_factory="mock"), max_on_s=1.0)
    try:
        os.kill(relay.pid, signal.SIGSTOP)
        outcome: list[BaseException] = []

        def flood():
            try:
                for _ in range(100_000):  # far more than a pipe holds
                    relay.off()
            except GuardLostError as e:
                outcome.append(e)

        t = threading.Thread(target=flood, daemon=True)
        t.start()
        t.join(timeout=20)
        assert not t.is_alive(), "an order blocked on the full pipe"
        assert outcome and "stopped reading its orders" in str(outcome[0])
    finally:
        os.kill(relay.pid, signal.SIGCONT)
        relay.close()
