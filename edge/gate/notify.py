"""systemd's notify protocol: READY, WATCHDOG and STOPPING, as datagrams to $NOTIFY_SOCKET.

The protocol is one ``sendto`` of a short text (sd_notify(3)); the C library
binding would add a compiled dependency for four lines. Outside systemd
(no $NOTIFY_SOCKET) every call does nothing.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # abstract namespace
            address = "\0" + address[1:]
        self._address = address or None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watched = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        # Ping at half the interval, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval_s = int(usec) / 2e6 if watched else None
        self._last_ping = float("-inf")

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, message: str) -> bool:
        if self._address is None:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.setblocking(False)  # a listener that does not read must never stall the gate loop
            try:
                s.sendto(message.encode(), self._address)
            except OSError:  # no listener, or its queue is full: the message is dropped
                return False
        return True

    def ready(self, status: str = "") -> None:
        self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def watchdog(self, now: float | None = None) -> None:
        """Ping the watchdog if due; call from the main loop, so a hung loop stops the pings."""
        if self.watchdog_interval_s is None:
            return
        now = time.monotonic() if now is None else now
        if now - self._last_ping >= self.watchdog_interval_s:
            self.send("WATCHDOG=1")
            self._last_ping = now

    def stopping(self) -> None:
        self.send("STOPPING=1")
