"""Progress of long steps, on a terminal and off it.

tqdm draws a bar on a terminal and, asked to stay quiet elsewhere, prints
nothing at all, so a calibration or a benchmark run under systemd, in CI or with
``2> log`` looks hung for minutes. Off a terminal a log line every few seconds
("calibrating: 120/300 samples") says how far it got, at the cost of a line,
not a bar redrawn into a file. Lines go through ``logging``, so ``-q`` silences
them like every other message.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO, TypeVar

T = TypeVar("T")

logger = logging.getLogger("maskgate.progress")

EVERY_S = 5.0


class Progress:
    """A counter shown as a tqdm bar on a terminal, as a log line every ``every`` seconds
    (``EVERY_S`` by default) elsewhere.

    ``enabled=None`` follows the log level: shown when INFO messages are, hidden under ``-q``.
    ``stream`` (default: ``sys.stderr`` when the counter is made) decides terminal or not and is
    where the bar is drawn.
    """

    def __init__(
        self,
        desc: str,
        total: int | None = None,
        *,
        unit: str = "items",
        every: float | None = None,
        enabled: bool | None = None,
        stream: TextIO | None = None,
        leave: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.desc, self.total, self.unit = desc, total, unit
        self.every = EVERY_S if every is None else every
        self.n = 0
        self._clock = clock
        self._next = clock() + self.every
        self._logged_n: int | None = None  # the count the last line said
        self._bar: Any = None
        self._enabled = logger.isEnabledFor(logging.INFO) if enabled is None else enabled
        stream = sys.stderr if stream is None else stream
        if self._enabled and _is_terminal(stream):
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=leave, file=stream)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._enabled and self._clock() >= self._next:
            self._log()
            self._next = self._clock() + self.every

    def close(self) -> None:
        """Ends the bar; off a terminal, a last line if any was written, so the log says where it ended."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._enabled and self._logged_n not in (None, self.n):
            self._log()
        self._enabled = False

    def _log(self) -> None:
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        logger.info("%s: %s %s", self.desc, count, self.unit)
        self._logged_n = self.n

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(
    items: Iterable[T],
    desc: str,
    *,
    total: int | None = None,
    unit: str = "items",
    **options: Any,
) -> Iterator[T]:
    """``items`` passed through one by one, counted by a ``Progress`` (options as there).

    ``total`` defaults to ``len(items)`` where the iterable has one.
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(desc, total, unit=unit, **options) as progress:
        for item in items:
            yield item
            progress.update()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
