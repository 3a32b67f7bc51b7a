"""What the status page lists, kept as the cluster changes (scheduler/overview.py), against
a walk over every pod and event, through a real control plane (store, cluster view)."""

from __future__ import annotations

from collections import Counter

from common.models import Pod
from scheduler.api import ui
from scheduler.controlplane import ControlPlane
from scheduler.events import EVENTS, Ref
from scheduler.objects import encode, mutable_copy, pod_key
from scheduler.store import Op
from tests.unit.test_hub import cp  # noqa: F401 (a fixture)
from tests.unit.test_node_totals import settle_store
from tests.unit.test_status_page import pod, waiting


async def check(plane: ControlPlane) -> None:
    """The kept counts, failing pods and newest events are a walk's."""
    await settle_store(plane)
    cluster, overview = plane.cluster, plane.overview
    pods = cluster.pods.values()
    assert overview.by_namespace == Counter(
        (p.metadata.namespace or "default", p.status.phase) for p in pods
    )
    failing = {k for k, p in cluster.pods.items() if ui.problem(p, {}) is not None}
    assert failing <= overview.may_fail
    # Newest by revision; the events of one commit (one flush) share theirs, in any order.
    kvs, _ = await plane.store.list(EVENTS)
    revisions = sorted((kv.mod_revision for kv in kvs), reverse=True)[: ui.MAX_EVENTS]
    shown = overview.newest_events(ui.MAX_EVENTS)
    assert [kv.mod_revision for kv in shown] == revisions
    assert all(kv == plane.store._committed[kv.key] for kv in shown)


async def put(plane: ControlPlane, *pods: Pod) -> None:
    ops = []
    for p in pods:
        key = pod_key(p.metadata.namespace or "default", p.metadata.name)
        kv = plane.cluster.pod_kvs.get(key)
        ops.append(Op("put", key, encode(p), p, kv.mod_revision if kv else 0))
    await plane.store.txn(ops)


async def test_the_kept_overview_equals_a_walk(cp: ControlPlane) -> None:  # noqa: F811
    await check(cp)
    web = [pod(f"web-{i}", phase="Running") for i in range(3)]
    batch = pod("job", phase="Pending")  # bound: the scheduler leaves it be
    batch.metadata.namespace = "batch"
    await put(cp, *web, batch)
    await check(cp)
    assert pod_key("batch", "job") in cp.overview.may_fail

    # One crash-loops, one fails, the pending one runs, then finishes.
    looping = mutable_copy(cp.cluster.pods[pod_key("default", "web-0")])
    looping.status = pod(phase="Running", containerStatuses=[waiting("CrashLoopBackOff")]).status
    failed = mutable_copy(cp.cluster.pods[pod_key("default", "web-1")])
    failed.status.phase = "Failed"
    running = mutable_copy(cp.cluster.pods[pod_key("batch", "job")])
    running.status.phase = "Running"
    await put(cp, looping, failed, running)
    await check(cp)
    assert pod_key("batch", "job") not in cp.overview.may_fail
    done = mutable_copy(cp.cluster.pods[pod_key("batch", "job")])
    done.status.phase = "Succeeded"
    await put(cp, done)
    await check(cp)

    # Pods deleted: the batch namespace has none left, and is not counted.
    for key in (pod_key("batch", "job"), pod_key("default", "web-0")):
        await cp.store.delete(key)
    await check(cp)
    assert not [ns for ns, _ in cp.overview.by_namespace if ns == "batch"]
    assert pod_key("default", "web-0") not in cp.overview.may_fail

    # Events: more than shown, one recorded again (newest again), then some expired.
    for i in range(ui.MAX_EVENTS + 10):
        cp.events.record(Ref("Pod", f"p{i}", "default", f"u{i}"), "Started", "started")
    await cp.events.flush()
    cp.events.record(Ref("Pod", "p0", "default", "u0"), "Started", "started")
    await cp.events.flush()
    await check(cp)
    assert cp.overview.newest_events(1)[0].key.startswith("/events/default/p0.")
    cp.events.max_events = 5
    cp.events.record(Ref("Pod", "last", "default", "u-last"), "Started", "started")
    await cp.events.flush()
    await check(cp)
    assert len(cp.overview.newest_events(ui.MAX_EVENTS)) == 5


async def test_a_restarted_scheduler_loads_what_is_stored(cp: ControlPlane) -> None:  # noqa: F811
    """At a start, the overview is built from the store's pods and events."""
    await put(cp, pod("web", phase="Failed"))
    for i in range(3):
        cp.events.record(Ref("Pod", f"p{i}", "default", f"u{i}"), "Started", "started")
    await cp.events.flush()
    await settle_store(cp)
    await cp.stop()
    again = ControlPlane(cp.config)
    await again.start()
    try:
        await check(again)
        assert again.overview.may_fail == {pod_key("default", "web")}
        assert len(again.overview.newest_events(10)) == 3
    finally:
        await again.stop()
