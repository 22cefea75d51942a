"""The relay guard: a small process that alone drives the door relay and the green LED.

A pulse timed inside the gate process lasts as long as that process lets it: frozen
(SIGSTOP), stuck in a native call that holds the GIL, or killed, the gate cannot end
what it started. So the relay belongs to this separate process, which the gate starts
and talks to over a pipe, and which accepts only two orders:

    pulse S   relay and green on until its own monotonic deadline, now + min(S, max_pulse_s)
    off       relay and green off now

plus ``beat`` lines, the gate's heartbeat. The guard ends every pulse at its deadline
whatever the gate does; turns everything off when the gate stops beating for longer
than ``heartbeat_timeout_s`` (the gate process frozen, or stuck in a call that holds the
GIL; the beat comes from a thread, so it proves the process alive, not its loop: a loop
hung elsewhere is the systemd watchdog's) or when the pipe closes (a gate that exited
or was killed); and logs each change itself (``relay on`` / ``relay off``), so the log
says what the door did, not what the gate asked. What remains (the guard itself killed)
is covered by the unit's ExecStopPost and, best, by a relay module with its own timeout
(docs/runtime.md).

The guard imports nothing heavy (no numpy, OpenCV or LiteRT): it starts in well under a
second on a Pi and has nothing in it that can hang.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigError, MaskgateError
from ..core.logs import setup_logging

if TYPE_CHECKING:  # the guard process itself needs no configuration model: its settings come as JSON
    from .config import OutputsConfig

logger = logging.getLogger("maskgate.guard")

HEARTBEAT_S = 0.2  # how often the gate says it is alive
HEARTBEAT_TIMEOUT_S = 1.0  # silence after which the guard takes the gate for hung
STOP_GRACE_S = 3.0  # after SIGTERM: how long the guard waits for the gate to close its pipe
IDLE_WAKE_S = 0.5
READY = "ready"
START_TIMEOUT_S = 30.0  # opening the pins; a Pi Zero 2 importing gpiozero takes a few seconds


class GuardLostError(MaskgateError, OSError):
    """The relay guard is gone: the gate cannot open the door, and must stop so systemd restarts it."""

    exit_status = 1  # a fault, not a user error: a restart can mend it


# --- the gate's side -----------------------------------------------------------------------------


class GuardedRelay:
    """The relay as the gate process sees it: orders to the guard process, which owns the pins.

    Looks like ``pins.Relay`` to ``Outputs``: ``pulse()``, ``off()``, ``close()``; the green LED
    follows the relay inside the guard (green means "a pulse is running").
    """

    name = "relay"

    def __init__(
        self,
        cfg: OutputsConfig,
        *,
        max_on_s: float,
        heartbeat_s: float = HEARTBEAT_S,
        heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S,
        python: str = sys.executable,
    ) -> None:
        self.max_on_s = max_on_s
        self.pin = cfg.relay_pin
        self.green_pin = cfg.green_pin
        settings = {
            "relay_pin": cfg.relay_pin,
            "relay_active_high": cfg.relay_active_high,
            "green_pin": cfg.green_pin,
            "leds_active_high": cfg.leds_active_high,
            "pin_factory": cfg.pin_factory,
            "max_pulse_s": max_on_s,
            "heartbeat_timeout_s": heartbeat_timeout_s,
        }
        self._lock = threading.Lock()
        self._closed = False
        self._proc = subprocess.Popen(
            [python, "-m", "maskgate.edge.gate.guard", json.dumps(settings)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the guard's own log lines go where the gate's go (the journal)
            text=True,
            bufsize=1,
        )
        self._await_ready()
        self._fd = self._proc.stdin.fileno()
        os.set_blocking(self._fd, False)
        self._beat_stop = threading.Event()
        self._beats = threading.Thread(
            target=self._beat, args=(heartbeat_s,), name="guard-heartbeat", daemon=True
        )
        self._beats.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def green(self) -> GuardedLed | None:
        """The green LED as ``Outputs`` lists it: the guard drives it with the relay."""
        return GuardedLed(self.green_pin) if self.green_pin is not None else None

    def _await_ready(self) -> None:
        ready, _, _ = select.select([self._proc.stdout], [], [], START_TIMEOUT_S)
        line = self._proc.stdout.readline().strip() if ready else ""
        word, _, pins = line.partition(" ")
        if word == READY:
            names = json.loads(pins)  # the pins as gpiozero names them, for the log
            self.pin, self.green_pin = names["relay"], names.get("green")
            return
        self._proc.kill()
        self._proc.wait()
        if line.startswith("error: "):  # the guard's one-line reason: a pin or factory that cannot be used
            raise ConfigError(line.removeprefix("error: "))
        # no reason given (it crashed, or did not answer in time): a fault, so systemd tries again
        raise GuardLostError(
            f"the relay guard did not start within {START_TIMEOUT_S:g} s ({line or 'no answer'})"
        )

    def _send(self, line: str) -> None:
        """One order, written without ever blocking: a guard that stopped reading (frozen, stuck)
        would otherwise stall the gate's loop on a full pipe. Orders are far shorter than PIPE_BUF,
        so each write is whole or refused (EAGAIN), never half."""
        with self._lock:
            if self._closed:
                return
            try:
                os.write(self._fd, (line + "\n").encode("ascii"))
            except BlockingIOError as e:
                raise GuardLostError(
                    f"the relay guard (pid {self._proc.pid}) stopped reading its orders"
                ) from e
            except OSError as e:  # EPIPE: it exited
                raise GuardLostError(f"the relay guard (pid {self._proc.pid}) is gone: {e}") from e

    def _beat(self, every: float) -> None:
        while not self._beat_stop.wait(every):
            try:
                self._send("beat")
            except GuardLostError:
                return  # the next order says so, with the gate's own error path

    def alive(self) -> bool:
        return self._proc.poll() is None

    def check(self) -> None:
        """Raise if the guard is gone: the gate must not run on with a door it cannot open or lock."""
        if not self.alive():
            raise GuardLostError(f"the relay guard exited with status {self._proc.returncode}")

    def pulse(self, seconds: float | None = None) -> None:
        seconds = self.max_on_s if seconds is None else min(seconds, self.max_on_s)
        self.check()
        self._send(f"pulse {seconds:.3f}")

    def on(self) -> None:
        self.pulse()

    def off(self) -> None:
        if self.alive():
            self._send("off")

    def close(self) -> None:
        """Off, then let the guard go: closing its pipe is itself an order to turn everything off."""
        if self._closed:
            return
        self._beat_stop.set()
        with contextlib.suppress(GuardLostError):
            self.off()
        with self._lock:
            self._closed = True
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc.stdout.close()


class GuardedLed:
    """The green LED, owned by the guard: it is on exactly while a pulse runs, so the gate's orders
    for it are the relay's, and its own on/off do nothing here."""

    name = "green"

    def __init__(self, pin: str) -> None:
        self.pin = pin

    def on(self) -> None:
        pass

    def off(self) -> None:
        pass

    def close(self) -> None:
        pass


