"""Shared fixtures: the real corral-scheduler process, hollow agents, and a small HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import json
import os
import reprlib
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

if TYPE_CHECKING:
    from scheduler.config import SchedulerConfig

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-join-token"
ADMIN_TOKEN = "corral_test_admin-token-for-tests"


def stop_process(proc: subprocess.Popen[Any] | None, grace: float) -> int | None:
    """SIGTERM, then SIGKILL if it is still there after `grace` seconds; its exit code
    (None if there was no process)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def refused_as_second(daemon: str, module: str, args: list[str], state: Path, pid: int) -> None:
    """`python -m module *args`, a second daemon on the state directory of the one whose
    process is `pid`, exits 1 at once saying so (common/statelock.py), and starts nothing."""
    second = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1, second.stderr
    assert f"{daemon}: state directory {state} is in use by process {pid}" in second.stderr
    assert "Traceback" not in second.stderr and "listening" not in second.stdout


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll until `predicate()` is truthy and return it; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the condition may raise while the system converges
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last error: {last_exc!r})")


async def wait_until(
    predicate: Callable[[], Any], within: float = 15.0, interval: float = 0.05
) -> Any:
    """`wait_for` in async tests: polls without blocking the event loop. `predicate` may
    return an awaitable (an async probe, such as an API call), which is awaited each time."""
    last: Any = None
    deadline = asyncio.timeout(within)
    try:
        async with deadline:
            while True:  # polled: the conditions tests wait on have no event of their own
                value = predicate()
                if inspect.isawaitable(value):
                    value = await value
                if value:
                    return value
                last = value
                await asyncio.sleep(interval)
    except TimeoutError:
        if not deadline.expired():
            raise  # the predicate's own timeout (a request's), not ours
        shown = reprlib.repr(last)  # a long list or body, cut short
        raise AssertionError(f"condition not met within {within}s; last value {shown}") from None


def deployment_manifest(
    name: str, replicas: int, image: str = "nginx:1", **spec: Any
) -> dict[str, Any]:
    """An apps/v1 Deployment of `replicas` pods labelled app=`name` (100m CPU, 64Mi each)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": image,
                            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                        }
                    ]
                },
            },
            **spec,
        },
    }


@contextlib.asynccontextmanager
async def scheduler_in_process(
    config: SchedulerConfig,
) -> AsyncIterator[tuple[web.Application, web.AppRunner, str]]:
    """The scheduler's app served in this process on a loopback port, for tests that look
    at its objects: (app, runner, base URL); cleaned up on exit."""
    from scheduler.api.app import create_app

    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield app, runner, f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def cyclic_garbage_of(
    kind: type | tuple[type, ...], existing: frozenset[int] = frozenset()
) -> list[object]:
    """The objects of `kind` that only the cyclic collector could free, now, leaving out
    those whose id is in `existing` (what `collector_off` found before the work). Then all
    of that garbage is freed.

    For the scheduler's collector settings (common/heap.py): they freeze what a young
    collection finds alive, so a cycle alive then and garbage later is never freed."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return [o for o in gc.garbage if isinstance(o, kind) and id(o) not in existing]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.collect()  # what DEBUG_SAVEALL kept in gc.garbage, freed now


@contextlib.contextmanager
def collector_off() -> Iterator[frozenset[int]]:
    """The cyclic collector off for the block, so that every cycle the block makes is
    still there after it, once the garbage from before is out of the way. Yields the ids
    of every object tracked then: an earlier test's objects may turn to garbage only
    meanwhile (its loop let go late), and are not the block's."""
    cyclic_garbage_of(object)
    existing = frozenset(map(id, gc.get_objects()))
    gc.disable()
    try:
        yield existing
    finally:
        gc.enable()


class ApiResponse:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status, self.body, self.headers = status, body, headers

    def json(self) -> Any:
        return json.loads(self.body)


