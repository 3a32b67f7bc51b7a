"""Agent shutdown: the supervisor's tasks end before it returns, not after the runtime closed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, cast

import pytest

from agent import supervisor as supervisor_module
from agent.runtime.base import ContainerExit, ContainerInfo, Runtime
from agent.supervisor import Supervisor
from common.models import Pod


class WaitingRuntime:
    """Containers that start at once and run until their waiters are cancelled; a
    cancelled wait takes a few more loop turns to unwind (a fork server exchange ends)."""

    name = "fake"

    def __init__(self) -> None:
        self.unwound: list[str] = []

    async def create_pod(self, pod: Pod) -> None:
        pass

    async def ensure_image(self, pod: Pod, container: str, events: Any) -> None:
        pass

    async def start_container(self, pod: Pod, container: str) -> ContainerInfo:
        return ContainerInfo(container, "running", pid=1)

    async def wait_container(self, uid: str, container: str) -> ContainerExit:
        try:
            await asyncio.Event().wait()
        finally:
            for _ in range(3):
                await asyncio.sleep(0)
            self.unwound.append(container)
        raise AssertionError("unreachable")


def pod(name: str) -> Pod:
    return Pod.model_validate(
        {
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
            "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "x"}]},
        }
    )


async def test_close_waits_for_the_containers_tasks(tmp_path: Path) -> None:
    """close() cancelled them and returned at once: the runtime was closed while they still
    unwound (a start or a probe still talking to the fork server)."""
    runtime = WaitingRuntime()
    supervisor = Supervisor(cast(Runtime, runtime), tmp_path, lambda uid: None)
    await supervisor.apply([pod("p"), pod("q")], [])
    for _ in range(10):
        await asyncio.sleep(0)  # the containers start and wait
    tasks = [t for w in supervisor.workers.values() for t in w._tasks]
    assert len(tasks) == 4 and not any(t.done() for t in tasks)
    await supervisor.close()
    assert all(t.done() for t in tasks)
    assert sorted(runtime.unwound) == ["a", "a", "b", "b"]


class StuckStopRuntime(WaitingRuntime):
    """Containers whose stop never ends (a process that ignores SIGTERM, a long grace)."""

    async def stop_container(self, uid: str, container: str, grace: float) -> None:
        await asyncio.Event().wait()


async def test_close_waits_for_pods_being_stopped_only_so_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deletion in flight held the agent's shutdown for the pod's whole grace period:
    with 30 s, systemd (TimeoutStopSec=30s) SIGKILLed the agent. Now at most
    STOP_DRAIN_SECONDS; the pod is not said stopped, and the next agent stops it."""
    monkeypatch.setattr(supervisor_module, "STOP_DRAIN_SECONDS", 0.2)
    stopped: list[str] = []
    runtime = StuckStopRuntime()
    supervisor = Supervisor(cast(Runtime, runtime), tmp_path, lambda uid: None)
    supervisor.on_stopped = stopped.append
    await supervisor.apply([pod("p")], [])
    for _ in range(10):
        await asyncio.sleep(0)
    await supervisor.apply([], ["uid-p"])  # p deleted: its stop starts, and never ends
    for _ in range(10):
        await asyncio.sleep(0)
    assert "uid-p" in supervisor._stopping
    started = time.monotonic()
    await asyncio.wait_for(supervisor.close(), 5)
    assert 0.2 <= time.monotonic() - started < 2
    assert stopped == [] and supervisor._stopping == {}


async def test_stopping_pods_on_exit_kills_them_within_the_drain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With stop_pods_on_exit (`corral up`), a pod's 30 s grace outlasted the drain: a
    process ignoring SIGTERM was left running. Its grace is now cut to end in time."""
    grants: list[float] = []

    class Recording(WaitingRuntime):
        async def stop_container(self, uid: str, container: str, grace: float) -> None:
            grants.append(grace)

        async def remove_pod(self, uid: str) -> None:
            pass

    supervisor = Supervisor(cast(Runtime, Recording()), tmp_path, lambda uid: None)
    await supervisor.apply([pod("p")], [])
    for _ in range(10):
        await asyncio.sleep(0)
    await supervisor.close(stop_pods=True)
    limit = supervisor_module.STOP_DRAIN_SECONDS - supervisor_module.STOP_KILL_MARGIN
    assert grants == [limit, limit]  # both containers, within the drain