# --- the guard's side ----------------------------------------------------------------------------


class Guard:
    """The guard's state: pins, the pulse deadline, the last heartbeat. Clock passed in, so tests
    can drive it exactly; ``serve`` runs it on a pipe."""

    def __init__(self, relay, green=None, *, max_pulse_s: float, heartbeat_timeout_s: float, now: float):
        self.relay, self.green = relay, green
        self.max_pulse_s = max_pulse_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.deadline: float | None = None  # the end of the running pulse
        self.last_beat = now
        self.stopping_since: float | None = None  # SIGTERM: locked for good, waiting for the gate to go
        self.signalled: str | None = None  # set by the signal handler, acted on by take_signal
        self._off()

    def _on(self) -> None:
        for d in (self.relay, self.green):
            if d is not None:
                d.on()

    def _off(self) -> None:
        for d in (self.relay, self.green):
            if d is not None:
                d.off()

    def order(self, line: str, now: float) -> None:
        """One line from the gate; anything but the known orders is refused (and logged)."""
        self.take_signal(now)
        word, _, arg = line.strip().partition(" ")
        self.last_beat = now  # any order proves the gate alive
        if word == "beat":
            return
        if word == "off":
            self.stop("asked by the gate", now)
            return
        if word == "pulse" and self.stopping_since is not None:
            logger.info("guard: refused a pulse (stopping)")
            return
        if word == "pulse":
            try:
                seconds = float(arg)
            except ValueError:
                seconds = float("nan")
            if not 0 < seconds < float("inf"):
                logger.warning("guard: refused %r (pulse needs seconds above 0)", line.strip()[:40])
                return
            seconds = min(seconds, self.max_pulse_s)
            was_on = self.deadline is not None
            self.deadline = now + seconds
            self._on()
            logger.info("guard: relay on for %g s%s", seconds, " (pulse restarted)" if was_on else "")
            return
        logger.warning("guard: refused %r (only 'pulse S', 'off' and 'beat')", line.strip()[:40])

    def stop(self, why: str, now: float) -> None:
        if self.deadline is not None:
            self._off()
            late = max(0.0, now - self.deadline) if why == "pulse ended" else 0.0
            logger.info("guard: relay off (%s)%s", why, f", {late * 1000:.0f} ms late" if late > 0.05 else "")
        else:
            self._off()
        self.deadline = None

    def tick(self, now: float) -> None:
        """End the pulse at its deadline, or at once if the gate fell silent."""
        if self.deadline is None:
            return
        if now >= self.deadline:
            self.stop("pulse ended", now)
        elif now - self.last_beat > self.heartbeat_timeout_s:
            self.stop(f"no heartbeat from the gate for {now - self.last_beat:.1f} s", now)

    def take_signal(self, now: float) -> None:
        """Act on a SIGTERM that arrived since the last look (the handler only notes it, so that it
        cannot land between a pulse's checks and its relay-on)."""
        if self.signalled is not None and self.stopping_since is None:
            self.terminate(self.signalled, now)

    def terminate(self, why: str, now: float) -> None:
        """Locked for good: systemd stops the unit, and the gate, stopping too, closes the pipe soon.

        The guard stays (off) until then rather than exit first: a gate that saw its guard gone
        mid-stop would report a fault where there is none."""
        self.stop(why, now)
        self.stopping_since = now

    def wait_s(self, now: float) -> float | None:
        """How long the guard may sleep before it must look again (None: until the next line)."""
        ends = []
        if self.deadline is not None:
            ends += [self.deadline, self.last_beat + self.heartbeat_timeout_s]
        if self.stopping_since is not None:
            ends.append(self.stopping_since + STOP_GRACE_S)
        return max(0.0, min(ends) - now) if ends else None

    def done(self, now: float) -> bool:
        """Stopping, and the gate did not close the pipe within the grace: leave anyway."""
        return self.stopping_since is not None and now - self.stopping_since >= STOP_GRACE_S


