"""Progress off a terminal is a log line every few seconds; on a terminal, tqdm's bar."""

from __future__ import annotations

import io
import logging

import pytest

from maskgate.edge.core.progress import Progress, track


class Clock:
    """Time that moves only when a test says so."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def lines(caplog):
    caplog.set_level(logging.INFO, logger="maskgate.progress")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "maskgate.progress"]


def test_off_a_terminal_a_line_every_few_seconds_and_one_at_the_end(lines):
    clock, stream = Clock(), io.StringIO()
    for _ in track(range(10), "calibrating", unit="samples", every=3.0, stream=stream, clock=clock):
        clock.t += 1.0  # each item takes a second
    assert lines() == [
        "calibrating: 3/10 samples",
        "calibrating: 6/10 samples",
        "calibrating: 9/10 samples",
        "calibrating: 10/10 samples",
    ]
    assert stream.getvalue() == ""  # no bar drawn into a file


def test_a_short_step_says_nothing_and_an_unknown_total_counts_up(lines):
    clock = Clock()
    list(track(iter(range(5)), "quick", stream=io.StringIO(), clock=clock))
    assert lines() == []
    with Progress("frames", unit="frames", every=2.0, stream=io.StringIO(), clock=clock) as p:
        for _ in range(3):
            clock.t += 1.5
            p.update()
    assert lines() == ["frames: 2 frames", "frames: 3 frames"]


def test_on_a_terminal_tqdm_draws_the_bar_and_nothing_is_logged(lines):
    clock, terminal = Clock(), Terminal()
    for _ in track(range(4), "calibrating", unit="samples", every=1.0, stream=terminal, clock=clock):
        clock.t += 5.0
    assert "calibrating:" in terminal.getvalue() and "/4 [" in terminal.getvalue()  # a tqdm bar
    assert lines() == []


def test_disabled_or_quiet_shows_nothing(caplog):
    terminal = Terminal()
    list(track(range(3), "x", enabled=False, stream=terminal, every=0.0))
    assert terminal.getvalue() == ""
    caplog.set_level(logging.WARNING, logger="maskgate.progress")  # what -q sets
    list(track(range(3), "x", stream=terminal, every=0.0))
    assert terminal.getvalue() == "" and not caplog.records
