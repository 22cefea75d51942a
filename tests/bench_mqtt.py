"""The fleet benchmark: many gates on one broker (a benchmark, not a test).

Starts one mosquitto on 127.0.0.1, one subscriber to ``maskgate/#``, and N ``maskgate run`` processes on
the demo footage (looping, paced at its 10 fps, mock pins, one LiteRT thread each): every other gate
publishes to the broker, the others have MQTT off, so the CPU cost of MQTT per gate is read in the same
run, on interleaved gates, from each gate's CPU time in /proc (its relay guard included) over a fixed
window after all are ready. Then the broker is stopped and started again: each gate's reconnect time is
the wall-clock time of the first state it publishes on the new connection less the moment the broker
listened again. At the end every gate is stopped with SIGTERM; its last stats message says how many
events it published and dropped, which the subscriber's count is held against.

Reports messages published / received / dropped, the event latency from decision (the event's ``time``)
to the subscriber, p50 and p95, the CPU per gate with MQTT on and off (medians) and the reconnect time.

    make benchmark-mqtt    # = python tests/bench_mqtt.py --scenes DEMO_SCENES --json runs/mqtt.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from broker import Mosquitto, Subscriber

REPO = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")
STATS = re.compile(r"stats: (\d+) frames, ([\d.]+) fps")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process and its children that are still running (the guard)."""
    total = 0.0
    for p in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
    return total


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found + [g for c in found for g in _children(c)]


def start_gate(i: int, args, port: int, mqtt: bool, tmp: Path) -> dict:
    name = f"gate-{i:02d}"
    sock_path = tmp / f"{name}.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(1)
    cmd = [sys.executable, "-m", "maskgate.edge.cli", "run", "--config", str(REPO / "systemd" / "demo.toml"),
           "--source", args.scenes, "--set", "source.loop=true", "--set", f"service.gate_name={name}",
           "--set", "classifier.threads=1", "--set", "detector.threads=1",
           "--set", "service.stats_every_s=3600"]  # fmt: skip
    if mqtt:
        cmd += ["--set", "mqtt.enabled=true", "--set", "mqtt.host=127.0.0.1", "--set", f"mqtt.port={port}",
                "--set", f"mqtt.stats_every_s={args.stats_every}"]  # fmt: skip
    log = open(tmp / f"{name}.log", "w")  # noqa: SIM115 - closed when the gate is stopped
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"} | {"NOTIFY_SOCKET": str(sock_path)}
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=log, stdout=subprocess.DEVNULL, env=env)
    return {"name": name, "mqtt": mqtt, "proc": proc, "sock": sock, "log": log, "path": tmp / f"{name}.log"}


