"""Hollow agents against the real corral-scheduler process: join, run, delete, resync, crash.

The scheduler runs as a subprocess (the `bare_scheduler` fixture); the hollow
nodes run in the test's event loop through `HollowCluster`, so every API call
here goes through aiohttp and never blocks the loop the nodes live on.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from agent.hollow import HollowCluster, HollowOptions
from tests.conftest import (
    ADMIN_TOKEN,
    TOKEN,
    HollowProcess,
    SchedulerProcess,
    ready_nodes,
    wait_for,
    wait_until,
)

pytestmark = pytest.mark.slow


def pod_manifest(name: str, restart_policy: str = "Always") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": restart_policy,
            "containers": [
                {
                    "name": "app",
                    "image": "pause",
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                }
            ],
        },
    }


class Api:
    """A small async client of the scheduler's HTTP API."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with self.session.request(method, self.base + path, json=body, headers=auth) as resp:
            return resp.status, await resp.json(content_type=None)

    async def ready_nodes(self) -> set[str]:
        _, body = await self.call("GET", "/api/v1/nodes")
        return {
            n["metadata"]["name"]
            for n in body["items"]
            if any(
                c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"]
            )
        }

    async def pod(self, name: str) -> dict[str, Any] | None:
        status, body = await self.call("GET", f"/api/v1/namespaces/default/pods/{name}")
        return body if status == 200 else None


@pytest.fixture
async def api(bare_scheduler: SchedulerProcess) -> AsyncIterator[Api]:
    """An async API client of the real scheduler."""
    async with aiohttp.ClientSession() as session:
        yield Api(session, bare_scheduler.url)


def running(pod: dict[str, Any] | None) -> bool:
    return pod is not None and pod["status"].get("phase") == "Running"


async def test_nodes_join_and_run_then_delete_a_pod(
    bare_scheduler: SchedulerProcess, api: Api
) -> None:
    """Three hollow nodes become Ready; a pod is bound, Running, and deleted through its node."""
    async with HollowCluster(bare_scheduler.url, TOKEN, 3, prefix="it") as cluster:
        await cluster.wait_connected(15)
        names = {"it-0000", "it-0001", "it-0002"}
        await wait_until(lambda: _equals(api.ready_nodes(), names))

        status, _ = await api.call("POST", "/api/v1/namespaces/default/pods", pod_manifest("web"))
        assert status == 201
        pod = await wait_until(lambda: _when(api.pod("web"), running))
        node_name = pod["spec"]["nodeName"]
        assert node_name in names
        container = pod["status"]["containerStatuses"][0]
        assert container["ready"] is True and "running" in container["state"]
        node = next(n for n in cluster.nodes if n.name == node_name)
        assert pod["metadata"]["uid"] in node.pods

        status, _ = await api.call("DELETE", "/api/v1/namespaces/default/pods/web")
        assert status == 200
        await wait_until(lambda: _is_none(api.pod("web")))  # removed once the node said stopped
        assert node.pods == {}


async def test_nodes_resync_after_a_scheduler_restart(
    bare_scheduler: SchedulerProcess, api: Api
) -> None:
    """After the scheduler is killed and restarted, nodes reconnect and keep their pod."""
    async with HollowCluster(bare_scheduler.url, TOKEN, 2, prefix="rs") as cluster:
        await cluster.wait_connected(15)
        await api.call("POST", "/api/v1/namespaces/default/pods", pod_manifest("keep"))
        before = await wait_until(lambda: _when(api.pod("keep"), running))

        await asyncio.to_thread(bare_scheduler.kill, signal.SIGKILL)
        if bare_scheduler.proc is not None and bare_scheduler.proc.stdout is not None:
            bare_scheduler.proc.stdout.close()  # start() below opens a new process and pipe
        await wait_until(lambda: not any(n.connected.is_set() for n in cluster.nodes))
        await asyncio.to_thread(bare_scheduler.start)  # same port, same state directory
        await cluster.wait_connected(20)
        assert all(n.connects == 2 for n in cluster.nodes)

        after = await wait_until(lambda: _when(api.pod("keep"), running))
        assert after["metadata"]["uid"] == before["metadata"]["uid"]
        assert after["spec"]["nodeName"] == before["spec"]["nodeName"]
        owner = next(n for n in cluster.nodes if n.name == after["spec"]["nodeName"])
        assert set(owner.pods) == {after["metadata"]["uid"]}


async def test_crash_injection_is_reported(bare_scheduler: SchedulerProcess, api: Api) -> None:
    """Injected crashes reach the API: Never ends Failed (Error, 1), Always restarts."""
    options = HollowOptions(crash_rate=1.0, crash_after=0.3)
    async with HollowCluster(bare_scheduler.url, TOKEN, 1, options, prefix="cr") as cluster:
        await cluster.wait_connected(15)
        await api.call("POST", "/api/v1/namespaces/default/pods", pod_manifest("once", "Never"))
        await api.call("POST", "/api/v1/namespaces/default/pods", pod_manifest("loop"))

        failed = await wait_until(
            lambda: _when(api.pod("once"), lambda p: p["status"].get("phase") == "Failed")
        )
        terminated = failed["status"]["containerStatuses"][0]["state"]["terminated"]
        assert (terminated["exitCode"], terminated["reason"]) == (1, "Error")

        def restarted(pod: dict[str, Any] | None) -> bool:
            statuses = (pod or {}).get("status", {}).get("containerStatuses") or [{}]
            return running(pod) and statuses[0].get("restartCount", 0) >= 1

        looping = await wait_until(lambda: _when(api.pod("loop"), restarted))
        last = looping["status"]["containerStatuses"][0]["lastState"]["terminated"]
        assert (last["exitCode"], last["reason"]) == (1, "Error")


def test_hollow_process_exits_zero_on_sigterm(bare_scheduler: SchedulerProcess) -> None:
    """`python -m agent.hollow` brings its nodes up and exits 0 on SIGTERM."""
    hollow = HollowProcess(bare_scheduler, 5, "--name-prefix", "proc", "--zones", "2")
    try:
        wait_for(lambda: len(ready_nodes(bare_scheduler)) == 5, timeout=20)
        zones = {
            n["metadata"]["labels"].get("topology.kubernetes.io/zone")
            for n in bare_scheduler.get("/api/v1/nodes")["items"]
        }
        assert zones == {"zone-0", "zone-1"}
    finally:
        hollow.stop(signal.SIGTERM)
    assert hollow.proc.returncode == 0


async def _equals(value: Awaitable[Any], expected: Any) -> bool:
    return await value == expected


async def _when(value: Awaitable[Any], predicate: Callable[[Any], bool]) -> Any:
    result = await value
    return result if predicate(result) else None


async def _is_none(value: Awaitable[Any]) -> bool:
    return await value is None
