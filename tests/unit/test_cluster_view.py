"""The cluster view against a real store: what it keeps of the versions it has applied."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.models import Pod, now
from scheduler.cluster import ClusterState
from scheduler.objects import decode, encode, pod_key, replaced
from scheduler.store import Event, Op, SqliteStore


@pytest.fixture
async def view(tmp_path: Path) -> AsyncIterator[tuple[SqliteStore, ClusterState]]:
    store = await SqliteStore.open(tmp_path / "corral.db")
    cluster = ClusterState(store)
    await cluster.load()
    task = asyncio.create_task(cluster.run())
    try:
        yield store, cluster
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


def new_pod(name: str) -> Pod:
    pod = Pod.model_validate(
        {
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]},
        }
    )
    pod.metadata.creation_timestamp = now()
    return pod


async def applied(cluster: ClusterState, revision: int) -> None:
    for _ in range(1000):
        if cluster.revision >= revision:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"the cluster view never reached revision {revision}")


async def history(store: SqliteStore, key: str) -> list[Event]:
    """Every event of `key` the store still keeps, oldest first, without waiting."""
    watch = store.watch(key, 0)
    events: list[Event] = []
    try:
        async with asyncio.timeout(0.2):
            async for event in watch:
                events.append(event)
    except TimeoutError:
        pass
    finally:
        watch.close()
    return events


async def test_superseded_versions_keep_their_bytes_not_their_objects(
    view: tuple[SqliteStore, ClusterState],
) -> None:
    store, cluster = view
    key = pod_key("default", "web")
    pod = new_pod("web")
    [created] = await store.txn([Op("put", key, encode(pod), pod, expect=0)])
    running = replaced(pod, {"status": pod.status.model_copy(update={"phase": "Running"})})
    [updated] = await store.txn(
        [Op("put", key, encode(running), running, expect=created.mod_revision)]
    )
    await applied(cluster, updated.mod_revision)

    assert cluster.pods[key] is running  # the current version keeps its object
    assert updated.obj is running
    first, second = await history(store, key)
    assert first.kv is created and second.prev is created
    # The superseded version is bytes only; a late reader of the history decodes it again.
    assert created.obj is None
    assert decode(created, Pod).status.phase == "Pending"
    assert decode(second.kv, Pod).status.phase == "Running"


async def test_a_deleted_objects_last_version_keeps_only_its_bytes(
    view: tuple[SqliteStore, ClusterState],
) -> None:
    store, cluster = view
    key = pod_key("default", "gone")
    pod = new_pod("gone")
    [created] = await store.txn([Op("put", key, encode(pod), pod, expect=0)])
    [deleted] = await store.txn([Op("delete", key)])
    await applied(cluster, deleted.mod_revision)

    assert key not in cluster.pods
    assert created.obj is None and deleted.obj is None
    assert decode(deleted, Pod).metadata.name == "gone"


async def test_two_versions_in_one_commit_are_each_applied_from_their_own_object(
    view: tuple[SqliteStore, ClusterState],
) -> None:
    """The view applies an event before releasing what it supersedes: a version written
    in the same commit as its successor is still whole when the view reaches it."""
    store, cluster = view
    key = pod_key("default", "twice")
    pod = new_pod("twice")
    seen: list[Pod | None] = []
    cluster.pod_listeners.append(lambda k, old, new: seen.append(new) if k == key else None)
    pending = replaced(pod, {"status": pod.status.model_copy(update={"reason": "Waiting"})})
    running = replaced(pod, {"status": pod.status.model_copy(update={"phase": "Running"})})
    first = store.txn([Op("put", key, encode(pending), pending, expect=0)])
    second = store.txn([Op("put", key, encode(running), running)])
    await first
    [last] = await second
    await applied(cluster, last.mod_revision)

    assert seen[0] is pending and seen[1] is running
