"""Probes without containers: thresholds, the HTTP request and answer, ports, the schedule.

httpGet and tcpSocket attempts run against servers on the host's loopback, through a
hostNetwork pod (no network namespace to enter, so no root needed).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.probes import (
    ContainerProbes,
    Kind,
    Outcome,
    ProbeError,
    Prober,
    Thresholds,
    _insecure_tls,
    http_request,
    resolve_port,
    status_code,
)
from common.models import Container, HTTPHeader, Pod, Probe

# --- thresholds ---------------------------------------------------------------------------


def test_liveness_fails_only_after_failure_threshold_in_a_row() -> None:
    """Starts at success; flips after 3 failures in a row, a success in between resets."""
    t = Thresholds(1, 3, True)
    assert [t.observe(ok) for ok in (False, False, True, False, False)] == [False] * 5
    assert t.result is True
    assert t.observe(False) is True
    assert t.result is False


def test_readiness_needs_success_threshold_in_a_row() -> None:
    """Starts not ready; 2 successes in a row make it ready, 1 failure (threshold 1) not."""
    t = Thresholds(2, 1, False)
    assert t.observe(True) is False
    assert t.observe(False) is False  # already a failure: no change
    assert t.observe(True) is False
    assert t.observe(True) is True
    assert t.result is True
    assert t.observe(True) is False  # no change reported twice
    assert t.observe(False) is True
    assert t.result is False


def test_startup_starts_unknown() -> None:
    """A startup probe's result is unknown until one success or `failure` failures."""
    passed = Thresholds(1, 2, None)
    assert passed.observe(True) is True and passed.result is True
    failed = Thresholds(1, 2, None)
    assert failed.observe(False) is False and failed.result is None
    assert failed.observe(False) is True and failed.result is False


def test_threshold_kinds_follow_kubernetes() -> None:
    """successThreshold counts for readiness only; initial results per kind."""
    probe = Probe.model_validate({"exec": {"command": ["true"]}, "successThreshold": 3})
    assert probe.period_seconds == 10 and probe.timeout_seconds == 1
    assert probe.failure_threshold == 3 and probe.initial_delay_seconds == 0
    assert Thresholds.for_probe("readiness", probe).success == 3
    assert Thresholds.for_probe("liveness", probe).success == 1
    assert Thresholds.for_probe("liveness", probe).result is True
    assert Thresholds.for_probe("readiness", probe).result is False
    assert Thresholds.for_probe("startup", probe).result is None
    with pytest.raises(ValueError):
        Thresholds(0, 1, None)


# --- HTTP and ports -----------------------------------------------------------------------


def test_http_request_defaults_and_overrides() -> None:
    """Host, User-Agent, Accept by default; a probe header of the same name replaces one."""
    text = http_request("127.0.0.1", 8080, "healthz", None).decode()
    assert text.startswith("GET /healthz HTTP/1.1\r\n")
    assert "Host: 127.0.0.1:8080\r\n" in text and "Accept: */*\r\n" in text
    assert text.endswith("Connection: close\r\n\r\n")
    headers = [HTTPHeader(name="host", value="example.org"), HTTPHeader(name="X-A", value="1")]
    text = http_request("::1", 80, "/", headers).decode()
    assert "Host: [::1]:80" not in text and "host: example.org\r\n" in text
    assert "X-A: 1\r\n" in text


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/a b", None),
        ("/\r\nX: y", None),
        ("/", [HTTPHeader(name="X", value="a\r\nEvil: 1")]),
        ("/", [HTTPHeader(name="Bad Name", value="1")]),
    ],
)
def test_http_request_refuses_injection(path: str, headers: list[HTTPHeader] | None) -> None:
    """No CR, LF or spaces where they would split the request."""
    with pytest.raises(ProbeError):
        http_request("127.0.0.1", 80, path, headers)


def test_status_code() -> None:
    """The code of a status line; anything else is a ProbeError."""
    assert status_code(b"HTTP/1.1 204 No Content\r\n") == 204
    assert status_code(b"HTTP/1.0 500\r\n") == 500
    for bad in (b"", b"SSH-2.0-OpenSSH\r\n", b"HTTP/1.1 abc\r\n"):
        with pytest.raises(ProbeError):
            status_code(bad)


def test_named_ports() -> None:
    """A number, a numeric string, or a name from the container's ports."""
    c = Container.model_validate(
        {"name": "c", "image": "x", "ports": [{"name": "http", "containerPort": 8080}]}
    )
    assert resolve_port(c, 81) == 81
    assert resolve_port(c, "82") == 82
    assert resolve_port(c, "http") == 8080
    with pytest.raises(ProbeError, match="not a named port"):
        resolve_port(c, "grpc")
    with pytest.raises(ProbeError):
        resolve_port(c, 70000)
    for odd in ("²", "٣", "8" * 5000):  # a name no port has, not a ValueError
        with pytest.raises(ProbeError, match="not a named port"):
            resolve_port(c, odd)


