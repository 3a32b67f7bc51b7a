"""The scheduler's work leaves nothing that only a full garbage collection could free.

Its collector settings (common/heap.py) freeze whatever a young collection finds alive,
so a reference cycle that is alive then and garbage later stays for good: a busy
scheduler would keep some of every such cycle its requests or controllers make. Here
the collector is off while the work is done, so every cycle it made is still there to
be found. The scheduler runs in this process (a real aiohttp server, control plane and
store), its client in the same process, hollow agents in a process of their own
(test_link_reset.py does the same for agents killed mid-link).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.web_urldispatcher import SystemRoute

from scheduler.api.common import CONTROL_PLANE
from scheduler.cluster import ClusterState
from scheduler.config import SchedulerConfig
from tests.conftest import (
    ROOT,
    collector_off,
    cyclic_garbage_of,
    deployment_manifest,
    scheduler_in_process,
    wait_until,
)

ADMIN = "corral_cycles_admin_token"
JOIN = "corral-cycles-join-token"
NODES = 3


def a_pod(name: str, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "busybox"}], **spec},
    }


@dataclass
class Scheduler:
    base: str
    cluster: ClusterState
    server: web.Server  # its `connections`: a request is let go when its connection ends


@pytest.fixture
async def scheduler(tmp_path: Path) -> AsyncIterator[Scheduler]:
    config = SchedulerConfig(
        state_dir=str(tmp_path / "state"),
        admin_token=ADMIN,
        join_token=JOIN,
        max_body_bytes=64 * 1024,
    )
    async with scheduler_in_process(config) as (app, runner, base):
        assert runner.server is not None
        yield Scheduler(base, app[CONTROL_PLANE].cluster, runner.server)


async def test_failed_requests_are_freed_without_the_cyclic_collector(
    scheduler: Scheduler,
) -> None:
    """aiohttp's router keeps the 404 or 405 it raised on the request (`match_info`), and
    that error's traceback held the frames that hold the request; an error aiohttp
    answers with itself (a 417 for an unknown `Expect`) held the frame that held it.
    Each request on a connection of its own: a connection keeps its last request until
    the next one comes, so a kept-alive one would hide the last request's cycle."""
    base, server = scheduler.base, scheduler.server
    pods = f"{base}/api/v1/namespaces/default/pods"
    auth = {"Authorization": f"Bearer {ADMIN}"}
    as_json = {**auth, "Content-Type": "application/json"}
    failing = [
        ("GET", f"{base}/api/v1/no-such-resource", auth, None, 404),  # the router's 404
        ("PUT", f"{base}/api/v1/nodes", auth, None, 405),  # the router's 405
        ("GET", f"{pods}/missing", auth, None, 404),
        ("POST", pods, as_json, b"{not json", 400),
        ("POST", pods, as_json, b'{"kind": "Pod", "apiVersion": "v1", "metadata": {}}', 422),
        ("POST", pods, as_json, b"x" * (128 * 1024), 413),
        ("GET", pods, {}, None, 401),
        ("GET", f"{base}/healthz", {"Expect": "bogus"}, None, 417),  # before any middleware
    ]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client:
        async with client.post(pods, json=a_pod("web"), headers=auth) as created:
            assert created.status == 201
        failing.append(("POST", pods, as_json, b'{"apiVersion": "v1", "kind": "Pod", '
                        b'"metadata": {"name": "web"}, "spec": {"containers": '
                        b'[{"name": "app", "image": "busybox"}]}}', 409))  # fmt: skip
        with collector_off() as existing:  # all a request's cycles are left for the check
            for method, url, headers, body, status in failing:
                async with client.request(method, url, headers=headers, data=body) as r:
                    await r.read()
                    assert r.status == status, (method, url, r.status)
            await wait_until(lambda: not server.connections, within=10)
            # Nor the route aiohttp's router makes for each 404 or 405 (its handler its
            # own bound method): about 1 KiB a request, kept for good once frozen.
            assert cyclic_garbage_of((web.Request, SystemRoute), existing) == []


