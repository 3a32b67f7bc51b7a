"""A container whose runtime loses track of it, or whose supervision fails unforeseen:
shown and handled, never silently left."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from agent import supervisor as supervisor_module
from agent.restart import ANNOTATION_CAP, ANNOTATION_INITIAL
from agent.runtime.base import ContainerExit, ContainerInfo, Runtime, RuntimeFailure
from agent.supervisor import Supervisor
from common.models import Pod
from tests.conftest import wait_until


class FlakyWaitRuntime:
    """One container; its first `times` waits fail as `failure`, later ones wait for ever."""

    name = "fake"

    def __init__(self, failure: BaseException, times: int = 1) -> None:
        self.failures = [failure] * times
        self.starts = 0
        self.stops: list[float] = []

    async def create_pod(self, pod: Pod) -> None:
        pass

    async def ensure_image(self, pod: Pod, container: str, events: Any) -> None:
        pass

    async def start_container(self, pod: Pod, container: str) -> ContainerInfo:
        self.starts += 1
        return ContainerInfo(container, "running", pid=1)

    async def wait_container(self, uid: str, container: str) -> ContainerExit:
        if self.failures:
            raise self.failures.pop()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def stop_container(self, uid: str, container: str, grace: float) -> None:
        self.stops.append(grace)


def pod() -> Pod:
    return Pod.model_validate(
        {
            "metadata": {
                "name": "p",
                "namespace": "default",
                "uid": "uid-p",
                # restarted at once: the test waits on the restart, not on a backoff
                "annotations": {ANNOTATION_INITIAL: "0", ANNOTATION_CAP: "0"},
            },
            "spec": {"containers": [{"name": "a", "image": "x"}]},
        }
    )


async def supervised(runtime: FlakyWaitRuntime, tmp_path: Path) -> tuple[Supervisor, list[str]]:
    supervisor = Supervisor(cast(Runtime, runtime), tmp_path, lambda uid: None)
    events: list[str] = []
    supervisor.on_event = lambda pod, reason, message, kind: events.append(f"{reason}: {message}")
    await supervisor.apply([pod()], [])
    return supervisor, events


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor_module, "WAIT_RETRY_CAP", 0.01)


async def test_a_wait_that_fails_for_a_moment_is_tried_again(
    tmp_path: Path, quick_retries: None
) -> None:
    """A container runtime that does not answer for a moment (dockerd restarting): the
    container is waited for again, never killed."""
    runtime = FlakyWaitRuntime(RuntimeFailure("docker inspect: 500"), times=3)
    supervisor, events = await supervised(runtime, tmp_path)
    try:
        await wait_until(lambda: not runtime.failures, within=5)
        for _ in range(10):
            await asyncio.sleep(0.02)
        status = supervisor.status("uid-p")
        assert status is not None and status.container_statuses[0].state.running is not None
        assert runtime.starts == 1 and runtime.stops == []
        assert [e for e in events if "waiting for container a" in e], events
    finally:
        await supervisor.close()


async def test_a_container_the_runtime_lost_is_killed_and_restarted(
    tmp_path: Path, quick_retries: None
) -> None:
    """Its wait failed: the task ended there, and the container was supervised no more,
    shown running for good. Now, once waits have failed WAIT_RETRIES times more, it is
    killed to be sure, terminated as the kubelet says it (ContainerStatusUnknown, 137),
    and the restart policy applies."""
    failure = RuntimeFailure("no exit record and no monitor for container a")
    runtime = FlakyWaitRuntime(failure, times=supervisor_module.WAIT_RETRIES + 1)
    supervisor, events = await supervised(runtime, tmp_path)
    try:
        await wait_until(lambda: runtime.starts == 2, within=5)
        status = supervisor.status("uid-p")
        assert status is not None
        (container,) = status.container_statuses
        assert container.restart_count == 1 and container.state.running is not None
        last = container.last_state.terminated
        assert last is not None and last.exit_code == 137
        assert last.reason == "ContainerStatusUnknown" and "no exit record" in (last.message or "")
        assert runtime.stops == [0]  # killed before it was started again
        assert any("lost track of container a" in e for e in events), events
    finally:
        await supervisor.close()


async def test_an_unforeseen_failure_is_shown_on_the_container(tmp_path: Path) -> None:
    """A bug in supervising a container ended its task with "Task exception was never
    retrieved", the pod still showing the container running. Now it is logged, shown as
    RunContainerError with the error, and a Warning event says so."""
    runtime = FlakyWaitRuntime(ValueError("a bug"))
    supervisor, events = await supervised(runtime, tmp_path)
    try:

        def shown() -> bool:
            status = supervisor.status("uid-p")
            waiting = status.container_statuses[0].state.waiting if status else None
            return waiting is not None and waiting.reason == "RunContainerError"

        await wait_until(shown, within=5)
        status = supervisor.status("uid-p")
        assert status is not None
        waiting = status.container_statuses[0].state.waiting
        assert waiting is not None and "ValueError('a bug')" in (waiting.message or "")
        assert any("ValueError('a bug')" in e for e in events), events
        assert runtime.starts == 1
    finally:
        await supervisor.close()
