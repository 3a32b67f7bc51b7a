"""sd_notify over a real AF_UNIX datagram socket: paths, abstract names, watchdog, no-op."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.sdnotify import Notifier, keep_alive


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket at a path, as systemd's NOTIFY_SOCKET is."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield path, sock
    sock.close()


def test_sends_to_a_path(receiver: tuple[str, socket.socket]) -> None:
    """Fields are joined by newlines into one datagram."""
    path, sock = receiver
    notifier = Notifier(path)
    assert notifier.notify("READY=1", "STATUS=serving")
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving"
    notifier.close()


def test_sends_to_an_abstract_socket() -> None:
    """'@name' is the abstract socket whose name starts with a NUL byte."""
    name = f"corral-unit-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        assert Notifier(f"@{name}").notify("WATCHDOG=1")
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_no_socket_is_a_no_op() -> None:
    """Outside systemd nothing is sent and nothing fails; a vanished socket is no error."""
    notifier = Notifier.from_environment({}, unset=True)
    assert not notifier.enabled
    assert notifier.notify("READY=1") is False
    assert Notifier("/nonexistent/notify").notify("READY=1") is False


def test_from_environment_takes_the_variables_out() -> None:
    """The variables are removed, so children cannot notify in the daemon's name; a
    WATCHDOG_PID naming another process disables the watchdog."""
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = Notifier.from_environment(env)
    assert env == {}
    assert notifier.enabled and notifier.watchdog_seconds == 2.0
    other = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}
    assert Notifier.from_environment(other).watchdog_seconds is None
    kept = {"NOTIFY_SOCKET": "@x"}
    Notifier.from_environment(kept, unset=False)
    assert kept == {"NOTIFY_SOCKET": "@x"}


async def test_keep_alive_pings_while_healthy(receiver: tuple[str, socket.socket]) -> None:
    """WATCHDOG=1 every half period, STATUS= when it changes; no ping once unhealthy."""
    path, sock = receiver
    sock.setblocking(False)
    healthy = True
    status = "1 pod"
    task = asyncio.create_task(
        keep_alive(Notifier(path, watchdog_usec=100_000), lambda: status, lambda: healthy)
    )
    await asyncio.sleep(0.32)
    received = []
    while True:
        try:
            received.append(sock.recv(4096).decode())
        except BlockingIOError:
            break
    assert received[0] == "WATCHDOG=1\nSTATUS=1 pod"
    assert sum("WATCHDOG=1" in m for m in received) >= 4  # every 0.05 s
    assert sum("STATUS=" in m for m in received) == 1  # unchanged: not repeated
    healthy = False
    await asyncio.sleep(0.1)
    while True:  # drop what was sent before the change was seen
        try:
            sock.recv(4096)
        except BlockingIOError:
            break
    await asyncio.sleep(0.2)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
