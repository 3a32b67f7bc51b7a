"""Sockets inside a pod's network namespace, for httpGet and tcpSocket probes.

A pod's network namespace has only loopback, so a probe must connect from inside it.
setns(CLONE_NEWNET) moves only the calling thread, and a socket keeps the namespace
it was created in. So, as `ip netns exec` does for one syscall:

    worker thread: save /proc/thread-self/ns/net, setns(pod netns), socket(), setns back
    event loop:    connect and talk over that socket like any other (asyncio streams)

The thread is a short-lived one of its own, not one of asyncio's default executor:
no other work ever runs in a thread that is (even briefly) in a pod's namespace.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import threading
from pathlib import Path

from agent.runtime.native import syscalls


def socket_in(netns: Path | None, family: int = socket.AF_INET) -> socket.socket:
    """A TCP socket created in the network namespace `netns` names (None: ours).

    Blocking; raises OSError (no such namespace, setns refused...).
    """
    if netns is None:
        return socket.socket(family, socket.SOCK_STREAM)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            syscalls.setns(target, syscalls.CLONE_NEWNET)
        finally:
            os.close(target)
        try:
            return socket.socket(family, socket.SOCK_STREAM)
        finally:
            syscalls.setns(own, syscalls.CLONE_NEWNET)
    finally:
        os.close(own)


async def open_socket(netns: Path | None, family: int = socket.AF_INET) -> socket.socket:
    """`socket_in` in a thread of its own; the socket comes back non-blocking."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[socket.socket] = loop.create_future()

    def deliver(sock: socket.socket | None, exc: BaseException | None) -> None:
        if done.cancelled():
            if sock is not None:
                sock.close()
        elif exc is not None:
            done.set_exception(exc)
        else:
            done.set_result(sock)  # type: ignore[arg-type]

    def work() -> None:
        sock: socket.socket | None = None
        try:
            sock = socket_in(netns, family)
            sock.setblocking(False)
        except BaseException as exc:
            outcome: tuple[socket.socket | None, BaseException | None] = (None, exc)
        else:
            outcome = (sock, None)
        try:
            loop.call_soon_threadsafe(deliver, *outcome)
        except RuntimeError:  # the loop closed meanwhile
            if sock is not None:
                sock.close()

    threading.Thread(target=work, name="corral-netns", daemon=True).start()
    return await done


async def connect(
    netns: Path | None, host: str, port: int, *, tls: ssl.SSLContext | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to host:port made from inside `netns` (None: the agent's own),
    with TLS over it if `tls` is given.

    `host` is resolved in the agent's namespace (a pod's has no resolver to ask); a
    literal address needs no resolving. Raises OSError as `asyncio.open_connection`.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"cannot resolve {host}")
    family, _, _, _, address = infos[0]
    sock = await open_socket(netns, family)
    try:
        await loop.sock_connect(sock, address)
        if tls is None:
            return await asyncio.open_connection(sock=sock)
        return await asyncio.open_connection(sock=sock, ssl=tls, server_hostname=host)
    except BaseException:
        sock.close()
        raise