class SchedulerProcess:
    """A real `corral-scheduler` on a loopback port, with its own state directory."""

    def __init__(self, state_dir: Path, extra_args: list[str] | None = None) -> None:
        self.state_dir = state_dir
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.port = 0
        self.log_path = state_dir / "scheduler.log"
        self.token = ADMIN_TOKEN
        self.ssl_context: ssl.SSLContext | None = None  # set to talk to a TLS scheduler

    def start(self) -> None:
        port = self.port or 0
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scheduler.main",
                "--listen",
                f"127.0.0.1:{port}",
                "--state-dir",
                str(self.state_dir),
                "--join-token",
                TOKEN,
                "--admin-token",
                ADMIN_TOKEN,
                *self.extra_args,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        log.close()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "corral-scheduler listening on http://H:P"
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"scheduler did not start: {line!r}\n{self.log_path.read_text()}")
        self.url = line.strip().rsplit(" ", 1)[-1]
        self.port = int(self.url.rsplit(":", 1)[-1])
        wait_for(lambda: self.request("GET", "/readyz").status == 200, timeout=10)

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def stop(self) -> None:
        stop_process(self.proc, 15)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
        token: str | None = ADMIN_TOKEN,
    ) -> ApiResponse:
        """One request; authenticated as admin unless `token` says otherwise (None: none)."""
        data: bytes | None
        if body is None:
            data = None
        elif isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context) as resp:
                return ApiResponse(resp.status, resp.read(), dict(resp.headers))
        except urllib.error.HTTPError as err:
            return ApiResponse(err.code, err.read(), dict(err.headers))

    def get(self, path: str) -> Any:
        resp = self.request("GET", path)
        assert resp.status == 200, (resp.status, resp.body)
        return resp.json()


class HollowProcess:
    """`python -m agent.hollow` simulating `nodes` nodes against a scheduler."""

    def __init__(
        self,
        scheduler: SchedulerProcess,
        nodes: int,
        *args: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent.hollow",
                "--server",
                scheduler.url,
                "--token",
                TOKEN,
                "--nodes",
                str(nodes),
                *args,
            ],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=open(scheduler.state_dir / "hollow.log", "a"),
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def ready_nodes(scheduler: SchedulerProcess) -> list[str]:
    items = scheduler.get("/api/v1/nodes")["items"]
    return [
        n["metadata"]["name"]
        for n in items
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
    ]


@contextlib.contextmanager
def running_cluster(
    state_dir: Path, nodes: int, *hollow_args: str, scheduler_args: list[str] | None = None
) -> Iterator[SchedulerProcess]:
    """A scheduler with `nodes` hollow nodes (in one process, given `hollow_args`), all
    Ready; both stopped at the end. For a module's shared fixture."""
    sched = SchedulerProcess(state_dir, scheduler_args)
    sched.start()
    try:
        hollow = HollowProcess(sched, nodes, *hollow_args)
        try:
            wait_for(lambda: len(ready_nodes(sched)) == nodes, timeout=20)
            yield sched
        finally:
            hollow.stop()
    finally:
        sched.stop()


@pytest.fixture
def bare_scheduler(tmp_path: Path) -> Iterator[SchedulerProcess]:
    """A running scheduler with no agents."""
    sched = SchedulerProcess(tmp_path / "scheduler")
    sched.start()
    try:
        yield sched
    finally:
        sched.stop()


@pytest.fixture
def scheduler(bare_scheduler: SchedulerProcess) -> Iterator[SchedulerProcess]:
    """A running scheduler with three hollow nodes (4 CPU, 8Gi each) connected and Ready."""
    hollow = HollowProcess(bare_scheduler, 3)
    try:
        wait_for(lambda: len(ready_nodes(bare_scheduler)) == 3, timeout=20)
        yield bare_scheduler
    finally:
        hollow.stop()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback requests never go through a proxy from the environment."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("CORRAL_TOKEN", ADMIN_TOKEN)  # for `corral` run as a subprocess
    os.environ.setdefault("no_proxy", "127.0.0.1,localhost")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked `root` skip without root, except in CI (CI=true), where they fail."""
    if item.get_closest_marker("root") is not None and os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("this test needs root, and CI must run it (run the suite as root)")
        pytest.skip("needs root")