def a_job(name: str) -> dict[str, Any]:
    """Two completions, two at a time; its pods' first runs fail (the hollow agents'
    --fail-first, grouped by the label `flaky`), so it retries before it completes."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completions": 2,
            "parallelism": 2,
            "backoffLimit": 6,
            "template": {
                "metadata": {"labels": {"flaky": name}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "work", "image": "busybox"}],
                },
            },
        },
    }


async def test_workloads_lives_leave_no_cycle(scheduler: Scheduler, tmp_path: Path) -> None:
    """A Deployment created, run by hollow agents (binds, desired frames, status
    reports, events), scaled down, listed and deleted, and a Job whose pods fail, are
    replaced, complete and are deleted with it: the controllers, the hub and the API
    make no cycle along the way. The first two lives warm up what is built once
    (validators, caches); the third must leave nothing."""
    base, cluster = scheduler.base, scheduler.cluster
    deployments = f"{base}/apis/apps/v1/namespaces/default/deployments"
    jobs = f"{base}/apis/batch/v1/namespaces/default/jobs"
    hollow_log = tmp_path / "hollow.log"
    with hollow_log.open("wb") as log:  # the child keeps its own descriptor
        hollow = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "agent.hollow", "--server", base, "--token", JOIN),
            *("--nodes", str(NODES), "--ramp-seconds", "0", "--complete-after", "0.2"),
            *("--fail-first", "1", "--fail-first-key", "flaky"),
            cwd=ROOT, stdout=log, stderr=log,
        )  # fmt: skip

    def running(count: int) -> bool:
        phases = [p.status.phase for p in cluster.pods.values()]
        return len(phases) == count and all(phase == "Running" for phase in phases)

    async def life(client: aiohttp.ClientSession, name: str) -> None:
        async with client.post(deployments, json=deployment_manifest(name, 6)) as r:
            assert r.status == 201, await r.text()
        await wait_until(lambda: running(6), within=30)
        scale = {"apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": 2}}
        scale["metadata"] = {"name": name}
        async with client.put(f"{deployments}/{name}/scale", json=scale) as r:
            assert r.status == 200, await r.text()
        await wait_until(lambda: running(2), within=30)
        for path in (f"/api/v1/namespaces/default/pods?labelSelector=app%3D{name}",
                     "/api/v1/namespaces/default/events", "/api/v1/status"):  # fmt: skip
            async with client.get(base + path) as r:
                assert r.status == 200, await r.text()
        async with client.delete(f"{deployments}/{name}") as r:
            assert r.status == 200, await r.text()
        await wait_until(lambda: not cluster.pods, within=30)
        async with client.post(jobs, json=a_job(name)) as r:
            assert r.status == 201, await r.text()

        async def complete() -> dict[str, Any] | None:
            async with client.get(f"{jobs}/{name}") as r:
                status: dict[str, Any] = (await r.json())["status"]
            done = any(c["type"] == "Complete" for c in status.get("conditions", []))
            return status if done else None

        status = await wait_until(complete, within=30)
        assert (status["succeeded"], status["failed"]) == (2, 1)  # a failure was replaced
        async with client.delete(f"{jobs}/{name}?propagationPolicy=Background") as r:
            assert r.status == 200, await r.text()
        await wait_until(lambda: not cluster.pods, within=30)

    try:
        await wait_until(lambda: len(cluster.nodes) == NODES, within=30)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"}) as client:
            await life(client, "warm-1")
            await life(client, "warm-2")
            with collector_off() as existing:
                await life(client, "web")
                # A connection keeps its last request until the next one (see the test
                # above): one more, so that the life's last request is let go too. (Not a
                # connection each, as above: asyncio's own transports, which the
                # scheduler's uvloop does not use, are a cycle each.)
                async with client.get(f"{base}/healthz") as r:
                    assert r.status == 200
                assert cyclic_garbage_of(object, existing) == []
    except BaseException:  # a hollow that failed to start shows only as a timeout above
        print("hollow agents' output:\n" + hollow_log.read_text(errors="replace")[-4000:])
        raise
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have exited on its own
            hollow.kill()
        await hollow.wait()
