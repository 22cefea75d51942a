"""The web benchmark: does serving the live view slow the gate? (a benchmark, not a test)

Runs ``maskgate run`` on the demo footage, unpaced (frames as fast as the gate takes them), with the web
server off, on with no viewer, and on with 1 and 3 clients pulling ``/stream.mjpg`` and one following
``/api/events``; rounds interleaved so the machine's noise falls on every setting alike. Each run's
frame rate is read from the gate's own closing statistics line; its peak RSS from the kernel.

    make benchmark-web     # = python tests/bench_web.py --scenes DEMO_SCENES --json runs/web.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from broker import free_port  # a helper of the tests, beside this script

REPO = Path(__file__).resolve().parents[1]
STATS = re.compile(r"stats: (\d+) frames, ([\d.]+) fps")


def viewer(url: str, stop: threading.Event, counts: list[int]) -> None:
    """Read a stream until told to stop, counting bytes; reconnect while the server starts."""
    while not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                while not stop.is_set():
                    chunk = r.read(65536)
                    if not chunk:
                        break
                    counts[0] += len(chunk)
        except OSError:
            time.sleep(0.05)


def one_run(scenes: str, frames_per_image: int, web: bool, viewers: int) -> dict:
    port = free_port()
    demo = str(REPO / "systemd" / "demo.toml")
    args = [sys.executable, "-m", "maskgate.edge.cli", "run", "--config", demo, "--source", scenes,
            "--set", "source.pace=false", "--set", f"source.frames_per_image={frames_per_image}",
            "--set", "service.stats_every_s=3600"]  # fmt: skip
    if web:
        args += ["--set", "web.enabled=true", "--set", f"web.listen=127.0.0.1:{port}"]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, cwd=REPO)
    stop, counts, threads = threading.Event(), [], []
    for i in range(viewers + (1 if viewers else 0)):
        path = "/api/events" if i == viewers else "/stream.mjpg"
        counts.append([0])
        t = threading.Thread(
            target=viewer, args=(f"http://127.0.0.1:{port}{path}", stop, counts[-1]), daemon=True
        )
        t.start()
        threads.append(t)
    _, status, usage = os.wait4(proc.pid, 0)
    stop.set()
    err = proc.stderr.read()
    stats = STATS.findall(err)
    if os.waitstatus_to_exitcode(status) != 0 or not stats:
        raise SystemExit(f"the gate failed (web={web}, viewers={viewers}):\n{err[-2000:]}")
    frames, fps = stats[-1]
    return {"web": web, "viewers": viewers, "frames": int(frames), "fps": float(fps),
            "peak_rss_mb": usage.ru_maxrss / 1024, "stream_bytes": sum(c[0] for c in counts)}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", required=True, help="image glob standing in for the camera")
    p.add_argument("--frames-per-image", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    settings = [(False, 0), (True, 0), (True, 1), (True, 3)]
    runs = [one_run(a.scenes, a.frames_per_image, web, n) for _ in range(a.rounds) for web, n in settings]
    summary = {}
    for web, n in settings:
        mine = [r for r in runs if r["web"] == web and r["viewers"] == n]
        key = "server off" if not web else f"server on, {n} viewer(s)"
        summary[key] = {
            "fps_median": statistics.median(r["fps"] for r in mine),
            "fps_runs": [r["fps"] for r in mine],
            "peak_rss_mb_median": round(statistics.median(r["peak_rss_mb"] for r in mine), 1),
            "frames": mine[0]["frames"],
            "stream_mb_median": round(statistics.median(r["stream_bytes"] for r in mine) / 1e6, 2),
        }
    base = summary["server off"]["fps_median"]
    for key, s in summary.items():
        share = s["fps_median"] / base
        rss, mb = s["peak_rss_mb_median"], s["stream_mb_median"]
        print(f"{key:26s} gate {s['fps_median']:7.1f} fps ({share:5.1%} of off), "
              f"peak RSS {rss:6.1f} MB, streamed {mb:.2f} MB")  # fmt: skip
    if a.json:
        a.json.write_text(json.dumps({"runs": runs, "summary": summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
