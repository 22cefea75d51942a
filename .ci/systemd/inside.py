#!/usr/bin/python3
"""The service checked from inside a booted container (.ci/check-systemd runs this as a oneshot unit).

Installs maskgate with systemd/install.sh as a user on a Pi would, points it at looping footage with
simulated pins and the web server on, then checks what only a real systemd can show: READY before
"active", the gate deciding inside its sandbox, the watchdog killing a frozen gate while the relay guard
ends the pulse on its own clock, a prompt stop with the outputs driven off, no restart loop after a
configuration error, restarts within the start limit after crashes, and the network sandbox. Results go
to /results/report.json; then the container powers off. Standard library only: this runs on the
container's own Python, outside maskgate's venv.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

UNIT = "maskgate.service"
SRC = Path("/opt/maskgate-src")
FOOTAGE = Path("/opt/maskgate-check/footage")
CONF = Path("/etc/maskgate/config.toml")
DROPINS = Path("/etc/systemd/system/maskgate.service.d")
MASKGATE = "/opt/maskgate/venv/bin/maskgate"
RESULTS = Path("/results")
PULSE_S = 3.0
CONFIG = f"""# the check's configuration: footage standing in for a camera, simulated pins, the web server on
[source]
uri = "{FOOTAGE}"
loop = true
fps = 10.0
frames_per_image = 10

[decision]
min_face_px = 24
pulse_s = {PULSE_S}
cooldown_s = 0.5

[outputs]
pin_factory = "mock"

[web]
enabled = true
listen = "127.0.0.1:8080"
"""

report: dict = {"checks": [], "figures": {}}


def log(text: str) -> None:
    print(f"check: {text}", flush=True)


def check(name: str, ok: bool, detail: str = "") -> bool:
    report["checks"].append({"name": name, "ok": bool(ok), "detail": detail})
    log(f"{'ok' if ok else 'FAIL'} {name} {detail}")
    return bool(ok)


def figure(name: str, value) -> None:
    report["figures"][name] = value
    log(f"figure {name} = {value}")


def run(*args: str, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)


def show(*props: str) -> dict[str, str]:
    out = run("systemctl", "show", UNIT, *(f"--property={p}" for p in props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_for(predicate, timeout: float, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return None


def cursor() -> str:
    """The journal's position now: later reads see only what comes after."""
    out = run("journalctl", "-n", "0", "--show-cursor", "--quiet").stdout
    m = re.search(r"cursor: (\S+)", out)
    return m.group(1) if m else ""


def journal(after: str) -> list[dict]:
    """The unit's journal entries (its own lines and systemd's about it) after ``after``."""
    args = ["journalctl", "-u", UNIT, "-o", "json", "--no-pager"] + (
        [f"--after-cursor={after}"] if after else []
    )
    entries = []
    for line in run(*args).stdout.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        msg = e.get("MESSAGE")
        if isinstance(msg, list):  # non-UTF-8 bytes
            msg = bytes(msg).decode(errors="replace")
        entries.append({"t": int(e["__MONOTONIC_TIMESTAMP"]) / 1e6, "msg": msg or ""})
    return entries


def seen(after: str, pattern: str) -> dict | None:
    return next((e for e in journal(after) if re.search(pattern, e["msg"])), None)


def active_pid() -> int | None:
    s = show("ActiveState", "SubState", "MainPID")
    return int(s["MainPID"]) if s.get("ActiveState") == "active" and s.get("MainPID", "0") != "0" else None


def cgroup_dir() -> Path:
    cg = show("ControlGroup")["ControlGroup"]
    for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        p = Path(root + cg)
        if (p / "cgroup.procs").exists() and Path(root, "cgroup.controllers").exists():
            return p
    return Path("/sys/fs/cgroup/unified" + cg)


def pids_of_unit() -> list[int]:
    try:
        return [int(x) for x in (cgroup_dir() / "cgroup.procs").read_text().split()]
    except OSError:
        return []


# --- the steps ----------------------------------------------------------------------------------