# --- attempts against host servers ---------------------------------------------------------


class FakeRuntime:
    """Only what a Prober asks of a runtime: exec answers and the (absent) netns."""

    def __init__(self, exec_answer: tuple[int, bytes] | BaseException = (0, b"")) -> None:
        self.exec_answer = exec_answer
        self.calls: list[tuple[str, str, list[str], float]] = []

    async def exec_in_container(
        self,
        uid: str,
        container: str,
        argv: list[str],
        timeout: float,  # noqa: ASYNC109
    ) -> tuple[int, bytes]:
        self.calls.append((uid, container, argv, timeout))
        if isinstance(self.exec_answer, BaseException):
            raise self.exec_answer
        return self.exec_answer

    def netns_path(self, uid: str) -> Path | None:
        return None


def host_pod(**container: Any) -> tuple[Pod, Container]:
    pod = Pod.model_validate(
        {
            "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
            "spec": {
                "hostNetwork": True,
                "containers": [{"name": "c", "image": "busybox", **container}],
            },
        }
    )
    return pod, pod.spec.containers[0]


def prober(runtime: Any = None, **container: Any) -> Prober:
    pod, c = host_pod(**container)
    fake: Any = runtime or FakeRuntime()  # the part of the Runtime protocol probes use
    return Prober(fake, pod, c)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[int]]]:
    """Start asyncio servers on 127.0.0.1; returns their ports; closed at the end."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler, tls: ssl.SSLContext | None = None) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def http_handler(code: int, seen: list[bytes] | None = None) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        if seen is not None:
            seen.append(request)
        writer.write(f"HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    return handle


def http_probe(port: int | str, **fields: Any) -> Probe:
    return Probe.model_validate({"httpGet": {"port": port, "path": "/healthz", **fields}})


async def test_http_success_and_failure_codes(serve: Callable[..., Awaitable[int]]) -> None:
    """200-399 succeed, 400+ fail with the code; the path and headers reach the server."""
    seen: list[bytes] = []
    ok_port = await serve(http_handler(302, seen))
    bad_port = await serve(http_handler(503))
    p = prober(ports=[{"name": "web", "containerPort": ok_port}])
    got = await p.attempt(http_probe("web", httpHeaders=[{"name": "X-Probe", "value": "yes"}]))
    assert got.ok, got
    assert seen[0].startswith(b"GET /healthz HTTP/1.1\r\n") and b"X-Probe: yes\r\n" in seen[0]
    got = await p.attempt(http_probe(bad_port))
    assert got == Outcome(False, "HTTP probe failed with statuscode: 503")


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A loopback port bound but not listening: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


async def test_http_refused_and_timeout(
    serve: Callable[..., Awaitable[int]], dead_port: int
) -> None:
    """A closed port fails with the connect error; a silent server within timeoutSeconds."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        writer.close()

    quiet = await serve(silent)
    loop = asyncio.get_running_loop()
    began = loop.time()
    got = await prober().attempt(http_probe(quiet))
    assert got == Outcome(False, "timed out after 1s")
    assert loop.time() - began < 2.5
    got = await prober().attempt(http_probe(dead_port))
    assert not got.ok and "refused" in got.message.lower(), got
    assert got.message.startswith(f'Get "http://127.0.0.1:{dead_port}/healthz": ')


async def test_https_skips_verification(
    serve: Callable[..., Awaitable[int]], tmp_path: Path
) -> None:
    """HTTPS works against a self-signed certificate, as the kubelet does."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    openssl = await asyncio.create_subprocess_exec(
        *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
        *("-subj", "/CN=probe-test", "-keyout", str(key), "-out", str(cert)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert await openssl.wait() == 0
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    port = await serve(http_handler(200), context)
    got = await prober().attempt(http_probe(port, scheme="HTTPS"))
    assert got.ok, got


def test_https_context_is_made_once_without_ca_certificates() -> None:
    """An HTTPS attempt makes no TLS context of its own: ssl.create_default_context()
    parsed the system's CA bundle (45-70 ms, on the event loop) at every attempt, for
    certificates a probe never checks."""
    context = _insecure_tls()
    assert _insecure_tls() is context
    assert context.cert_store_stats()["x509_ca"] == 0
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname


async def test_tcp_socket(serve: Callable[..., Awaitable[int]], dead_port: int) -> None:
    """Success once a connection is accepted; a refused connection fails."""

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    port = await serve(accept)
    p = prober()
    assert (await p.attempt(Probe.model_validate({"tcpSocket": {"port": port}}))).ok
    got = await p.attempt(Probe.model_validate({"tcpSocket": {"port": dead_port}}))
    assert not got.ok and got.message.startswith(f"dial tcp 127.0.0.1:{dead_port}:"), got


async def test_exec_outcomes() -> None:
    """Exit 0 succeeds; otherwise the code and output; a timeout or error is a failure."""
    probe = Probe.model_validate({"exec": {"command": ["check"]}, "timeoutSeconds": 2})
    runtime = FakeRuntime((0, b"fine\n"))
    assert await prober(runtime).attempt(probe) == Outcome(True, "fine")
    assert runtime.calls == [("u1", "c", ["check"], 2.0)]
    runtime.exec_answer = (3, b"disk full\n")
    assert await prober(runtime).attempt(probe) == Outcome(False, "exit code 3: disk full")
    runtime.exec_answer = TimeoutError("command timed out after 2s")
    assert await prober(runtime).attempt(probe) == Outcome(False, "command timed out after 2s")


# --- the schedule ------------------------------------------------------------------------


class ScriptedProber:
    """Answers each kind's attempts from a script (then repeats the last answer). The
    kind is the probe's exec command."""

    def __init__(self, script: dict[str, list[bool]]) -> None:
        self.script = script
        self.count: dict[str, int] = {}
        self.attempted = asyncio.Event()

    async def attempt(self, probe: Probe) -> Outcome:
        assert probe.exec is not None
        kind = probe.exec.command[0]
        n = self.count[kind] = self.count.get(kind, 0) + 1
        self.attempted.set()
        answers = self.script[kind]
        return Outcome(answers[min(n, len(answers)) - 1], f"attempt {n}")


