"""Liveness, readiness and startup probes, with Kubernetes' fields, defaults and meaning.

One `ContainerProbes` per container run (the supervisor's PodWorker creates it when
the container starts and closes it when it exits), one task per probe:

    container running
      │
      ├─ startup (if any) ──failureThreshold failures in a row──────────> kill ──┐
      │     │ one success: the container has started                           │
      │     v                                                                  │
      ├─ liveness ──failureThreshold failures in a row──────────────────> kill ──┤
      └─ readiness ──successThreshold successes: ready                           v
                   ──failureThreshold failures: not ready (never kills)   restart policy
                                                                          (agent/restart.py)

Every failed attempt is an `Unhealthy` Warning event; a kill is a `Killing` event.
Without a readiness probe a container is ready once running (and started).
`Thresholds` turns attempts into a result and does no I/O (tested alone); `Prober`
runs one attempt: `exec` inside the container (`Runtime.exec_in_container`),
`httpGet` and `tcpSocket` from inside the pod's network namespace (agent/netns.py).
HTTPS is supported and, as by the kubelet, the server's certificate is not verified.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agent import netns
from agent.runtime.base import Runtime, RuntimeFailure
from common.models import (
    Container,
    HTTPGetAction,
    HTTPHeader,
    Pod,
    Probe,
    TCPSocketAction,
)

_LOGGER = logging.getLogger(__name__)

Kind = Literal["startup", "liveness", "readiness"]
USER_AGENT = "corral-probe/1.0"
MAX_MESSAGE = 1024  # of a probe's output, in an event or a log line
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name


class Thresholds:
    """Attempts in, a settled result out: the result flips only after `success`
    successes or `failure` failures in a row (the kubelet's probe worker, minus I/O).

    `initial`: the result before any attempt. The kubelet starts liveness at success,
    readiness at failure, startup at unknown (None).
    """

    def __init__(self, success: int, failure: int, initial: bool | None) -> None:
        if success < 1 or failure < 1:
            raise ValueError(f"thresholds must be >= 1 (success {success}, failure {failure})")
        self.success, self.failure = success, failure
        self.result = initial
        self._last: bool | None = None
        self._run = 0  # attempts in a row with the outcome `_last`

    def observe(self, ok: bool) -> bool:
        """Record one attempt; True if it changed `result`."""
        if ok == self._last:
            self._run += 1
        else:
            self._last, self._run = ok, 1
        if self._run < (self.success if ok else self.failure) or self.result == ok:
            return False
        self.result = ok
        return True

    @classmethod
    def for_probe(cls, kind: Kind, probe: Probe) -> Thresholds:
        # Kubernetes requires successThreshold 1 for liveness and startup probes.
        success = probe.success_threshold if kind == "readiness" else 1
        initial = {"startup": None, "liveness": True, "readiness": False}[kind]
        return cls(success, probe.failure_threshold, initial)


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    message: str = ""


class ProbeError(Exception):
    """A probe that cannot be attempted as written (unknown named port, bad header)."""


def resolve_port(container: Container, port: int | str) -> int:
    """A probe's port: a number, or the name of one of the container's `ports`."""
    if isinstance(port, int):
        number = port
    elif port.isascii() and port.isdigit() and len(port) <= 5:
        # Not `isdigit()` alone: it takes "²", which int() refuses, and digits int()
        # cannot convert past 4300; either was a ValueError out of the probe.
        number = int(port)
    else:
        found = next((p.container_port for p in container.ports if p.name == port), None)
        if found is None:
            raise ProbeError(f"port {port!r} is not a named port of container {container.name}")
        number = found
    if not 0 < number < 65536:
        raise ProbeError(f"port {number} is out of range")
    return number


def http_request(host: str, port: int, path: str, headers: list[HTTPHeader] | None) -> bytes:
    """A minimal HTTP/1.1 GET. The probe's `httpHeaders` replace the defaults of the
    same name (Host, User-Agent, Accept); several of one name are all sent."""
    if not path.startswith("/"):
        path = "/" + path
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    given = [(h.name, h.value) for h in headers or []]
    names = {name.lower() for name, _ in given}
    defaults = [("Host", authority), ("User-Agent", USER_AGENT), ("Accept", "*/*")]
    fields = [(n, v) for n, v in defaults if n.lower() not in names] + given
    if any(c in path for c in " \r\n\0"):
        raise ProbeError(f"invalid HTTP path {path!r}")
    for name, value in fields:
        if any(c in value for c in "\r\n\0"):
            raise ProbeError(f"invalid value for HTTP header {name}: {value!r}")
    for name, _ in fields:
        if not _TOKEN.match(name):
            raise ProbeError(f"invalid HTTP header name {name!r}")
    lines = [f"GET {path} HTTP/1.1", *(f"{n}: {v}" for n, v in fields), "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")


def status_code(line: bytes) -> int:
    """The code of an HTTP status line (`HTTP/1.1 200 OK`); ProbeError if it is none."""
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise ProbeError(f"malformed HTTP response {line[:80]!r}")
    return int(parts[1])


@functools.cache
def _insecure_tls() -> ssl.SSLContext:
    """The TLS context of HTTPS probes, made once. As the kubelet: probes check that the
    server answers, not who it is. So no CA certificates either: create_default_context()
    read and parsed the system's CA bundle on the event loop, 45-70 ms measured, at every
    HTTPS probe attempt, for certificates that are never checked."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _why(exc: OSError) -> str:
    # asyncio's "Connect call failed ('127.0.0.1', 80)" hides the reason in errno.
    if exc.errno and not isinstance(exc, ssl.SSLError):  # an SSLError's errno is no errno
        return os.strerror(exc.errno)
    return str(exc)


def _short(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "..."


class Prober:
    """Runs single attempts of one container's probes (no thresholds, no schedule)."""

    def __init__(self, runtime: Runtime, pod: Pod, container: Container) -> None:
        self._runtime = runtime
        self._pod = pod
        self._uid = pod.metadata.uid or ""
        self._container = container
        self._netns: Path | None = None

    async def attempt(self, probe: Probe) -> Outcome:
        """One attempt, within `timeoutSeconds`; never raises (but CancelledError)."""
        timeout = float(probe.timeout_seconds)
        try:
            if probe.exec is not None:
                return await self._exec(probe.exec.command, timeout)
            async with asyncio.timeout(timeout):
                if probe.http_get is not None:
                    return await self._http(probe.http_get)
                assert probe.tcp_socket is not None  # the model requires one handler
                return await self._tcp(probe.tcp_socket)
        except TimeoutError as exc:
            return Outcome(False, str(exc) or f"timed out after {timeout:g}s")
        except (ProbeError, RuntimeFailure) as exc:
            return Outcome(False, str(exc))
        except Exception as exc:  # a bug here must not end the probe's loop
            _LOGGER.exception("probe of container %s failed unexpectedly", self._container.name)
            return Outcome(False, f"{type(exc).__name__}: {exc}")

    async def _exec(self, argv: list[str], seconds: float) -> Outcome:
        code, output = await self._runtime.exec_in_container(
            self._uid, self._container.name, argv, seconds
        )
        text = _short(output.decode("utf-8", "replace"))
        if code == 0:
            return Outcome(True, text)
        return Outcome(False, f"exit code {code}" + (f": {text}" if text else ""))

    async def _namespace(self) -> Path | None:
        """Where to connect from: the pod's network namespace, None for hostNetwork."""
        if self._pod.spec.host_network:
            return None
        if self._netns is None:
            self._netns = await asyncio.to_thread(self._runtime.netns_path, self._uid)
            if self._netns is None:
                raise ProbeError("the pod has no network namespace (yet)")
        return self._netns

    async def _http(self, action: HTTPGetAction) -> Outcome:
        port = resolve_port(self._container, action.port)
        host = action.host or "127.0.0.1"
        request = http_request(host, port, action.path or "/", action.http_headers)
        url = f"{action.scheme.lower()}://{host}:{port}{action.path or '/'}"
        tls = _insecure_tls() if action.scheme == "HTTPS" else None
        try:
            reader, writer = await netns.connect(await self._namespace(), host, port, tls=tls)
        except TimeoutError:
            raise
        except OSError as exc:  # ssl.SSLError too
            return Outcome(False, f'Get "{url}": {_why(exc)}')
        try:
            writer.write(request)
            await writer.drain()
            line = await reader.readline()
        except TimeoutError:
            raise
        except (OSError, ValueError) as exc:
            return Outcome(False, f'Get "{url}": {exc}')
        finally:
            writer.close()
        code = status_code(line)
        if 200 <= code < 400:
            return Outcome(True, f"HTTP probe succeeded with statuscode: {code}")
        return Outcome(False, f"HTTP probe failed with statuscode: {code}")

    async def _tcp(self, action: TCPSocketAction) -> Outcome:
        port = resolve_port(self._container, action.port)
        host = action.host or "127.0.0.1"
        try:
            _, writer = await netns.connect(await self._namespace(), host, port)
        except TimeoutError:
            raise
        except OSError as exc:
            return Outcome(False, f"dial tcp {host}:{port}: {_why(exc)}")
        writer.close()
        return Outcome(True)


class ContainerProbes:
    """The probes of one container run, one task each; `started` and `ready` are what
    the supervisor reports. Owned by the PodWorker: `start` when the container runs,
    `close` when it exited or the pod stops.

    `on_change()`: `started` or `ready` changed. `on_event(reason, message, kind)`.
    `on_failure(kind)`: the liveness or startup probe failed for good; kill the
    container (the restart policy decides what follows). Called at most once.
    """

    def __init__(
        self,
        prober: Prober,
        container: Container,
        *,
        running_for: float,
        on_change: Callable[[], None],
        on_event: Callable[[str, str, str], None],
        on_failure: Callable[[Kind], Awaitable[None]],
    ) -> None:
        self._prober = prober
        self._probes: dict[Kind, Probe | None] = {
            "startup": container.startup_probe,
            "liveness": container.liveness_probe,
            "readiness": container.readiness_probe,
        }
        self.name = container.name
        self.started = container.startup_probe is None
        self.ready = container.readiness_probe is None
        self._running_for = running_for
        self._on_change = on_change
        self._on_event = on_event
        self._on_failure = on_failure
        self._started = asyncio.Event()
        if self.started:
            self._started.set()
        self._tasks: list[asyncio.Task[None]] = []

    @staticmethod
    def wanted(container: Container) -> bool:
        return any(
            p is not None
            for p in (container.startup_probe, container.liveness_probe, container.readiness_probe)
        )

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time() - self._running_for  # when the container started, on loop time
        for kind, probe in self._probes.items():
            if probe is not None:
                task = loop.create_task(self._run(kind, probe, began), name=f"{kind}-{self.name}")
                self._tasks.append(task)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _run(self, kind: Kind, probe: Probe, began: float) -> None:
        if kind != "startup":
            await self._started.wait()  # a startup probe holds the others back
        loop = asyncio.get_running_loop()
        thresholds = Thresholds.for_probe(kind, probe)
        # initialDelaySeconds counts from the container's start, as in Kubernetes.
        await asyncio.sleep(max(0.0, began + probe.initial_delay_seconds - loop.time()))
        while True:
            attempted = loop.time()
            outcome = await self._prober.attempt(probe)
            if not outcome.ok:
                message = f"{kind.capitalize()} probe failed: {outcome.message}"
                _LOGGER.debug("container %s: %s", self.name, message)
                self._on_event("Unhealthy", message, "Warning")
            if thresholds.observe(outcome.ok):
                if kind == "readiness":
                    self.ready = outcome.ok
                    self._on_change()
                elif outcome.ok:  # startup passed: liveness and readiness begin
                    self.started = True
                    self._started.set()
                    self._on_change()
                    return
                else:
                    await self._on_failure(kind)
                    return
            await asyncio.sleep(max(0.0, attempted + probe.period_seconds - loop.time()))
