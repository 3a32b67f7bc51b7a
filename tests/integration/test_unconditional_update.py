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
from collections.abc import AsyncIterator, Callable, Coroutine
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


# A replace or a patch of the object, setting these labels: (status, body).
Write = Callable[[dict[str, str]], Coroutine[Any, Any, tuple[int, dict[str, Any]]]]


async def created_and_settled(
    scheduler: Scheduler,
    client: aiohttp.ClientSession,
    collection: str,
    key: str,
    body: Any,
    settled: Any,
) -> str:
    """The object created with label v=0, once its controllers' own first writes are
    durable; its URL."""
    async with client.post(collection, json=body({"v": "0"})) as r:
        assert r.status == 201, await r.text()
        url = f"{collection}/{(await r.json())['metadata']['name']}"
    assert scheduler.store.latest(key) is not None, "the test's key is not the stored one"

    async def quiet() -> bool:
        async with client.get(url) as r:
            ready = bool(settled(await r.json()))
        return ready and await scheduler.store.settled(key) is not None

    await wait_until(quiet)
    return url


async def second_behind_a_queued_first(
    scheduler: Scheduler, key: str, write: Write, first: dict[str, str], second: dict[str, str]
) -> tuple[tuple[int, dict[str, Any]], tuple[int, dict[str, Any]]]:
    """`write(first)`, then `write(second)` while the first is queued but not durable:
    another SQLite connection holds the database's write lock meanwhile."""
    lock = sqlite3.connect(scheduler.db_path, timeout=5, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")  # the store's next commit waits (busy_timeout: 5 s)
        one = asyncio.create_task(write(first))
        # Queued, not durable: the store's newest value is the first write's.
        await wait_until(lambda: b'"v":"1"' in scheduler.store.latest(key).value)  # type: ignore[union-attr]
        two = asyncio.create_task(write(second))
        # Answered at once if it conflicts (the defect); else it waits for the first
        # write to be durable, which the lock holds back.
        await asyncio.wait({two}, timeout=1.5)
    finally:
        if lock.in_transaction:
            lock.execute("ROLLBACK")
        lock.close()
    return await one, await two


@pytest.mark.parametrize(
    ("collection", "key", "body", "settled"), KINDS, ids=["pod", "namespace", "deploy"]
)
async def test_replace_without_resource_version_waits_out_a_queued_write(
    scheduler: Scheduler, collection: str, key: str, body: Any, settled: Any
) -> None:
    auth = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession(scheduler.base, headers=auth) as client:
        url = await created_and_settled(scheduler, client, collection, key, body, settled)

        async def replace(labels: dict[str, str]) -> tuple[int, dict[str, Any]]:
            async with client.put(url, json=body(labels)) as r:
                return r.status, await r.json()

        (status1, obj1), (status2, obj2) = await second_behind_a_queued_first(
            scheduler, key, replace, {"v": "1"}, {"v": "2"}
        )
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
    auth = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession(scheduler.base, headers=auth) as client:
        url = await created_and_settled(scheduler, client, collection, key, body, settled)

        async def patch(labels: dict[str, str]) -> tuple[int, dict[str, Any]]:
            headers = {"Content-Type": "application/merge-patch+json"}
            data = json.dumps({"metadata": {"labels": labels}})
            async with client.patch(url, data=data, headers=headers) as r:
                return r.status, await r.json()

        (status1, obj1), (status2, obj2) = await second_behind_a_queued_first(
            scheduler, key, patch, {"v": "1"}, {"w": "2"}
        )
        assert (status1, status2) == (200, 200), (obj1, obj2)
        assert int(obj2["metadata"]["resourceVersion"]) > int(obj1["metadata"]["resourceVersion"])
        async with client.get(url) as r:
            labels = (await r.json())["metadata"]["labels"]
        assert (labels["v"], labels["w"]) == ("1", "2")
