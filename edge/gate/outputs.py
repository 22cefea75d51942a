"""The gate's outputs: a door relay, two LEDs and a buzzer, each a small gpiozero device.

Every output starts off, knows its wiring polarity (``active_high``), and
turns itself off when closed, so ``with Outputs(...)`` leaves the door locked
however the block ends. The relay is on only as a bounded pulse. Under
``maskgate run`` the relay and the green LED belong to the relay guard, a
separate process that ends each pulse on its own clock (``guard``), so a
frozen, hung or killed gate cannot hold the door open; in-process
(``Relay``, for ``outputs test`` and tests) gpiozero's timer thread ends it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from .config import OutputsConfig
from .pins import Output, Relay, pin_factory

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Signals:
    """The level each output should have now: what the decision asks of the outputs."""

    relay: bool = False
    green: bool = False
    red: bool = False
    buzzer: bool = False
    unlocks: int = 0  # unlocks so far: a new count starts a new pulse, even back to back


OFF = Signals()


@dataclass
class Outputs:
    """The gate's outputs as one unit; absent outputs (no pin configured) are simply skipped."""

    relay: Relay | None = None
    green: Output | None = None
    red: Output | None = None
    buzzer: Output | None = None
    _levels: Signals = OFF

    @classmethod
    def from_config(
        cls, cfg: OutputsConfig, *, pulse_s: float, factory=None, guarded: bool = False
    ) -> Outputs:
        """The configured outputs, all off. ``guarded``: the relay and the green LED belong to a guard
        process (``guard.GuardedRelay``) when the configuration asks for one (``relay_guard``)."""
        # a factory passed in (tests' mock pins) lives in this process: the guard could not see it
        guarded = guarded and cfg.relay_guard and cfg.relay_pin is not None and factory is None
        factory = factory if factory is not None else pin_factory(cfg.pin_factory)
        made = cls()
        try:
            if guarded:
                from .guard import GuardedRelay

                made.relay = GuardedRelay(cfg, max_on_s=pulse_s)  # the red LED and the buzzer stay here
                made.green = made.relay.green()
            elif cfg.relay_pin is not None:
                made.relay = Relay(
                    cfg.relay_pin, max_on_s=pulse_s, active_high=cfg.relay_active_high, pin_factory=factory
                )
            for name, pin, high in (
                ("green", None if guarded else cfg.green_pin, cfg.leds_active_high),
                ("red", cfg.red_pin, cfg.leds_active_high),
                ("buzzer", cfg.buzzer_pin, cfg.buzzer_active_high),
            ):
                if pin is not None:
                    setattr(made, name, Output(pin, active_high=high, pin_factory=factory, name=name))
        except BaseException:
            made.close()
            raise
        return made

    def devices(self) -> list[Output]:
        return [d for d in (self.relay, self.green, self.red, self.buzzer) if d is not None]

    def apply(self, levels: Signals) -> list[str]:
        """Drive each output to ``levels``, touching only those that change; say what changed."""
        if self.relay is not None and hasattr(self.relay, "check"):
            self.relay.check()  # a guard that died is found on the next frame, not the next unlock
        changed = []
        if self.relay is not None:
            if levels.relay and levels.unlocks != self._levels.unlocks:
                self.relay.pulse()  # a new unlock, even one right after the last pulse ended
                changed.append(f"relay on for {self.relay.max_on_s:g} s")
            elif self._levels.relay and not levels.relay:
                self.relay.off()
                changed.append("relay off")
        for name in ("green", "red", "buzzer"):
            device, want = getattr(self, name), getattr(levels, name)
            if device is not None and want != getattr(self._levels, name):
                device.on() if want else device.off()
                changed.append(f"{name} {'on' if want else 'off'}")
        self._levels = levels
        return changed

    def off(self) -> None:
        """Every output off now, whatever the last levels were."""
        for device in self.devices():
            device.off()
        self._levels = replace(OFF, unlocks=self._levels.unlocks)

    def close(self) -> None:
        """Relay first: if closing anything else fails, the door is already locked."""
        errors = []
        for device in self.devices():
            try:
                device.close()
            except Exception as e:  # keep closing the rest; report after
                errors.append(e)
        self._levels = replace(OFF, unlocks=self._levels.unlocks)
        if errors:
            raise errors[0]

    def __enter__(self) -> Outputs:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
