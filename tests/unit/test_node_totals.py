"""The node sums the status summary shows, kept as nodes and pods change, against a recount
over every node, through a real control plane (store, cluster view, scheduler, hub)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from bench.cpu_per_pod import ready_node
from bench.placement import pod_manifest
from common import protocol
from common.models import Pod
from scheduler.api import ops
from scheduler.api.common import CONTROL_PLANE
from scheduler.api.pods import _validate
from scheduler.cluster import NodeTotals
from scheduler.controlplane import ControlPlane
from scheduler.hub import set_node_ready
from scheduler.objects import encode, node_key, pod_key
from scheduler.store import Op
from tests.unit.test_hub import cp, serve, settle  # noqa: F401 (cp: a fixture)


async def summary(plane: ControlPlane) -> dict[str, Any]:
    app = web.Application()
    app[CONTROL_PLANE] = plane
    response = await ops.status(make_mocked_request("GET", "/api/v1/status", app=app))
    assert response.body is not None
    body: dict[str, Any] = json.loads(bytes(response.body))  # type: ignore[arg-type]
    return body


async def check(plane: ControlPlane) -> None:
    """The kept sums are a recount's, and the summary shows them."""
    cluster = plane.cluster
    recount = NodeTotals.of(cluster.nodes.values())
    assert cluster.totals == recount
    assert set(cluster.not_ready) == {n for n, s in cluster.nodes.items() if not s.ready}
    body = await summary(plane)
    assert body["resources"] == {
        "cpuMillicores": {
            "capacity": recount.cap_cpu,
            "allocatable": recount.alloc_cpu,
            "requested": recount.req_cpu,
            "used": recount.usage_cpu,
        },
        "memoryBytes": {
            "capacity": recount.cap_mem,
            "allocatable": recount.alloc_mem,
            "requested": recount.req_mem,
            "used": recount.usage_mem,
        },
    }
    nodes = body["nodes"]
    assert (nodes["total"], nodes["ready"], nodes["cordoned"], nodes["connected"]) == (
        len(cluster.nodes),
        recount.ready,
        recount.cordoned,
        recount.connected,
    )
    assert {n["name"] for n in nodes["notReadyNodes"]} == set(cluster.not_ready)


async def bound(plane: ControlPlane, count: int) -> None:
    """Until `count` pods are bound (durably, and in the view)."""
    for _ in range(500):
        pods = plane.cluster.pods.values()
        if sum(1 for p in pods if p.spec.node_name is not None) >= count:
            await settle_store(plane)
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {count} pods were bound")


async def settle_store(plane: ControlPlane) -> None:
    store = plane.store
    for _ in range(500):
        if store._next_revision == store.revision <= plane.cluster.revision:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the store or the cluster view did not settle")


async def test_the_kept_sums_equal_a_recount(cp: ControlPlane) -> None:  # noqa: F811
    store, cluster = cp.store, cp.cluster
    await check(cp)
    # A pod bound to a node that has not joined yet, then nodes join.
    early = _validate(pod_manifest(0, "500m", "1Gi"), "default")
    early.spec.node_name = "n3"
    await store.put(pod_key("default", early.metadata.name), encode(early), obj=early, expect=0)
    nodes = [ready_node(f"n{i}", "4", "8Gi", 110) for i in (1, 2, 3)]
    await store.txn([Op("put", node_key(n.metadata.name), encode(n), n, 0) for n in nodes])
    await settle_store(cp)
    assert cluster.nodes["n3"].req_cpu == 500
    await check(cp)

    # Binds: the scheduler places pending pods.
    pods = [_validate(pod_manifest(i, "250m", "256Mi"), "default") for i in range(1, 9)]
    await store.txn([Op("put", pod_key("default", p.metadata.name), encode(p), p, 0) for p in pods])
    await bound(cp, 9)
    assert cluster.totals.req_cpu == 500 + 8 * 250
    await check(cp)

    # Heartbeats through the hub; a link up, then ended.
    ws, reader = await serve(cp, "n1")
    cluster.set_connected(cluster.nodes["n1"], True)  # as the link's welcome does
    for usage in ([700, 2**30], [300, 2**29]):
        ws.feed(protocol.encode(protocol.Heartbeat(usage=usage)))
        await settle(cp, ws)
    assert cluster.nodes["n1"].usage_cpu == 300
    await check(cp)
    await ws.close()
    await reader
    await cp.hub._end_session(cp.hub.sessions["n1"])
    assert not cluster.nodes["n1"].connected
    await check(cp)

    # A node's status changes: more allocatable, cordoned, then NotReady.
    grown = ready_node("n2", "8", "16Gi", 110)
    grown.spec.unschedulable = True
    await store.put(node_key("n2"), encode(grown), obj=grown)
    await set_node_ready(store, "n2", False, "NodeStatusUnknown", "a test")
    await settle_store(cp)
    assert not cluster.nodes["n2"].ready and cluster.totals.cordoned == 1
    await check(cp)

    # Pods end: one deleted, one finished (its requests released).
    await store.delete(pod_key("default", "bench-000001"))
    finished_key = pod_key("default", "bench-000002")
    finished = Pod.model_validate(cluster.pods[finished_key].model_dump())
    finished.status.phase = "Succeeded"
    kv = cluster.pod_kvs[finished_key]
    await store.put(finished_key, encode(finished), obj=finished, expect=kv.mod_revision)
    await settle_store(cp)
    assert cluster.totals.req_cpu == 500 + 6 * 250
    await check(cp)

    # Nodes removed, pods still bound to them.
    for name in ("n2", "n3"):
        await store.delete(node_key(name))
    await settle_store(cp)
    assert set(cluster.nodes) == {"n1"} and "n3" in cluster.unknown_nodes
    await check(cp)
