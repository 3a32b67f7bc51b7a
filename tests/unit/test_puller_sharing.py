"""Pulls of one image share the first one's work; its cancellation is not theirs."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from agent.runtime.native.puller import ImagePuller, PullResult


class SlowPuller(ImagePuller):
    """`_pull` takes a while and counts its calls (no registry, no store)."""

    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Future[PullResult]] = {}
        self.calls = 0
        self.release = asyncio.Event()

    async def _pull(self, ref: Any, progress: Any) -> PullResult:
        self.calls += 1
        await self.release.wait()
        return cast(PullResult, f"pulled {ref}")


async def test_a_shared_pull_cancelled_with_its_pod_is_pulled_again_by_the_others() -> None:
    """The pod whose start ran the pull was removed meanwhile: its task was cancelled. The
    other pods of that image got its CancelledError as their own, and their containers'
    tasks ended there (ContainerCreating for good); now one of them pulls again."""
    puller = SlowPuller()
    first = asyncio.create_task(puller.pull("busybox"))
    await asyncio.sleep(0)
    shared = [asyncio.create_task(puller.pull("busybox")) for _ in range(2)]
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0.01)
    puller.release.set()
    results = await asyncio.wait_for(asyncio.gather(*shared), 5)
    assert all(r == "pulled docker.io/library/busybox:latest" for r in results), results
    assert first.cancelled() and puller.calls == 2  # one pull again, shared by both


async def test_a_waiter_cancelled_itself_is_cancelled() -> None:
    puller = SlowPuller()
    first = asyncio.create_task(puller.pull("busybox"))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(puller.pull("busybox"))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    puller.release.set()
    assert await first == "pulled docker.io/library/busybox:latest"
    assert puller.calls == 1


async def test_docker_shared_pull_cancelled_with_its_pod_is_pulled_again() -> None:
    """The Docker runtime shares `docker pull`s the same way, with the same fault."""
    from agent.runtime.docker.runtime import DockerRuntime

    runtime = object.__new__(DockerRuntime)  # only its pulls: no dockerd, no cgroups
    runtime._pulls = {}
    release = asyncio.Event()
    calls: list[str] = []

    async def pull_now(image: str) -> None:
        calls.append(image)
        await release.wait()

    runtime._pull_now = pull_now  # type: ignore[method-assign]
    first = asyncio.create_task(runtime._pull("busybox"))
    await asyncio.sleep(0)
    shared = asyncio.create_task(runtime._pull("busybox"))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0.01)
    release.set()
    await asyncio.wait_for(shared, 5)
    assert first.cancelled() and calls == ["busybox", "busybox"]
