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
import warnings
from dataclasses import dataclass, replace

from ..core.errors import ConfigError, brief
from .config import OutputsConfig

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


def pin_factory(name: str):
    """The gpiozero pin factory ``name`` ('auto' lets gpiozero choose, as $GPIOZERO_PIN_FACTORY may)."""
    if name == "auto":
        return None
    if name == "mock":
        from gpiozero.pins.mock import MockFactory

        return MockFactory()
    import importlib

    module, cls = {
        "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory"),
        "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory"),
        "pigpio": ("gpiozero.pins.pigpio", "PiGPIOFactory"),
        "native": ("gpiozero.pins.native", "NativeFactory"),
    }[name]
    try:
        return getattr(importlib.import_module(module), cls)()
    except Exception as e:  # missing library, no GPIO chip, daemon not running
        raise ConfigError(f"outputs.pin_factory: {name} is not usable here ({brief(e)})") from e


class Output:
    """One digital output, off at start, off when closed."""

    def __init__(self, pin, *, active_high: bool = True, pin_factory=None, name: str = "output") -> None:
        from gpiozero import DigitalOutputDevice
        from gpiozero.exc import BadPinFactory, GPIOZeroError, PinFactoryFallback

        self.name = name
        try:
            with warnings.catch_warnings():  # 'auto' tries each factory in turn and warns for each miss
                warnings.simplefilter("ignore", PinFactoryFallback)
                self._device = DigitalOutputDevice(
                    pin, active_high=active_high, initial_value=False, pin_factory=pin_factory
                )
        except BadPinFactory as e:
            raise ConfigError(
                'no GPIO on this machine; set outputs.pin_factory = "mock" to simulate the pins'
            ) from e
        except (GPIOZeroError, ValueError) as e:
            raise ConfigError(f"outputs.{name}_pin: {pin!r} cannot be used ({brief(e)})") from e

    @property
    def is_on(self) -> bool:
        return bool(self._device.value) if not self._device.closed else False

    @property
    def pin(self):
        return self._device.pin

    def on(self) -> None:
        self._device.on()

    def off(self) -> None:
        self._device.off()

    def close(self) -> None:
        """Off, then release the pin; safe to call twice."""
        if self._device.closed:
            return
        try:
            self._device.off()
        finally:
            self._device.close()

    def __enter__(self) -> Output:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Relay(Output):
    """The door relay: on only as a bounded pulse."""

    def __init__(self, pin, *, max_on_s: float, active_high: bool = True, pin_factory=None) -> None:
        super().__init__(pin, active_high=active_high, pin_factory=pin_factory, name="relay")
        self.max_on_s = max_on_s

    def pulse(self, seconds: float | None = None) -> None:
        """On now, off after ``seconds`` (at most ``max_on_s``) by gpiozero's timer thread."""
        seconds = self.max_on_s if seconds is None else min(seconds, self.max_on_s)
        self._device.blink(on_time=seconds, off_time=0, n=1, background=True)

    def on(self) -> None:
        self.pulse()


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