def wait_ready(gates: list[dict], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for g in gates:
        while True:
            if g["proc"].poll() is not None:
                raise SystemExit(f"{g['name']} ended at start:\n{g['path'].read_text()[-2000:]}")
            try:
                if g["sock"].recv(200).decode().startswith("READY=1"):
                    g["cpu_ready"] = cpu_seconds(g["proc"].pid)  # the models are loaded: not counted
                    break
            except TimeoutError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{g['name']} not ready within {timeout:g} s")


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", required=True, help="the demo footage: an image glob, folder or video")
    p.add_argument("--gates", type=int, default=20, help="gate processes (half with MQTT on)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of the measured window")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds after all are ready, not measured")
    p.add_argument("--down", type=float, default=3.0, help="seconds the broker is away in the restart")
    p.add_argument("--stats-every", type=float, default=10.0, help="mqtt.stats_every_s of the gates")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
    # a persistent broker and session: what the gates publish while the subscriber is reconnecting after
    # the broker's restart is kept for it, so the counts compare what was sent with what arrived
    broker = Mosquitto(tmp / "broker", extra="max_queued_messages 100000", persistent=True).start()
    sub = Subscriber(
        broker.port, ("maskgate/#", "homeassistant/#"), client_id="bench-subscriber", clean_session=False
    )
    gates = [start_gate(i, args, broker.port, i % 2 == 0, tmp) for i in range(args.gates)]
    try:
        t_start = time.monotonic()
        wait_ready(gates, timeout=300)
        print(f"{len(gates)} gates ready in {time.monotonic() - t_start:.1f} s", file=sys.stderr)
        time.sleep(args.warmup)
        wall0, cpu0 = time.monotonic(), {g["name"]: cpu_seconds(g["proc"].pid) for g in gates}
        broker0, window_from = cpu_seconds(broker.proc.pid), time.time()
        time.sleep(args.duration)
        wall1, cpu1 = time.monotonic(), {g["name"]: cpu_seconds(g["proc"].pid) for g in gates}
        broker1, window_to = cpu_seconds(broker.proc.pid), time.time()
        cpu = {g["name"]: 100 * (cpu1[g["name"]] - cpu0[g["name"]]) / (wall1 - wall0) for g in gates}
        broker_cpu = 100 * (broker1 - broker0) / (wall1 - wall0)

        # the broker goes away and comes back on the same port
        mqtt_gates = [g["name"] for g in gates if g["mqtt"]]
        broker.stop()
        time.sleep(args.down)
        broker.start()
        back_at = time.time()
        reconnect = {}
        deadline = time.monotonic() + 60
        while len(reconnect) < len(mqtt_gates) and time.monotonic() < deadline:
            for m in list(sub.messages):
                gate = m.topic.split("/")[1]
                if m.topic.endswith("/state") and gate not in reconnect:
                    t = m.json()["time"]
                    if t >= back_at - 0.5:  # published on the new connection (0.5 s: the broker's start)
                        reconnect[gate] = max(0.0, t - back_at)
            time.sleep(0.1)
        time.sleep(2)  # the events held during the outage arrive
    finally:
        for g in gates:
            g["cpu_end"] = cpu_seconds(g["proc"].pid)
            g["proc"].send_signal(signal.SIGTERM)
        for g in gates:
            try:
                g["proc"].wait(timeout=30)
            except subprocess.TimeoutExpired:
                g["proc"].kill()
            g["log"].close()
            g["sock"].close()
    time.sleep(1)
    sub.close()
    broker.stop()

    # what the gates say they published, against what arrived
    last_stats, events, seen = {}, {}, {}
    latencies = []
    for m in sub.messages:
        if m.topic.startswith("homeassistant/"):
            continue
        gate, leaf = m.topic.split("/")[1], m.topic.split("/")[-1]
        if leaf == "stats":
            last_stats[gate] = m.json()
        elif leaf == "events":
            e = m.json()
            events[gate] = events.get(gate, 0) + 1
            seen.setdefault(gate, set()).add(e["id"])
            if window_from <= e["time"] <= window_to:
                latencies.append(1000 * (m.received - e["time"]))
    published = sum(s["mqtt"]["published"] for s in last_stats.values())
    events_published = sum(s["mqtt"]["events"] for s in last_stats.values())
    dropped = sum(s["mqtt"]["dropped"] for s in last_stats.values())
    received_events = sum(len(ids) for ids in seen.values())
    on = [cpu[g["name"]] for g in gates if g["mqtt"]]
    off = [cpu[g["name"]] for g in gates if not g["mqtt"]]
    # CPU per frame from READY to SIGTERM: a gate the busy machine slowed down did less work, not cheaper
    for g in gates:
        runs = STATS.findall(g["path"].read_text())
        g["frames"], g["fps"] = (int(runs[-1][0]), float(runs[-1][1])) if runs else (0, 0.0)
        g["cpu_ms_per_frame"] = 1000 * (g["cpu_end"] - g["cpu_ready"]) / max(g["frames"], 1)

    def median(key: str, mqtt: bool) -> float:
        return round(statistics.median(g[key] for g in gates if g["mqtt"] == mqtt), 2)

    figures = {
        "gates": len(gates),
        "gates_with_mqtt": len(mqtt_gates),
        "duration_s": args.duration,
        # as published (not the retained copies a (re)subscription is handed)
        "messages_received": sum(not m.retain for m in sub.messages),
        "messages_published": published,
        "events_published": events_published,
        "events_received_distinct": received_events,
        "events_received_with_duplicates": sum(events.values()),
        "events_dropped": dropped,
        "gates_reporting_stats": len(last_stats),
        "event_latency_ms": {
            "n": len(latencies),
            "p50": round(percentile(latencies, 0.5), 2) if latencies else None,
            "p95": round(percentile(latencies, 0.95), 2) if latencies else None,
        },
        "cpu_percent_per_gate": {
            "mqtt_on_median": round(statistics.median(on), 2) if on else None,
            "mqtt_off_median": round(statistics.median(off), 2) if off else None,
            "mqtt_on": [round(c, 2) for c in on],
            "mqtt_off": [round(c, 2) for c in off],
        },
        "cpu_ms_per_frame": {
            "mqtt_on_median": median("cpu_ms_per_frame", True),
            "mqtt_off_median": median("cpu_ms_per_frame", False),
        },  # fmt: skip
        "fps_per_gate": {"mqtt_on_median": median("fps", True), "mqtt_off_median": median("fps", False)},
        "broker_cpu_percent": round(broker_cpu, 2),
        "broker_down_s": args.down,
        "reconnect_s": {
            "gates_back": len(reconnect),
            "median": round(statistics.median(reconnect.values()), 2) if reconnect else None,
            "max": round(max(reconnect.values()), 2) if reconnect else None,
        },
        "machine": {"cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg()},
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