def fast(kind: str, **fields: Any) -> Probe:
    """A probe repeating every 10 ms (below the API's 1 s minimum: for tests only)."""
    probe = Probe.model_validate({"exec": {"command": [kind]}})
    return probe.model_copy(update={"period_seconds": 0.01, **fields})


class Run:
    """One ContainerProbes driven by a ScriptedProber, with what it reported."""

    def __init__(self, script: dict[str, list[bool]], **probes: Probe) -> None:
        self.prober = ScriptedProber(script)
        self.events: list[str] = []
        self.failures: list[Kind] = []
        container = Container.model_validate({"name": "c", "image": "x"}).model_copy(
            update={f"{kind}_probe": probe for kind, probe in probes.items()}
        )
        self.probes = ContainerProbes(
            self.prober,  # type: ignore[arg-type]
            container,
            running_for=0.0,
            on_change=lambda: None,
            on_event=self._event,
            on_failure=self._failed,
        )

    def _event(self, reason: str, message: str, kind: str) -> None:
        self.events.append(f"{kind} {reason}: {message}")

    async def _failed(self, kind: Kind) -> None:
        self.failures.append(kind)

    def count(self, kind: str) -> int:
        return self.prober.count.get(kind, 0)

    async def until(self, done: Callable[[], bool]) -> None:
        """Start the probes, wait (5 s at most) until `done()` or a kill, then close."""
        self.probes.start()
        try:
            async with asyncio.timeout(5):
                while not done() and not self.failures:
                    self.prober.attempted.clear()
                    await self.prober.attempted.wait()  # the outcome is handled by then
        finally:
            await self.probes.close()


async def test_startup_holds_liveness_back() -> None:
    """No liveness attempt before the startup probe's first success."""
    run = Run(
        {"startup": [False, False, True], "liveness": [True]},
        startup=fast("startup", failure_threshold=5),
        liveness=fast("liveness"),
    )
    assert not run.probes.started
    await run.until(lambda: run.count("liveness") >= 2)
    assert run.probes.started and not run.failures
    assert run.count("startup") == 3
    assert run.events == [
        "Warning Unhealthy: Startup probe failed: attempt 1",
        "Warning Unhealthy: Startup probe failed: attempt 2",
    ]


async def test_startup_failure_kills() -> None:
    """A startup probe failing failureThreshold times is a kill; liveness never ran."""
    run = Run(
        {"startup": [False], "liveness": [True]},
        startup=fast("startup", failure_threshold=3),
        liveness=fast("liveness"),
    )
    await run.until(lambda: False)
    assert run.failures == ["startup"] and not run.probes.started
    assert run.prober.count == {"startup": 3}


async def test_liveness_failure_kills_once() -> None:
    """failureThreshold failures in a row: one kill, and the probe stops."""
    run = Run(
        {"liveness": [True, False, False, True, False, False, False]},
        liveness=fast("liveness", failure_threshold=3),
    )
    assert run.probes.started and run.probes.ready  # no startup or readiness probe
    await run.until(lambda: False)
    assert run.failures == ["liveness"]
    assert run.count("liveness") == 7
    assert sum("Liveness probe failed" in e for e in run.events) == 5


async def test_readiness_flips_without_killing() -> None:
    """Ready after successThreshold successes; not ready after failureThreshold failures."""
    run = Run(
        {"readiness": [False, True, True, False]},
        readiness=fast("readiness", success_threshold=2, failure_threshold=1),
    )
    assert not run.probes.ready
    await run.until(lambda: run.probes.ready)
    assert run.count("readiness") == 3
    run = Run({"readiness": [True, False]}, readiness=fast("readiness", failure_threshold=2))
    await run.until(lambda: run.count("readiness") >= 4)
    assert not run.probes.ready and not run.failures
