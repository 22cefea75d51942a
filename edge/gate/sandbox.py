"""The network half of the service's sandbox, derived from the configuration.

systemd/maskgate.service cannot know which addresses a site's gate talks to: a Pi camera needs no
network at all, an RTSP camera needs its host, the web server its viewers. So the unit ships with a
LAN-wide default, and ``maskgate sandbox`` writes a drop-in (``maskgate.service.d/network.conf``)
that lets through exactly what the configuration names and nothing else:

- ``IPAddressAllow`` (after ``IPAddressDeny=any``): localhost, plus the web viewers' networks
  (``web.allow``) when ``web.listen`` is not loopback, the camera's host for a network stream, and
  the MQTT broker's addresses (a name resolved when the drop-in is written).
- ``SocketBindAllow``/``SocketBindDeny``: the process may bind the web server's TCP port and no other
  (RTP over UDP for a stream camera binds UDP ports of its own choosing, so UDP stays open then).
- ``RestrictAddressFamilies``: no internet sockets at all when nothing needs the network.

The drop-in is a pure function of the configuration, so it is tested without systemd and checked by
``systemd-analyze`` on the real unit. Run it again, then ``systemctl daemon-reload``, after changing
``[web]``, ``[source]`` or ``[mqtt]``.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .config import GateConfig, is_loopback, split_listen
from .sources import STREAM_PREFIXES

# A stream camera named by host name: its address is not known until it is resolved, so the local
# networks are let through (as the unit's default does), not the internet.
LOCAL_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "link-local")
DROPIN = "network.conf"


@dataclass(frozen=True)
class NetworkSandbox:
    """What the service may reach and bind, and why (the drop-in's comments)."""

    allow: tuple[str, ...]
    bind_tcp: int | None
    bind_udp: bool
    inet: bool
    reasons: tuple[str, ...] = field(default=())

    def dropin(self) -> str:
        """The drop-in's text: empty assignments first, to replace the unit's lists, not extend them."""
        lines = ["# Written by `maskgate sandbox` from the gate's configuration; do not edit: run it again."]
        lines += [f"# {reason}" for reason in self.reasons]
        allow = " ".join(self.allow)
        lines += ["[Service]", "IPAddressDeny=any", "IPAddressAllow=", f"IPAddressAllow={allow}",
                  "SocketBindDeny=", "SocketBindAllow="]  # fmt: skip
        if self.bind_tcp is not None:
            lines.append(f"SocketBindAllow=tcp:{self.bind_tcp}")
        if self.bind_udp:
            lines.append("SocketBindAllow=udp")
        lines.append("SocketBindDeny=any")
        families = "AF_UNIX AF_NETLINK" + (" AF_INET AF_INET6" if self.inet else "")
        lines += ["RestrictAddressFamilies=", f"RestrictAddressFamilies={families}"]
        return "\n".join(lines) + "\n"


def _addresses(host: str) -> list[str] | None:
    """The broker's addresses: the literal itself, or what the name resolves to now (None if nothing).
    A name is resolved when the drop-in is written: run `maskgate sandbox` again if they change."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return None
    return list(dict.fromkeys(str(ipaddress.ip_address(i[4][0].split("%")[0])) for i in infos)) or None


def network_sandbox(cfg: GateConfig) -> NetworkSandbox:
    """The addresses, ports and socket families ``cfg`` needs."""
    allow: list[str] = ["localhost"]
    reasons: list[str] = []
    bind_tcp, bind_udp = None, False
    if cfg.web.enabled:
        host, port = split_listen(cfg.web.listen)
        bind_tcp = port
        if is_loopback(host):
            reasons.append(f"web.listen {cfg.web.listen}: viewers on this machine only")
        else:
            allow += cfg.web.allow
            reasons.append(f"web.listen {cfg.web.listen}: viewers from web.allow {', '.join(cfg.web.allow)}")
    uri = cfg.source.uri
    if uri.lower().startswith(STREAM_PREFIXES):
        host = urlsplit(uri).hostname or ""
        bind_udp = True
        try:
            address = ipaddress.ip_address(host)
            allow.append(str(address))
            reasons.append(f"source: a stream camera at {address}")
        except ValueError:
            if not is_loopback(host):
                allow += LOCAL_NETWORKS
                reasons.append(f"source: a stream camera named {host!r}, so the local networks")
    if cfg.mqtt.enabled:
        addresses = _addresses(cfg.mqtt.host)
        if addresses is None:
            allow += LOCAL_NETWORKS
            reasons.append(f"mqtt.host {cfg.mqtt.host!r} does not resolve here, so the local networks")
        else:
            allow += [a for a in addresses if not ipaddress.ip_address(a).is_loopback]
            reasons.append(f"mqtt.host {cfg.mqtt.host}: the broker at {', '.join(addresses)}")
    needs = cfg.web.enabled or bind_udp or cfg.mqtt.enabled
    if not needs:
        reasons.append("nothing in the configuration needs the network: no internet sockets")
    unique = tuple(dict.fromkeys(allow))
    inet = needs
    return NetworkSandbox(unique, bind_tcp, bind_udp, inet=inet, reasons=tuple(reasons))
