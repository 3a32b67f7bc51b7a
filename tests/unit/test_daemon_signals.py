"""SIGTERM while a daemon starts: it stops the start and exits 0, as it does once running."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiohttp import web

from scheduler.config import SchedulerConfig
from scheduler.main import _serve


@pytest.fixture
def sigterm_caught() -> Iterator[list[int]]:
    """SIGTERM to this process caught (a code without its own handler yet must not kill
    the test run); the handler before restored after."""
    caught: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda sig, frame: caught.append(sig))
    try:
        yield caught
    finally:
        signal.signal(signal.SIGTERM, previous)


async def serve_until_sigterm(
    app: web.Application, started: asyncio.Event, serving_for: float = 0.0
) -> None:
    """The scheduler's `_serve(app)`, sent SIGTERM `serving_for` seconds after `started`;
    it must return within 5 s."""
    config = cast(SchedulerConfig, SimpleNamespace(host="127.0.0.1", port=0))
    serving = asyncio.create_task(_serve(app, config, None))
    try:
        await asyncio.wait_for(started.wait(), 5)
        await asyncio.sleep(serving_for)
        assert not serving.done(), serving
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(asyncio.shield(serving), 5)
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)


async def test_scheduler_stops_while_its_control_plane_starts(
    sigterm_caught: list[int],
) -> None:
    """A SIGTERM while the store loads (about 1 s for 10,000 pods) killed the scheduler
    outright (exit status -15): its handler came only after the start. Now the start is
    cancelled, undoes itself, and the scheduler returns (exit 0)."""
    started, undone = asyncio.Event(), asyncio.Event()

    async def slow_start(app: web.Application) -> AsyncIterator[None]:
        started.set()
        try:
            await asyncio.sleep(3600)  # a store that takes long to load
        finally:
            undone.set()
        yield

    app = web.Application()
    app.cleanup_ctx.append(slow_start)
    await serve_until_sigterm(app, started)
    assert undone.is_set()
    assert not sigterm_caught  # the scheduler's own handler had it


async def test_scheduler_answers_sigterm_once_serving(sigterm_caught: list[int]) -> None:
    """The usual case, for comparison: started, then stopped by SIGTERM."""
    events: list[str] = []
    started = asyncio.Event()

    async def lifetime(app: web.Application) -> AsyncIterator[Any]:
        events.append("started")
        started.set()
        yield
        events.append("stopped")

    app = web.Application()
    app.cleanup_ctx.append(lifetime)

    class Plane:
        ready = False  # what the status line and the watchdog read of it

    from scheduler.api.common import CONTROL_PLANE

    app[CONTROL_PLANE] = cast(Any, Plane())
    await serve_until_sigterm(app, started, serving_for=0.1)
    assert events == ["started", "stopped"] and not sigterm_caught


async def test_agent_stops_while_it_starts(
    sigterm_caught: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGTERM while the agent started (its imports, the fork server: 0.5-1 s) killed it
    outright (exit status -15): its handler came after. Now it stops: no pod adopted, no
    link dialled, the runtime closed, the state directory let go."""
    import agent.delegation
    import agent.runtime.native.cgroups
    import agent.runtime.setup
    from agent.config import AgentConfig
    from agent.main import run

    calls: list[str] = []

    class SlowRuntime:
        """A runtime whose start takes long (a fork server starting on a busy node)."""

        async def start(self) -> None:
            calls.append("start")
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(0.2)

        async def recover(self) -> list[Any]:
            calls.append("recover")
            return []

        async def close(self) -> None:
            calls.append("close")

    monkeypatch.setattr(agent.delegation, "pods_parent", lambda parent, delegated: parent)
    monkeypatch.setattr(
        agent.runtime.native.cgroups,
        "probe",
        lambda parent: SimpleNamespace(version=2, remove_parent_if_empty=lambda: False),
    )
    monkeypatch.setattr(agent.runtime.setup, "build_runtime", lambda *args: SlowRuntime())
    config = AgentConfig(
        server="http://127.0.0.1:9", node_name="n", state_dir=str(tmp_path), metrics_listen=""
    )
    await asyncio.wait_for(run(config, "token"), 10)
    assert calls == ["start", "close"]
    assert not sigterm_caught  # the agent's own handler had it
    lock = os.open(tmp_path / "lock", os.O_RDWR)
    try:
        fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # let go
    finally:
        os.close(lock)


@pytest.mark.parametrize(
    ("stop_pods", "said"), [(True, "stopping its pods"), (False, "pods keep running")]
)
async def test_agent_says_what_becomes_of_its_pods_on_shutdown(
    sigterm_caught: list[int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    stop_pods: bool,
    said: str,
) -> None:
    """The agent of `corral up` (stop_pods_on_exit) logged "shutting down; pods keep
    running" and then stopped every pod: its log must say which of the two it does."""
    import agent.delegation
    import agent.runtime.native.cgroups
    import agent.runtime.setup
    from agent.config import AgentConfig
    from agent.main import run

    class IdleRuntime:
        """A runtime with no pods; SIGTERM comes once the agent runs."""

        async def start(self) -> None:
            asyncio.get_running_loop().call_later(0.3, os.kill, os.getpid(), signal.SIGTERM)

        async def recover(self) -> list[Any]:
            return []

        async def known_pods(self) -> set[str]:
            return set()

        async def close(self) -> None:
            pass

    monkeypatch.setattr(agent.delegation, "pods_parent", lambda parent, delegated: parent)
    monkeypatch.setattr(
        agent.runtime.native.cgroups,
        "probe",
        lambda parent: SimpleNamespace(
            version=2, parent=parent, paths=lambda path: [], remove_parent_if_empty=lambda: False
        ),
    )
    monkeypatch.setattr(agent.runtime.setup, "build_runtime", lambda *args: IdleRuntime())
    config = AgentConfig(
        server="http://127.0.0.1:9",
        node_name="n",
        state_dir=str(tmp_path),
        metrics_listen="",
        stop_pods_on_exit=stop_pods,
    )
    caplog.set_level("INFO", logger="agent")
    await asyncio.wait_for(run(config, "token"), 10)
    assert not sigterm_caught
    shutdown = [r.getMessage() for r in caplog.records if "shutting down" in r.getMessage()]
    assert shutdown == [f"shutting down; {said}"]