def install() -> bool:
    t = time.monotonic()
    r = run("bash", str(SRC / "systemd" / "install.sh"), "--mirror", "/mirror", "--no-start", timeout=1200)
    figure("install_s", round(time.monotonic() - t, 1))
    if not check(
        "install.sh installs user, venv, config, verified models and unit",
        r.returncode == 0,
        r.stderr.strip().splitlines()[-1] if r.returncode else "",
    ):
        log(r.stdout[-3000:] + r.stderr[-3000:])
        return False
    groups = run("id", "-nG", "maskgate").stdout.split()
    check(
        "the service user is in the gpio and video groups", {"gpio", "video"} <= set(groups), " ".join(groups)
    )
    CONF.write_text(CONFIG)
    os.chown(CONF, 0, int(run("id", "-g", "maskgate").stdout))
    CONF.chmod(0o640)
    r = run(MASKGATE, "sandbox", "--config", str(CONF), "--write", str(DROPINS))
    check(
        "maskgate sandbox writes the network drop-in for this configuration",
        r.returncode == 0,
        r.stderr.strip(),
    )
    run("systemctl", "daemon-reload")
    return True


def start_until_ready() -> None:
    """Start without waiting, and watch the unit: 'activating' while the models load, 'active' only
    once the gate sent READY=1 (a Type=notify unit), with the source in its status text."""
    t0 = time.monotonic()
    run("systemctl", "start", "--no-block", UNIT)
    states = []
    while time.monotonic() - t0 < 120:
        s = show("ActiveState", "SubState", "StatusText")
        if not states or states[-1] != s["ActiveState"]:
            states.append(s["ActiveState"])
        if s["ActiveState"] in ("active", "failed"):
            break
        time.sleep(0.02)
    figure("ready_s", round(time.monotonic() - t0, 2))
    check(
        "the unit is 'activating' until READY=1, then 'active (running)'",
        states[-1] == "active" and "activating" in states and show("SubState")["SubState"] == "running",
        " -> ".join(states),
    )
    status = show("StatusText")["StatusText"]
    check("its status text names the source", str(FOOTAGE) in status, repr(status))


def decides(after: str) -> None:
    e = wait_for(lambda: seen(after, r"^(unlock|deny) face"), 60, 0.5)
    check(
        "the gate decides inside the sandbox (unlock/deny in the journal)",
        e is not None,
        e["msg"][:80] if e else "no decision in 60 s",
    )
    ok = wait_for(lambda: _get("http://127.0.0.1:8080/healthz") == 200, 20, 0.5)
    check("the web server answers on web.listen (/healthz 200)", bool(ok))


