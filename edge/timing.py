"""Latency statistics, computed one way for every command that reports them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def summarize(ms: Sequence[float]) -> dict[str, float] | None:
    """p50, p95, p99 and mean of a list of milliseconds; ``None`` for an empty list."""
    if not len(ms):
        return None
    a = np.asarray(ms, dtype=np.float64)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "mean": float(a.mean()), "n": len(a)}