def serve(guard: Guard, fd: int, *, clock=time.monotonic) -> str:
    """Read orders from ``fd`` until it closes; return why the guard stopped."""
    buffer = b""
    while True:
        wait = guard.wait_s(clock())
        # at least twice a second: a signal's handler changes what to wait for, select cannot know
        ready, _, _ = select.select([fd], [], [], IDLE_WAKE_S if wait is None else min(wait, IDLE_WAKE_S))
        now = clock()
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                guard.stop("the gate is gone", now)
                return "the gate closed the pipe"
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            buffer = buffer[-256:]  # no line is longer; a flood cannot grow memory
            for line in lines:
                guard.order(line.decode("ascii", "replace"), now)
        guard.take_signal(clock())
        guard.tick(clock())
        if guard.done(clock()):
            return "stopped by a signal; the gate did not close its pipe in time"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m maskgate.edge.gate.guard SETTINGS_JSON``; started by ``GuardedRelay`` only."""
    setup_logging(logging.INFO)  # the gate's format: the guard's lines share its stderr
    settings: dict[str, Any] = json.loads((sys.argv[1:] if argv is None else argv)[0])
    from .pins import Output, pin_factory

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the gate's to handle; its pipe tells us
    try:
        factory = pin_factory(settings["pin_factory"])
        relay = Output(settings["relay_pin"], active_high=settings["relay_active_high"],
                       pin_factory=factory, name="relay")  # fmt: skip
        green = None
        if settings.get("green_pin") is not None:
            green = Output(settings["green_pin"], active_high=settings["leds_active_high"],
                           pin_factory=factory, name="green")  # fmt: skip
    except ConfigError as e:
        print(f"error: {e}", flush=True)
        return 2

    guard = Guard(
        relay,
        green,
        max_pulse_s=float(settings["max_pulse_s"]),
        heartbeat_timeout_s=float(settings["heartbeat_timeout_s"]),
        now=time.monotonic(),
    )

    def noted(signum, _frame) -> None:
        guard.signalled = signal.Signals(signum).name

    signal.signal(signal.SIGTERM, noted)
    names = {"relay": str(relay.pin)} | ({"green": str(green.pin)} if green is not None else {})
    print(READY, json.dumps(names), flush=True)
    os.dup2(2, 1)  # nobody reads the pipe after this line: anything printed later goes to the log
    try:
        why = serve(guard, sys.stdin.fileno())
        logger.debug("guard: %s", why)
    finally:
        relay.close()
        if green is not None:
            green.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
