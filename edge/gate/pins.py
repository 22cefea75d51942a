"""The gate's digital outputs as small gpiozero devices: off at start, off when closed.

``Output`` is one pin with its wiring polarity; ``Relay`` is an output that is on only as a
bounded pulse (gpiozero's timer thread ends it). Both the gate process (red LED, buzzer, and the
relay when ``relay_guard`` is off) and the relay guard process build their pins here.
"""

from __future__ import annotations

import warnings

from ..core.errors import ConfigError, brief


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
