"""The agent's end of the fork server (forkserver.py): starts it (again, if it died), keeps
a spare helper waiting, sends requests, and hears the exits of the monitors it started.

Why a spare: asking the fork server for a helper costs a round trip, two forks and the
reaping of the middle process (3-9 ms on a busy machine). So a helper is asked for
*ahead* of the next request and waits on its socket; a request writes to it at once,
and the next spare is asked for once the request has its answer (not during it: on a
busy machine the forks would take CPU from the request's own processes). A spare found
dead (its socket reads EOF: a live one writes nothing before its request) is replaced
on the spot, and a dead fork server is started again by the request that notices.
A spare also forks the init of the next container while it waits, in its new
namespaces (monitor.prepare): most requests are starts, and a start then waits for
neither that fork nor those namespaces. Other requests discard it.

After a ``run`` request the socket stays open: the monitor answers "started", and
once the container has exited and exit.json is durable, it sends the same record
(`ExitWatch`), so the agent that started a container needs no pidfd and no read of
exit.json to learn its exit. Re-adopted containers (and this one, if the monitor
dies first) are watched through their records instead (runtime.py).

The socket I/O runs on the event loop (non-blocking sockets); starting the fork server
and asking it for a helper are blocking and run in threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import select
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from agent.runtime.base import RuntimeFailure
from agent.runtime.native.forkserver import BOOTSTRAP, PLAIN, READY, SPAWNED, WARM

_LOGGER = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[3]  # holds the `agent` package
ACK_TIMEOUT = 10.0  # the fork server forks, then acknowledges: milliseconds, normally
MAX_ANSWER = 1 << 20


def _waiting(sock: socket.socket) -> bool:
    """Whether a spare helper still waits for its request: it writes nothing before one,
    so anything to read on its socket (EOF, an error) means it is gone."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLPRI)
    return not poller.poll(0)


class ExitWatch:
    """A started monitor's socket: resolves `future` with its exit record (a dict), or with
    None if the monitor died (or the watch was closed) before sending one."""

    def __init__(self, sock: socket.socket, buffered: bytes) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock: socket.socket | None = sock
        self._buf = bytearray(buffered)
        self.future: asyncio.Future[dict[str, Any] | None] = self._loop.create_future()
        self._reading = False
        if b"\n" in self._buf:  # exited already: the record came with the answer
            self._finish()
        else:
            self._loop.add_reader(sock.fileno(), self._readable)
            self._reading = True

    def _readable(self) -> None:
        assert self._sock is not None
        try:
            data = self._sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self._buf += data
        if data and b"\n" not in self._buf and len(self._buf) < MAX_ANSWER:
            return
        self._finish()

    def _finish(self) -> None:
        record = None
        line = bytes(self._buf).partition(b"\n")[0]
        try:
            message = json.loads(line) if line else None
        except ValueError:
            message = None
        if isinstance(message, dict) and isinstance(message.get("exit"), dict):
            record = message["exit"]
        self.close(record)

    def close(self, record: dict[str, Any] | None = None) -> None:
        """Stop watching (idempotent); a pending `future` resolves with `record`."""
        if self._sock is not None:
            if self._reading and not self._loop.is_closed():
                self._loop.remove_reader(self._sock.fileno())
            self._reading = False
            self._sock.close()
            self._sock = None
        if not self.future.done():
            self.future.set_result(record)


