"""The service unit, checked by systemd's own tools, and the installer's plan."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, maskgate

UNIT = REPO / "systemd" / "maskgate.service"
INSTALLED_BIN = "/opt/maskgate/venv/bin/maskgate"
HERE_BIN = str(Path(sys.executable).with_name("maskgate"))


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing; .ci/run installs it")
        pytest.skip("systemd-analyze not installed (Debian package systemd)")
    return path


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_passes_systemd_analyze_verify(tmp_path):
    # verify checks that each Exec* binary exists: point them at this environment's maskgate
    unit = tmp_path / "maskgate.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED_BIN, HERE_BIN))
    r = subprocess.run([systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


def exposure(unit: Path) -> float:
    r = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for maskgate.service: ([\d.]+) (\w+)", r.stdout + r.stderr)
    assert m, r.stdout[-500:]
    return float(m.group(1))


def test_unit_exposure_is_two_or_better():
    assert exposure(UNIT) <= 2.0


SANDBOXES = {
    "no network": [],
    "web on loopback": ["--set", "web.enabled=true"],
    "web on the LAN": ["--set", "web.enabled=true", "--set", "web.listen=0.0.0.0:8080",
                       "--set", "web.token=a-token-of-sufficient-length"],
    "rtsp camera": ["--set", "source.uri=rtsp://192.168.1.20/live"],
    "mqtt broker": ["--set", "mqtt.enabled=true", "--set", "mqtt.host=10.9.8.7"],
}  # fmt: skip


@pytest.mark.parametrize("name", SANDBOXES)
def test_the_network_dropin_is_valid_and_keeps_exposure_at_two_or_better(tmp_path, name):
    """The unit with `maskgate sandbox`'s drop-in after it, as systemd reads them (drop-ins come last)."""
    r = maskgate("sandbox", "--config", str(REPO / "systemd" / "config.toml"), *SANDBOXES[name])
    assert r.returncode == 0, r.stderr
    unit = tmp_path / "maskgate.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED_BIN, HERE_BIN) + "\n" + r.stdout)
    v = subprocess.run([systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert v.returncode == 0 and v.stderr.strip() == "", v.stderr
    assert exposure(unit) <= 2.0


def test_sandbox_writes_its_dropin_atomically_and_refuses_a_missing_folder(tmp_path):
    r = maskgate("sandbox", "--write", str(tmp_path))
    assert r.returncode == 0 and (tmp_path / "network.conf").read_text().startswith("# Written by")
    r = maskgate("sandbox", "--write", str(tmp_path / "nope"))
    assert r.returncode == 2 and "not a folder" in r.stderr and "Traceback" not in r.stderr


def test_unit_keeps_camera_and_gpio_reachable_and_is_a_watched_notify_service():
    s = unit_settings()
    assert s["Type"] == ["notify"] and s["Restart"] == ["on-failure"] and float(s["WatchdogSec"][0]) > 0
    assert set(s["SupplementaryGroups"][0].split()) == {"gpio", "video"}
    allowed = {d.split()[0] for d in s["DeviceAllow"]}
    assert {"char-gpiochip", "char-video4linux", "char-media", "char-dma_heap"} <= allowed
    assert "outputs off" in s["ExecStopPost"][0]  # the relay is driven off however the process ended
    for key in ("ProtectSystem", "ProtectHome", "NoNewPrivileges", "PrivateTmp"):
        assert s[key][0] in ("strict", "yes"), key


def test_unit_commands_are_valid_maskgate_command_lines(tmp_path):
    config = REPO / "systemd" / "config.toml"
    for key in ("ExecStart", "ExecStopPost"):
        argv = shlex.split(unit_settings()[key][0].replace("/etc/maskgate/config.toml", str(config)))
        assert argv[0] == INSTALLED_BIN
        from maskgate.edge.cli import build_parser

        args = build_parser().parse_args(argv[1:])
        assert args.config == config
    r = maskgate("run", "--config", str(config), "--validate-config")
    assert r.returncode == 0 and "valid" in r.stdout, r.stderr


def test_installer_plans_user_venv_config_models_and_unit():
    r = subprocess.run(
        ["bash", str(REPO / "systemd" / "install.sh"), "--dry-run", "--no-start"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    steps = r.stdout
    for expected in (
        "useradd --system",
        "--groups gpio,video maskgate",
        "venv --system-site-packages",
        "/etc/maskgate/config.toml",
        "models fetch --for edge",
        "maskgate.service",
        "sandbox --config /etc/maskgate/config.toml --write /etc/systemd/system/maskgate.service.d",
        "systemctl enable",
    ):
        assert expected in steps, expected
    bad = subprocess.run(
        ["bash", str(REPO / "systemd" / "install.sh"), "--bogus"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "unknown option --bogus" in bad.stderr


def _installer(*args: str, path_first: Path | None = None) -> subprocess.CompletedProcess:
    env = os.environ | ({"PATH": f"{path_first}:{os.environ['PATH']}"} if path_first else {})
    script = REPO / "systemd" / "install.sh"
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=60, env=env)


def test_installer_offline_from_a_wheelhouse_plans_no_index_and_no_pip_upgrade(tmp_path):
    r = _installer("--dry-run", "--no-start", "--wheelhouse", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert f"--no-index --find-links {tmp_path} --only-binary=:all:" in r.stdout
    assert "--upgrade pip" not in r.stdout
    assert "models fetch --for edge --config /etc/maskgate/config.toml" in r.stdout


def test_installer_refuses_32_bit_raspberry_pi_os_in_one_line_before_changing_anything(tmp_path):
    """32-bit Raspberry Pi OS on a Pi 4 runs a 64-bit kernel: the interpreter's word size decides."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text("#!/bin/sh\necho 32\n")  # what a 32-bit interpreter prints for its pointer
    (fake / "python3").chmod(0o755)
    r = _installer("--dry-run", "--no-start", path_first=fake)
    assert r.returncode == 2 and r.stdout == "", r.stdout
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "32-bit Python" in r.stderr and "64-bit Raspberry Pi OS Bookworm" in r.stderr


def test_kiosk_user_unit_passes_systemd_analyze_verify(tmp_path):
    """The kiosk's user unit (systemd/kiosk/) is a valid unit; Chromium and curl are what it runs."""
    kiosk = REPO / "systemd" / "kiosk" / "maskgate-kiosk.service"
    text = kiosk.read_text()
    assert "--kiosk" in text and "http://127.0.0.1:8080/kiosk" in text and "/healthz" in text
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (Debian package chromium): verify checks the binaries")
    unit = tmp_path / kiosk.name
    unit.write_text(text.replace("/usr/bin/chromium", shutil.which("chromium")))
    # verified as a system unit: `--user` needs a user manager, which a CI container's root lacks
    r = subprocess.run([systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
