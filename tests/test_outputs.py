"""The GPIO outputs on gpiozero's own MockFactory pins: levels over time, polarity, fail-safe closing."""

from __future__ import annotations

import time

import pytest

from fakes import levels
from maskgate.edge.core.errors import ConfigError
from maskgate.edge.gate.config import OutputsConfig
from maskgate.edge.gate.outputs import OFF, Outputs, Signals
from maskgate.edge.gate.pins import Output, Relay

pytestmark = pytest.mark.arm64  # in `make check-arm64`'s subset (pyproject.toml)


def wait_until(predicate, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_relay_pulse_ends_by_itself_within_its_bound(mock_factory):
    relay = Relay(17, max_on_s=0.15, pin_factory=mock_factory)
    pin = mock_factory.pin(17)
    assert levels(mock_factory, 17) == [False]  # constructed off
    relay.pulse(10.0)  # asks for more than the bound
    assert relay.is_on
    wait_until(lambda: not relay.is_on)  # nobody calls off(): gpiozero's timer does
    on, off = pin.states[1], pin.states[2]
    assert (on.state, off.state) == (True, False)
    assert 0.12 <= off.timestamp - on.timestamp <= 0.5
    relay.on()  # on() is a bounded pulse too
    wait_until(lambda: not relay.is_on)
    assert levels(mock_factory, 17) == [False, True, False, True, False]
    relay.close()


def test_active_low_relay_holds_its_pin_high_when_off(mock_factory):
    relay = Relay(17, max_on_s=0.05, active_high=False, pin_factory=mock_factory)
    # The mock pin powers up low; construction drives it high at once: off, for an active-low board.
    assert levels(mock_factory, 17) == [False, True]
    relay.pulse()
    wait_until(lambda: not relay.is_on)
    assert levels(mock_factory, 17) == [False, True, False, True]
    relay.close()


def test_close_turns_off_first_and_can_be_repeated(mock_factory):
    relay = Relay(17, max_on_s=30, pin_factory=mock_factory)
    relay.pulse()
    relay.close()
    relay.close()
    assert levels(mock_factory, 17) == [False, True, False]


def test_outputs_follow_the_decision_levels(mock_factory):
    cfg = OutputsConfig(buzzer_pin=5)
    with Outputs.from_config(cfg, pulse_s=5.0, factory=mock_factory) as out:
        out.apply(Signals(relay=True, green=True, unlocks=1))
        out.apply(Signals(relay=True, green=True, unlocks=1))  # unchanged: nothing re-driven
        out.apply(Signals(red=True, buzzer=True))
        out.apply(OFF)
    assert levels(mock_factory, 17) == [False, True, False]
    assert levels(mock_factory, 27) == [False, True, False]
    assert levels(mock_factory, 22) == [False, True, False]
    assert levels(mock_factory, 5) == [False, True, False]


def test_back_to_back_unlocks_each_get_a_pulse(mock_factory):
    with Outputs.from_config(OutputsConfig(), pulse_s=0.1, factory=mock_factory) as out:
        out.apply(Signals(relay=True, unlocks=1))
        wait_until(lambda: not out.relay.is_on)  # the hardware timer ended the first pulse
        out.apply(Signals(relay=True, unlocks=1))  # the same unlock: no second pulse
        out.apply(Signals(relay=True, unlocks=2))  # relock and a new unlock in one step (cooldown 0)
        assert out.relay.is_on
    assert levels(mock_factory, 17) == [False, True, False, True, False]


def test_leaving_the_block_with_an_exception_locks_the_door(mock_factory):
    with (
        pytest.raises(RuntimeError),
        Outputs.from_config(OutputsConfig(), pulse_s=30, factory=mock_factory) as out,
    ):
        out.apply(Signals(relay=True, green=True, red=True, unlocks=1))
        raise RuntimeError("crash in the loop")
    for pin in (17, 27, 22):
        assert levels(mock_factory, pin)[-1] is False


def test_absent_outputs_are_skipped(mock_factory):
    cfg = OutputsConfig(green_pin=None, red_pin=None)
    with Outputs.from_config(cfg, pulse_s=1, factory=mock_factory) as out:
        assert [d.name for d in out.devices()] == ["relay"]
        out.apply(Signals(relay=True, green=True, red=True, unlocks=1))
        out.off()
    assert levels(mock_factory, 17) == [False, True, False]


def test_a_pin_the_board_does_not_have_is_refused_by_the_configuration():
    with pytest.raises(ValueError, match=r"GPIO99 is not on the 40-pin header"):
        OutputsConfig(red_pin=99)


def test_a_pin_that_cannot_be_claimed_is_one_config_error_and_frees_the_others(mock_factory):
    taken = Output(22, pin_factory=mock_factory, name="other")  # the red LED's pin, already in use
    with pytest.raises(ConfigError, match=r"outputs.red_pin: 22"):
        Outputs.from_config(OutputsConfig(), pulse_s=1, factory=mock_factory)
    taken.close()
    # the relay built before the failure was released: its pin can be claimed again
    Relay(17, max_on_s=1, pin_factory=mock_factory).close()


def test_one_pin_for_two_outputs_is_rejected():
    with pytest.raises(ValueError, match="pin 17 is given to more than one output"):
        OutputsConfig(relay_pin=17, red_pin=17)
