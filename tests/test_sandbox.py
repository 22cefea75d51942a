"""The service's network sandbox as a pure function of the configuration (edge/gate/sandbox.py);
tests/test_systemd.py checks the drop-ins it writes with systemd-analyze on the real unit."""

from __future__ import annotations

from maskgate.edge.gate.config import build
from maskgate.edge.gate.sandbox import network_sandbox

TOKEN = "a-token-of-sufficient-length"


def settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def test_a_gate_that_needs_no_network_gets_no_internet_sockets_and_binds_nothing():
    s = network_sandbox(build({}))
    assert s.allow == ("localhost",) and s.bind_tcp is None and not s.bind_udp and not s.inet
    d = settings(s.dropin())
    assert d["RestrictAddressFamilies"] == ["", "AF_UNIX AF_NETLINK"]  # replaces the unit's list
    assert d["SocketBindDeny"] == ["", "any"] and d["SocketBindAllow"] == [""]
    assert d["IPAddressAllow"] == ["", "localhost"] and d["IPAddressDeny"] == ["any"]


def test_a_loopback_web_server_may_bind_its_port_and_talk_to_localhost_only():
    s = network_sandbox(build({"web": {"enabled": True, "listen": "127.0.0.1:8099"}}))
    assert s.allow == ("localhost",) and s.bind_tcp == 8099 and s.inet and not s.bind_udp
    assert settings(s.dropin())["SocketBindAllow"] == ["", "tcp:8099"]


def test_a_web_server_on_the_network_lets_in_web_allow_and_no_one_else():
    web = {"enabled": True, "listen": "0.0.0.0:8080", "token": TOKEN, "allow": ["192.168.7.0/24"]}
    cfg = build({"web": web})
    s = network_sandbox(cfg)
    assert s.allow == ("localhost", "192.168.7.0/24") and s.bind_tcp == 8080
    assert "IPAddressAllow=localhost 192.168.7.0/24" in s.dropin()


def test_a_stream_camera_adds_its_host_or_else_the_local_networks_and_udp_binds():
    by_ip = network_sandbox(build({"source": {"uri": "rtsp://user:pw@10.1.2.3:554/live"}}))
    assert by_ip.allow == ("localhost", "10.1.2.3") and by_ip.bind_udp and by_ip.inet
    by_name = network_sandbox(build({"source": {"uri": "rtsp://door-cam.local/live"}}))
    assert "192.168.0.0/16" in by_name.allow and "link-local" in by_name.allow
    assert "pw" not in by_ip.dropin()  # a camera's credentials never reach the unit
    local = network_sandbox(build({"source": {"uri": "0"}}))  # a USB camera
    assert not local.inet


def test_an_mqtt_broker_is_let_through_by_address_or_by_what_its_name_resolves_to():
    by_ip = network_sandbox(build({"mqtt": {"enabled": True, "host": "10.9.8.7"}}))
    assert by_ip.allow == ("localhost", "10.9.8.7") and by_ip.inet and by_ip.bind_tcp is None
    local = network_sandbox(build({"mqtt": {"enabled": True, "host": "localhost"}}))
    assert local.allow == ("localhost",) and local.inet  # loopback: already allowed, sockets needed
    unknown = network_sandbox(build({"mqtt": {"enabled": True, "host": "no-such-broker.invalid"}}))
    assert "192.168.0.0/16" in unknown.allow and "does not resolve" in unknown.dropin()
