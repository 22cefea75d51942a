"""Latency statistics, computed one way for every command that reports them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np


def summarize(ms: Sequence[float]) -> dict[str, float] | None:
    """p50, p95, p99 and mean of a list of milliseconds; ``None`` for an empty list."""
    if not len(ms):
        return None
    a = np.asarray(ms, dtype=np.float64)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "mean": float(a.mean()), "n": len(a)}


def measure(fn: Callable[[Any], Any], items: Iterable[Any], *, warmup: int = 5, duration: float | None = None,
            done: Callable[[], None] | None = None) -> tuple[list[float], list[float]]:  # fmt: skip
    """Wall and CPU milliseconds of ``fn`` on each item, after ``warmup`` untimed calls on the first
    items; stops early once ``duration`` seconds have passed. ``done`` is called after each timed
    item, outside the timing (a progress counter). A benchmark's tool, never a test's."""
    items = list(items)
    for item in items[:warmup]:
        fn(item)
    wall, cpu = [], []
    deadline = time.monotonic() + duration if duration else None
    for item in items:
        t, c = time.perf_counter(), time.process_time()
        fn(item)
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
        if done is not None:
            done()
        if deadline is not None and time.monotonic() > deadline:
            break
    return wall, cpu
