"""systemd's sd_notify protocol (READY=1, STATUS=, WATCHDOG=1, STOPPING=1) over NOTIFY_SOCKET.

A notification is one datagram of newline-separated `KEY=value` lines sent to the
AF_UNIX socket named by `$NOTIFY_SOCKET` (a path, or an abstract name written with
a leading '@'). Outside systemd the variable is unset and every call is a no-op.

    notifier = Notifier.from_environment()       # takes the variables out of os.environ
    notifier.notify("READY=1", "STATUS=serving")
    task = asyncio.create_task(keep_alive(notifier, status_text, healthy))
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, MutableMapping

_LOGGER = logging.getLogger(__name__)

STATUS_SECONDS = 5.0  # how often a changed STATUS= line is sent


class Notifier:
    """Sends notifications to systemd; `enabled` is False (and sending a no-op) without it."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self._address: str | bytes | None = None
        if address:
            # '@name' is an abstract socket: its name starts with a NUL byte.
            self._address = b"\0" + address[1:].encode() if address[0] == "@" else address
        self.watchdog_seconds = watchdog_usec / 1e6 if watchdog_usec else None
        self._sock: socket.socket | None = None

    @classmethod
    def from_environment(
        cls, environ: MutableMapping[str, str] | None = None, *, unset: bool = True
    ) -> Notifier:
        """The notifier systemd asked for. With `unset` the variables are removed, so
        children (the fork server, monitors, pods) cannot notify in the daemon's name."""
        env = os.environ if environ is None else environ
        get = env.pop if unset else env.get
        address = get("NOTIFY_SOCKET", None)
        usec, pid = get("WATCHDOG_USEC", None), get("WATCHDOG_PID", None)
        watchdog = None
        # WATCHDOG_PID names the process the watchdog is meant for; another one ignores it.
        if usec and usec.isdigit() and (not pid or pid == str(os.getpid())):
            watchdog = int(usec) or None
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *fields: str) -> bool:
        """Send one notification ("READY=1", "STATUS=..."); False if not sent.

        Never raises: a daemon must not fail because its supervisor went away."""
        if self._address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)  # a datagram to a local socket: never waits
            self._sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            _LOGGER.debug("sd_notify %s failed: %s", fields, exc)
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


async def keep_alive(
    notifier: Notifier,
    status: Callable[[], str] | None = None,
    healthy: Callable[[], bool] = lambda: True,
) -> None:
    """Ping the watchdog (every half WatchdogSec) and keep STATUS= current; cancel to stop.

    The pings come from this task on the daemon's event loop, so a blocked or dead loop
    stops them and systemd restarts the daemon; so does `healthy()` turning False
    (a control loop that died)."""
    if not notifier.enabled:
        return
    period = STATUS_SECONDS
    if notifier.watchdog_seconds:
        period = min(period, notifier.watchdog_seconds / 2)
    last_status, status_due = "", 0.0
    loop = asyncio.get_running_loop()
    while True:
        fields = []
        if notifier.watchdog_seconds and healthy():
            fields.append("WATCHDOG=1")
        if status is not None and loop.time() >= status_due:
            text = status()
            status_due = loop.time() + STATUS_SECONDS
            if text != last_status:
                fields.append(f"STATUS={text}")
                last_status = text
        if fields:
            notifier.notify(*fields)
        await asyncio.sleep(period)
