"""A replace without `metadata.resourceVersion` is unconditional, as in Kubernetes: a write
of the object that is queued but not yet durable when it comes (a status report, a
controller's status) is waited out and the replace made on top of it, not answered 409.

The scheduler runs in this process (a real aiohttp server, control plane and SQLite
store) so that the test can see a write queued; another SQLite connection holding the
database's write lock keeps that write from becoming durable meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from scheduler.api.common import CONTROL_PLANE
from scheduler.config import SchedulerConfig
from scheduler.kinds import DEPLOYMENTS, NAMESPACES
from scheduler.objects import pod_key
from scheduler.store import SqliteStore
from tests.conftest import deployment_manifest, scheduler_in_process, wait_until

ADMIN = "corral_unconditional_admin_token"


@dataclass
class Scheduler:
    base: str
    store: SqliteStore
    db_path: Path


@pytest.fixture
async def scheduler(tmp_path: Path) -> AsyncIterator[Scheduler]:
    config = SchedulerConfig(
        state_dir=str(tmp_path / "state"), admin_token=ADMIN, join_token="corral-join-token"
    )
    async with scheduler_in_process(config) as (app, _, base):
        store = app[CONTROL_PLANE].store
        assert isinstance(store, SqliteStore)
        yield Scheduler(base, store, tmp_path / "state" / "state.db")


def _pod(labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }


def _namespace(labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team", "labels": labels}}


def _deployment(labels: dict[str, str]) -> dict[str, Any]:
    manifest = deployment_manifest("d", 0)
    manifest["metadata"]["labels"] = labels
    return manifest


def _pod_placed(pod: dict[str, Any]) -> bool:  # tried: no node fits it (there are none)
    return any(c["type"] == "PodScheduled" for c in pod["status"].get("conditions", []))


def _deployment_seen(deployment: dict[str, Any]) -> bool:
    return deployment["status"].get("observedGeneration") == 1


# (collection, store key, body with labels, whether its controllers are done writing it)
KINDS = [
    ("/api/v1/namespaces/default/pods", pod_key("default", "p"), _pod, _pod_placed),
    ("/api/v1/namespaces", NAMESPACES.key(None, "team"), _namespace, lambda _: True),
    (
        "/apis/apps/v1/namespaces/default/deployments",
        DEPLOYMENTS.key("default", "d"),
        _deployment,
        _deployment_seen,
    ),
]


@pytest.mark.parametrize(
    ("collection", "key", "body", "settled"), KINDS, ids=["pod", "namespace", "deploy"]
)
async def test_replace_without_resource_version_waits_out_a_queued_write(
    scheduler: Scheduler, collection: str, key: str, body: Any, settled: Any
) -> None:
    store = scheduler.store
    auth = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession(scheduler.base, headers=auth) as client:
        async with client.post(collection, json=body({"v": "0"})) as r:
            assert r.status == 201, await r.text()
            url = f"{collection}/{(await r.json())['metadata']['name']}"
        assert store.latest(key) is not None, "the test's key is not the stored one"

        async def quiet() -> bool:  # the controllers' own first writes are durable
            async with client.get(url) as r:
                return bool(settled(await r.json())) and await store.settled(key) is not None

        await wait_until(quiet)

        async def replace(labels: dict[str, str]) -> tuple[int, dict[str, Any]]:
            async with client.put(url, json=body(labels)) as r:
                return r.status, await r.json()

        lock = sqlite3.connect(scheduler.db_path, timeout=5, isolation_level=None)
        try:
            lock.execute("BEGIN IMMEDIATE")  # the store's next commit waits (busy_timeout: 5 s)
            first = asyncio.create_task(replace({"v": "1"}))
            # Queued, not durable: the store's newest value is the first replace's.
            await wait_until(lambda: b'"v":"1"' in store.latest(key).value)  # type: ignore[union-attr]
            second = asyncio.create_task(replace({"v": "2"}))
            # Answered at once if it conflicts (the defect); else it waits for the first
            # write to be durable, which the lock holds back.
            await asyncio.wait({second}, timeout=1.5)
        finally:
            if lock.in_transaction:
                lock.execute("ROLLBACK")
            lock.close()
        status1, obj1 = await first
        status2, obj2 = await second
        assert status1 == 200, obj1
        assert status2 == 200, obj2
        assert int(obj2["metadata"]["resourceVersion"]) > int(obj1["metadata"]["resourceVersion"])
        async with client.get(url) as r:
            assert (await r.json())["metadata"]["labels"]["v"] == "2"


@pytest.mark.parametrize(
    ("collection", "key", "body", "settled"), KINDS, ids=["pod", "namespace", "deploy"]
)
async def test_patch_without_resource_version_applies_on_top_of_a_queued_write(
    scheduler: Scheduler, collection: str, key: str, body: Any, settled: Any
) -> None:
    """A patch that loses to a queued write is applied again to the object that write made
    (its label kept with the patch's), not answered 409 nor applied to the older one."""
    store = scheduler.store
    auth = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession(scheduler.base, headers=auth) as client:
        async with client.post(collection, json=body({"v": "0"})) as r:
            assert r.status == 201, await r.text()
            url = f"{collection}/{(await r.json())['metadata']['name']}"

        async def quiet() -> bool:
            async with client.get(url) as r:
                return bool(settled(await r.json())) and await store.settled(key) is not None

        await wait_until(quiet)

        async def patch(labels: dict[str, str]) -> tuple[int, dict[str, Any]]:
            headers = {"Content-Type": "application/merge-patch+json"}
            data = json.dumps({"metadata": {"labels": labels}})
            async with client.patch(url, data=data, headers=headers) as r:
                return r.status, await r.json()

        lock = sqlite3.connect(scheduler.db_path, timeout=5, isolation_level=None)
        try:
            lock.execute("BEGIN IMMEDIATE")  # the store's next commit waits (busy_timeout: 5 s)
            first = asyncio.create_task(patch({"v": "1"}))
            await wait_until(lambda: b'"v":"1"' in store.latest(key).value)  # type: ignore[union-attr]
            second = asyncio.create_task(patch({"w": "2"}))
            await asyncio.wait({second}, timeout=1.5)
        finally:
            if lock.in_transaction:
                lock.execute("ROLLBACK")
            lock.close()
        status1, obj1 = await first
        status2, obj2 = await second
        assert (status1, status2) == (200, 200), (obj1, obj2)
        assert int(obj2["metadata"]["resourceVersion"]) > int(obj1["metadata"]["resourceVersion"])
        async with client.get(url) as r:
            labels = (await r.json())["metadata"]["labels"]
        assert (labels["v"], labels["w"]) == ("1", "2")