class ForkServerClient:
    """Starts the fork server, keeps one spare helper, sends requests (see the module)."""

    def __init__(self, log_path: Path) -> None:
        self._log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._ctrl: socket.socket | None = None
        self._lock = threading.Lock()
        self._spare: socket.socket | None = None
        self._filling: asyncio.Task[None] | None = None
        self._closing = False

    # --- the process (blocking: call in a thread) ---

    def _start_locked(self) -> None:
        self._stop_locked()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with open(self._log_path, "ab") as log:
            # sys.executable, never `python3` from PATH (a slow pyenv shim, maybe another
            # version); -I -S: no site-packages or environment, so it starts fast and small.
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", BOOTSTRAP, str(PROJECT_ROOT)],
                stdin=theirs.fileno(),
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd="/",
                start_new_session=True,  # a ^C to the agent's process group is not for it
            )
        theirs.close()
        ours.settimeout(15)
        try:
            ready = ours.recv(1)
        except OSError as exc:
            ready = b""
            _LOGGER.error("fork server did not start: %s", exc)
        if ready != READY:
            ours.close()
            self._stop_locked()
            raise RuntimeFailure(f"the fork server did not start; see {self._log_path}")
        ours.settimeout(None)
        self._ctrl = ours
        _LOGGER.debug("fork server started, pid %d", self._proc.pid)

    def _stop_locked(self) -> None:
        if self._ctrl is not None:
            self._ctrl.close()  # EOF: the fork server exits
            self._ctrl = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def start(self) -> None:
        """Start the fork server and ask it for the first spare helper (blocking)."""
        with self._lock:
            self._start_locked()
        self._closing = False
        self._spare = self.connect(warm=True)

    def stop(self) -> None:
        """Let the spare helper go, and stop the fork server (blocking)."""
        if self._spare is not None:
            self._spare.close()  # EOF: the spare leaves quietly
            self._spare = None
        with self._lock:
            self._stop_locked()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def connect(self, warm: bool = False) -> socket.socket:
        """A fresh, non-blocking socket whose other end a new helper holds (blocking).
        `warm`: a spare, which prepares a container's init while it waits.

        Restarts the fork server if it is gone; a fork server that dies with our
        socket unanswered is noticed by the missing acknowledgement, before anything
        was asked of it, so retrying is safe.
        """
        with self._lock:
            for attempt in range(2):
                if self._ctrl is None or self._proc is None or self._proc.poll() is not None:
                    if self._proc is not None:
                        _LOGGER.warning("fork server is gone; starting it again")
                    self._start_locked()
                assert self._ctrl is not None
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    socket.send_fds(self._ctrl, [WARM if warm else PLAIN], [theirs.fileno()])
                    theirs.close()
                    self._ctrl.settimeout(ACK_TIMEOUT)
                    if self._ctrl.recv(1) == SPAWNED:
                        self._ctrl.settimeout(None)
                        ours.setblocking(False)
                        return ours
                except OSError as exc:
                    _LOGGER.warning("fork server did not take a request: %s", exc)
                theirs.close()
                ours.close()
                self._ctrl.close()
                self._ctrl = None
                if attempt:
                    break
        raise RuntimeFailure("the fork server does not answer; see its log")

    # --- spares ---

    async def _helper(self) -> socket.socket:
        """A helper waiting for its request: the spare, or (none, or it died) a new one."""
        if self._spare is None:
            await self._filled()  # one is on its way: take it rather than ask for another
        sock, self._spare = self._spare, None
        if sock is not None and not _waiting(sock):
            sock.close()
            sock = None
        if sock is None:
            sock = await asyncio.to_thread(self.connect)
        return sock

    async def _refill(self) -> None:
        """Ask for the next spare in the background (after a request has its answer: the
        forks would compete for the CPU with the request's own work); if the fork server
        died, wait until it runs again, so that the next request finds it and a spare."""
        if not self._closing and self._spare is None:
            if self._filling is None or self._filling.done():
                self._filling = asyncio.create_task(self._fill(), name="forkserver-spare")
        if self._proc is None or self._proc.poll() is not None:
            await self._filled()

    async def _fill(self) -> None:
        try:
            sock = await asyncio.to_thread(self.connect, True)
        except RuntimeFailure as exc:
            _LOGGER.warning("no spare helper: %s", exc)
            return
        if self._closing or self._spare is not None:
            sock.close()
        else:
            self._spare = sock

    async def _filled(self) -> None:
        """Wait until the spare asked for is there (not cancelled with the caller)."""
        if self._filling is not None and not self._filling.done():
            await asyncio.wait({self._filling})

    async def aclose(self) -> None:
        """Stop asking for spares; let the spare go; stop the fork server."""
        self._closing = True
        await self._filled()
        await asyncio.to_thread(self.stop)

    # --- requests ---

    async def _exchange(
        self, payload: dict[str, Any], answer_within: float, spare: bool = True
    ) -> tuple[dict[str, Any], socket.socket, bytes]:
        """Send `payload` to a helper (`spare`: the spare, else a new one); return its
        answer, the socket, and what came after."""
        loop = asyncio.get_running_loop()
        data = json.dumps(payload).encode() + b"\n"
        sock = await self._helper() if spare else await asyncio.to_thread(self.connect)
        try:
            try:
                await loop.sock_sendall(sock, data)
            except OSError:  # it died as we wrote, before reading anything: ask a new one
                sock.close()
                sock = await asyncio.to_thread(self.connect)
                await loop.sock_sendall(sock, data)
            buf = b""
            async with asyncio.timeout(answer_within):
                while b"\n" not in buf:
                    chunk = await loop.sock_recv(sock, 65536)
                    if not chunk or len(buf) > MAX_ANSWER:
                        op = payload.get("op")
                        raise RuntimeFailure(f"the {op} helper died without an answer")
                    buf += chunk
        except BaseException:
            sock.close()
            raise
        line, _, rest = buf.partition(b"\n")
        answer = json.loads(line)
        if not isinstance(answer, dict):
            sock.close()
            raise RuntimeFailure(f"the {payload.get('op')} helper answered {answer!r}")
        return answer, sock, rest

    async def request(
        self, payload: dict[str, Any], answer_within: float, *, spare: bool = True
    ) -> dict[str, Any]:
        """Send one request, return the helper's one-line JSON answer. `spare=False`: ask
        for a helper of its own (background work must not take the next start's spare)."""
        try:
            answer, sock, _ = await self._exchange(payload, answer_within, spare)
            sock.close()
        finally:
            await self._refill()
        return answer

    async def run(
        self, payload: dict[str, Any], answer_within: float
    ) -> tuple[dict[str, Any], ExitWatch | None]:
        """Send a ``run`` request; return the monitor's answer and, if the container
        started, the watch that resolves with its exit record."""
        try:
            answer, sock, rest = await self._exchange(payload, answer_within)
            if not answer.get("ok"):
                sock.close()
                return answer, None
            return answer, ExitWatch(sock, rest)
        finally:
            await self._refill()
