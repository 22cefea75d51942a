"""The parts every bundle's ``report.md`` shares, so the three kinds read alike.

A report is for the person deciding whether to ship the bundle: how it was
made, how big it is, how it did against its float original and how fast it ran
where it was converted. The middle is each converter's own; the frame is here.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence

from maskgate.edge.core import sysinfo
from maskgate.edge.core.metadata import BundleMetadata


def header(meta: BundleMetadata) -> list[str]:
    """Title and the command that made the bundle, so it can be made again."""
    return [
        f"# maskgate {meta.kind} bundle",
        "",
        f"Created {meta.created} with `{shlex.join(['maskgate', *sys.argv[1:]])}`.",
        "",
    ]


def files_table(models: dict[str, bytes]) -> list[str]:
    return [
        "| file | size |",
        "| --- | --- |",
        *[f"| {name} | {len(data) / 1e6:.2f} MB |" for name, data in models.items()],
        "",
    ]


def machine(meta: BundleMetadata) -> str:
    """Where the latencies were measured: they mean little without the CPU and the runtime."""
    runtime = meta.libraries.get("runtime", "unknown runtime")
    return f"{sysinfo.cpu_model()}, {os.cpu_count()} cores, {runtime}."


def latency_section(
    title: str, meta: BundleMetadata, columns: Sequence[str], rows: Sequence[Sequence[str]]
) -> list[str]:
    """A latency section: heading, the machine, and a table of the given rows."""
    return [f"## {title}", "", machine(meta), "", table(columns, rows), ""]


def table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def change(drop: float, unit: str = "pp", digits: int = 2) -> str:
    """A float-to-int8 loss as "drop 2.27 pp" or, when int8 did better, "gain 2.27 pp": a signed
    "drop -2.27" reads as a loss to most people."""
    word = "gain" if round(drop, digits) < 0 else "drop"
    return f"{word} {abs(drop):.{digits}f}" + (f" {unit}" if unit else "")


def render(lines: Sequence[str]) -> str:
    """The report's text, ending in exactly one newline."""
    return "\n".join(lines).rstrip("\n") + "\n"