def _get(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status
    except OSError as e:
        return getattr(e, "code", None)


def network_sandbox() -> None:
    """A probe process moved into the service's cgroup is under the unit's IP and bind rules: it may
    reach the web server on localhost, not another address, and may bind no port of its own."""
    own = _own_address()
    probe = subprocess.Popen(
        [sys.executable, "-c", PROBE, own], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        (cgroup_dir() / "cgroup.procs").write_text(str(probe.pid))
        out, _ = probe.communicate("go\n", timeout=30)
    except OSError as e:
        probe.kill()
        check("a process in the service's cgroup is under its network rules", False, f"cannot move it: {e}")
        return
    result = json.loads(out or "{}")
    pid1 = run("journalctl", "-b", "_PID=1", "--no-pager", "-o", "cat").stdout
    notes = sorted(
        {line for line in pid1.splitlines() if re.search(r"bpf|firewall|socket.?bind", line, re.I)}
    )
    report["systemd_bpf_notes"] = notes
    bpf_framework = "+BPF_FRAMEWORK" in run("systemctl", "--version").stdout
    check(
        "the sandbox lets the configured listen address through (localhost:8080)",
        result.get("localhost") == "ok",
        str(result.get("localhost")),
    )
    check(
        f"and no other address ({own})",
        result.get("other") == "blocked",
        str(result.get("other")),
    )
    if bpf_framework:
        check(
            "and no bind but the web server's port (tcp 8081 refused)",
            result.get("bind") == "blocked",
            str(result.get("bind")),
        )
    else:  # SocketBindAllow/Deny need systemd's BPF framework, which Debian 12's build lacks
        report["not_enforceable_here"] = [
            "SocketBindAllow/SocketBindDeny: systemd built without BPF_FRAMEWORK"
        ]
        log(
            "SocketBind* not enforced by this systemd (-BPF_FRAMEWORK); bind probe gave "
            + str(result.get("bind"))
        )


PROBE = r"""
import errno, json, socket, sys
sys.stdin.readline()  # moved into the cgroup by now
def attempt(fn):
    s = socket.socket(); s.settimeout(3)
    try:
        fn(s); return "ok"
    except socket.timeout:
        return "blocked"  # the unit's IP filter drops the packets: nothing comes back
    except OSError as e:
        return "blocked" if e.errno == errno.EPERM else errno.errorcode.get(e.errno, str(e))
    finally:
        s.close()
print(json.dumps({"localhost": attempt(lambda s: s.connect(("127.0.0.1", 8080))),
                  "other": attempt(lambda s: s.connect((sys.argv[1], 8080))),
                  "bind": attempt(lambda s: s.bind(("0.0.0.0", 8081)))}))
"""


def _own_address() -> str:
    """An address of this machine that is not loopback (the container shares the host's network)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))
        return s.getsockname()[0]


def filesystem_sandbox() -> None:
    """Inside the running service's own mount namespace (nsenter, as root, so only the mounts can say
    no): the system is read-only, home folders are empty, and only the unit's state and cache are
    writable."""
    pid = active_pid()

    def writable(path: str) -> bool:
        r = run("nsenter", f"--target={pid}", "--mount", "--", "touch", path)
        if r.returncode == 0:
            run("nsenter", f"--target={pid}", "--mount", "--", "rm", "-f", path)
        return r.returncode == 0

    system = {p: writable(p) for p in ("/etc/maskgate/probe", "/usr/probe", "/opt/maskgate/venv/probe")}
    own = {p: writable(p) for p in ("/var/lib/maskgate/probe", "/var/cache/maskgate/probe")}
    check(
        "in the service's namespace the system is read-only (ProtectSystem=strict)",
        not any(system.values()),
        ", ".join(p for p, w in system.items() if w),
    )
    check(
        "and its state and cache folders are writable",
        all(own.values()),
        ", ".join(p for p, w in own.items() if not w),
    )
    home = run("nsenter", f"--target={pid}", "--mount", "--", "ls", "-A", "/root").stdout.split()
    check("and home folders are empty (ProtectHome=yes)", home == [] and bool(os.listdir("/root")), str(home))


def mqtt() -> None:
    """The gate reconfigured as a site would: MQTT on, to a broker on another address of the machine
    (not loopback), the drop-in written again; the broker's address is let through and nothing more."""
    own = _own_address()
    port = _free_port()
    conf = Path("/run/check-mosquitto.conf")
    conf.write_text(f"listener {port} {own}\nallow_anonymous true\npersistence false\n")
    global BROKER
    BROKER = subprocess.Popen(
        ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    run("systemctl", "stop", UNIT, timeout=60)
    CONF.write_text(CONF.read_text() + f'\n[mqtt]\nenabled = true\nhost = "{own}"\nport = {port}\n')
    run(MASKGATE, "sandbox", "--config", str(CONF), "--write", str(DROPINS))
    run("systemctl", "daemon-reload")
    allow = show("IPAddressAllow")["IPAddressAllow"].split()
    check(
        "the drop-in lets through localhost and the broker, nothing else",
        sorted(allow) == sorted(["127.0.0.0/8", "::1/128", f"{own}/32"]),
        " ".join(allow),
    )
    after = cursor()
    run("systemctl", "start", UNIT, timeout=120)
    online = run(
        "mosquitto_sub", "-h", own, "-p", str(port), "-t", "maskgate/+/available", "-C", "1", "-W", "30"
    )
    check(
        f"the gate reaches the broker at {own} through the sandbox ('online' retained)",
        online.stdout.strip() == "online",
        online.stdout.strip() or online.stderr.strip(),
    )
    event = run("mosquitto_sub", "-h", own, "-p", str(port), "-t", "maskgate/+/events", "-C", "1", "-W", "30")
    try:
        kind = json.loads(event.stdout)["kind"]
    except (ValueError, KeyError, TypeError):
        kind = None
    check("and publishes its decisions there", kind is not None, str(kind))
    check("the web server still answers", _get("http://127.0.0.1:8080/healthz") == 200)
    report["mqtt"] = {"host": own, "port": port, "after": after}


def offline_after_stop() -> None:
    """After `systemctl stop`, the availability topic says 'offline' (retained)."""
    m = report.get("mqtt")
    if not m:
        return
    r = run(
        "mosquitto_sub",
        "-h",
        m["host"],
        "-p",
        str(m["port"]),
        "-t",
        "maskgate/+/available",
        "-C",
        "1",
        "-W",
        "10",
    )
    check("after systemctl stop the broker holds 'offline'", r.stdout.strip() == "offline", r.stdout.strip())


BROKER: subprocess.Popen | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def watchdog() -> None:
    """Freeze the gate (SIGSTOP) just after it opened the door: the guard ends the pulse on its own
    clock, the watchdog kills the gate after WatchdogSec, ExecStopPost drives the outputs off, and
    systemd starts it again."""
    after = cursor()
    restarts = int(show("NRestarts")["NRestarts"])
    on = wait_for(lambda: seen(after, r"^guard: relay on"), 90, 0.02)
    if not check("the door opens (a relay pulse) before the freeze", on is not None):
        return
    pid = active_pid()
    t_stop = time.monotonic()
    os.kill(pid, 19)  # SIGSTOP
    back = wait_for(lambda: (p := active_pid()) and p != pid and p, 120, 0.05)
    figure("sigstop_to_active_again_s", round(time.monotonic() - t_stop, 1) if back else None)
    entries = journal(after)
    off = next((e for e in entries if e["t"] > on["t"] and e["msg"].startswith("guard: relay off")), None)
    relay_on = round(off["t"] - on["t"], 2) if off else None
    figure("relay_on_during_freeze_s", relay_on)
    check(
        f"the guard ends the pulse on time though the gate is frozen (<= {PULSE_S:g} s + 0.5)",
        relay_on is not None and relay_on <= PULSE_S + 0.5,
        off["msg"] if off else "no relay off",
    )
    wd = next((e for e in entries if "atchdog timeout" in e["msg"]), None)
    check("systemd's watchdog fires on the frozen gate", wd is not None, wd["msg"] if wd else "")
    if wd:
        figure("sigstop_to_watchdog_s", round(wd["t"] - t_stop, 1))  # the journal's clock is CLOCK_MONOTONIC
    post = next(
        (e for e in entries if e["msg"].startswith("outputs off:") and (not wd or e["t"] > wd["t"])), None
    )
    check("ExecStopPost drives the outputs off after the kill", post is not None, post["msg"] if post else "")
    check(
        "and systemd starts the gate again",
        bool(back) and int(show("NRestarts")["NRestarts"]) == restarts + 1,
    )


def stop() -> None:
    after = cursor()
    t = time.monotonic()
    r = run("systemctl", "stop", UNIT, timeout=60)
    took = round(time.monotonic() - t, 2)
    figure("stop_s", took)
    check(
        "systemctl stop ends the gate within TimeoutStopSec (10 s)",
        r.returncode == 0 and took < 10,
        f"{took} s",
    )
    check("nothing of the unit is left running", not pids_of_unit(), str(pids_of_unit()))
    check(
        "the outputs are driven off on stop", seen(after, r"^(outputs off|stopped; outputs off)") is not None
    )


def config_error() -> None:
    """Exit status 2 (a user error) leaves the unit failed, not restarting."""
    good = CONF.read_text()
    CONF.write_text(good.replace("[decision]", "[decision]\npulse_sec = 3"))
    run("systemctl", "start", UNIT, timeout=60)
    time.sleep(5)  # longer than RestartSec=2: a restart would have happened
    s = show("ActiveState", "Result", "ExecMainStatus", "NRestarts")
    check(
        "a configuration error (exit 2) leaves the unit failed without a restart",
        s["ActiveState"] == "failed" and s["ExecMainStatus"] == "2" and s["NRestarts"] == "0",
        str(s),
    )
    CONF.write_text(good)
    run("systemctl", "reset-failed", UNIT)


def crashes() -> None:
    """Kill the relay guard: the gate exits 1 (a fault) and systemd restarts it, until the unit's start
    limit (StartLimitBurst in StartLimitIntervalSec) says enough."""
    after = cursor()
    run("systemctl", "start", UNIT, timeout=120)
    limits = show("StartLimitBurst", "StartLimitIntervalUSec")
    burst, interval = int(limits["StartLimitBurst"]), limits["StartLimitIntervalUSec"]
    starts = 1

    def up_or_given_up() -> int | None:
        return active_pid() or (-1 if show("ActiveState")["ActiveState"] == "failed" else None)

    while starts <= 2 * burst:
        pid = wait_for(up_or_given_up, 60, 0.1)
        guard = _guard_of(pid) if pid and pid > 0 else None
        if guard is None:
            break
        os.kill(guard, 9)
        wait_for(lambda old=pid: active_pid() != old, 30, 0.05)
        starts += 1
    entries = [e["msg"] for e in journal(after)]
    crashed = [m for m in entries if "Main process exited" in m]
    figure("starts_before_the_limit", starts - 1)
    check(
        "a crash (exit 1) is restarted",
        bool(crashed)
        and all("status=1/FAILURE" in m for m in crashed)
        and any("Scheduled restart job" in m for m in entries),
        crashed[0] if crashed else "no exit seen",
    )
    check(
        f"until the start limit ({burst} starts in {interval}), which leaves the unit failed",
        show("ActiveState")["ActiveState"] == "failed"
        and starts - 1 == burst
        and any("Start request repeated too quickly" in m for m in entries),
        f"{starts - 1} starts",
    )
    run("systemctl", "reset-failed", UNIT)


def _guard_of(pid: int) -> int | None:
    def find():
        for p in pids_of_unit():
            try:
                cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if p != pid and "guard" in cmd:
                return p
        return None

    return wait_for(find, 10, 0.1)


def security() -> None:
    r = run("systemd-analyze", "security", "--no-pager", UNIT)
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout)
    score = float(m.group(1)) if m else None
    figure("exposure", score)
    check(
        "systemd-analyze security on the installed unit (with its drop-in) is <= 2.0",
        score is not None and score <= 2.0,
        str(score),
    )


def nothing_written_outside(stamp: Path) -> None:
    """Every file the service user wrote since the start is under the unit's own writable folders."""
    allowed = (
        "/var/lib/maskgate",
        "/var/cache/maskgate",
        "/tmp/",
        "/var/tmp/",
        "/proc",
        "/sys",
        "/dev",
        "/run",
    )
    r = run("find", "/", "-xdev", "-newer", str(stamp), "-user", "maskgate", "-not", "-type", "d")
    outside = [p for p in r.stdout.splitlines() if not p.startswith(allowed)]
    check(
        "the service wrote nothing outside its state and cache folders", not outside, ", ".join(outside[:5])
    )


def main() -> int:
    stamp = Path("/run/check-start")
    stamp.touch()
    try:
        if install():
            after = cursor()
            start_until_ready()
            decides(after)
            network_sandbox()
            filesystem_sandbox()
            mqtt()
            security()
            watchdog()
            stop()
            offline_after_stop()
            config_error()
            crashes()
            nothing_written_outside(stamp)
    except Exception as e:  # a check that cannot run is a failed check, with the reason
        check("the check ran to its end", False, f"{type(e).__name__}: {e}")
    finally:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "report.json").write_text(json.dumps(report, indent=1))
        (RESULTS / "journal.txt").write_text(
            run("journalctl", "-u", UNIT, "--no-pager", "-o", "short-monotonic").stdout
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
