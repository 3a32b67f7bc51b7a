"""The node lifecycle controller wakes at the nearest NotReady or eviction deadline."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.models import Node, ObjectMeta, Pod, PodCondition, PodStatus
from scheduler.cluster import ClusterState, NodeState
from scheduler.config import SchedulerConfig
from scheduler.context import Context
from scheduler.controllers.nodelifecycle import ORPHAN_QUARANTINE, NodeLifecycleController
from scheduler.events import EventRecorder
from scheduler.metrics import SchedulerMetrics
from scheduler.objects import decode, encode, mutable_copy, node_key, pod_key
from scheduler.podready import is_marked
from scheduler.recent import RecentErrors
from scheduler.store import Event, Store
from scheduler.store.sqlite import SqliteStore


@pytest.fixture
async def controller(tmp_path: Path) -> AsyncIterator[NodeLifecycleController]:
    store = await SqliteStore.open(tmp_path / "state.db")
    cluster = ClusterState(store)
    config = SchedulerConfig(state_dir=str(tmp_path), node_grace_seconds=5, eviction_seconds=10)
    ctx = Context(config, store, cluster, SchedulerMetrics(), RecentErrors(), EventRecorder(store))
    try:
        ctrl = NodeLifecycleController(ctx)
        ctrl.started = 0.0  # long before the tests' times, unless a test says otherwise
        yield ctrl
    finally:
        await store.close()


def add_node(ctrl: NodeLifecycleController, name: str, *, ready: bool, heartbeat: float) -> None:
    state = NodeState(name, Node(metadata=ObjectMeta(name=name)))
    state.ready, state.last_heartbeat = ready, heartbeat
    ctrl._cluster.nodes[name] = state


async def test_no_nodes_waits_one_period(controller: NodeLifecycleController) -> None:
    assert controller.next_pass_in(100.0) == pytest.approx(controller.period)


async def test_wakes_when_a_ready_node_runs_out_of_grace(
    controller: NodeLifecycleController,
) -> None:
    add_node(controller, "a", ready=True, heartbeat=95.2)  # NotReady due at 100.2
    assert controller.next_pass_in(100.0) == pytest.approx(0.2)


async def test_wakes_at_the_eviction_deadline_from_the_last_heartbeat(
    controller: NodeLifecycleController,
) -> None:
    add_node(controller, "gone", ready=False, heartbeat=90.1)  # evicted at 100.1
    controller.not_ready_since["gone"] = 95.1
    add_node(controller, "fine", ready=True, heartbeat=99.9)
    assert controller.next_pass_in(100.0) == pytest.approx(0.1)


async def test_overdue_deadline_still_sleeps_a_little(controller: NodeLifecycleController) -> None:
    add_node(controller, "late", ready=True, heartbeat=50.0)
    assert controller.next_pass_in(100.0) == pytest.approx(0.01)


async def test_a_stretched_node_gets_longer_timeouts(controller: NodeLifecycleController) -> None:
    """A node welcomed with twice the heartbeat interval is evicted twice as late."""
    add_node(controller, "big", ready=False, heartbeat=80.1)  # 10 s * 2 from 80.1: 100.1
    controller.not_ready_since["big"] = 90.1
    controller._cluster.heartbeat_stretch["big"] = 2.0
    assert controller.next_pass_in(100.0) == pytest.approx(0.1)
    assert controller._timeouts("big") == (10.0, 20.0)
    assert controller._timeouts("unknown") == (5.0, 10.0)


async def test_after_a_start_known_nodes_get_the_failover_grace(
    controller: NodeLifecycleController,
) -> None:
    """Nodes loaded at a (re)start and not heard from since: NotReady only once
    failover_grace_seconds (15) have passed since the start, not node_grace_seconds (5)."""
    controller.started = 100.0
    add_node(controller, "late", ready=True, heartbeat=99.0)  # loaded, agent not back yet
    assert controller._config.failover_grace_seconds == 15.0
    assert controller.next_pass_in(104.9) == pytest.approx(controller.period)
    assert controller.next_pass_in(114.8) == pytest.approx(0.2)  # NotReady due at 115
    # Marked NotReady at 115: evicted eviction - grace = 5 s later, as if last heard at 110.
    controller._cluster.nodes["late"].ready = False
    controller.not_ready_since["late"] = 115.0
    assert controller.next_pass_in(119.9) == pytest.approx(0.1)


async def test_after_a_start_a_node_heard_from_has_the_usual_grace(
    controller: NodeLifecycleController,
) -> None:
    controller.started = 100.0
    add_node(controller, "back", ready=True, heartbeat=101.0)  # its agent reconnected
    assert controller.next_pass_in(105.9) == pytest.approx(0.1)  # NotReady due at 106


async def test_after_a_start_a_node_stored_not_ready_is_evicted_on_time(
    controller: NodeLifecycleController,
) -> None:
    """The old scheduler already saw it silent: eviction_seconds after the start, as
    without the restart."""
    controller.started = 100.0
    add_node(controller, "gone", ready=False, heartbeat=99.0)
    controller.not_ready_since["gone"] = 100.0
    assert controller.next_pass_in(109.9) == pytest.approx(0.1)


def test_heartbeat_stretch_follows_the_cluster_size() -> None:
    """Heartbeats stay under max_heartbeats_per_second; never faster than configured."""
    config = SchedulerConfig(state_dir="/x", heartbeat_seconds=1, max_heartbeats_per_second=1000)
    assert config.heartbeat_stretch(1) == 1.0
    assert config.heartbeat_stretch(1000) == 1.0
    assert config.heartbeat_stretch(5000) == 5.0
    slow = SchedulerConfig(state_dir="/x", heartbeat_seconds=2, max_heartbeats_per_second=100)
    assert slow.heartbeat_stretch(100) == 1.0  # 100 nodes every 2 s: 50 a second
    assert slow.heartbeat_stretch(400) == 2.0


async def test_after_a_stall_every_node_counts_as_heard_at_the_wake(
    controller: NodeLifecycleController,
) -> None:
    """A pass that wakes half a grace (2.5 s) late or more: the scheduler read no frame
    meanwhile, so nodes get a grace from the wake to be heard, and NotReady ones an
    eviction timeout from it."""
    add_node(controller, "quiet", ready=True, heartbeat=99.0)  # NotReady due at 104
    add_node(controller, "gone", ready=False, heartbeat=90.0)  # evicted at 100
    controller.not_ready_since["gone"] = 95.0
    controller.note_wake(97.6, 100.0)  # a slow pass, not a stall
    assert controller.resumed == -math.inf
    assert controller.next_pass_in(100.0) == pytest.approx(0.01)  # gone: overdue
    stalls = "corral_scheduler_stalls_total"
    assert controller._metrics.registry.get_sample_value(stalls) == 0
    controller.note_wake(97.5, 100.0)
    assert controller.resumed == 100.0
    assert controller._metrics.registry.get_sample_value(stalls) == 1
    errors = [e["message"] for e in controller._errors.to_list()]
    assert errors == ["scheduler stalled for 2.5s: node timeouts restart from now"]
    # Every wake's lateness is the loop's lag: here 2.4 s, then 2.5 s.
    lag = "corral_event_loop_lag_seconds"
    registry = controller._metrics.registry
    assert registry.get_sample_value(f"{lag}_count") == 2
    assert registry.get_sample_value(f"{lag}_sum") == pytest.approx(4.9)
    assert registry.get_sample_value(f"{lag}_bucket", {"le": "1.0"}) == 0
    assert registry.get_sample_value(f"{lag}_bucket", {"le": "2.5"}) == 2
    assert controller._heard(99.0, 5.0) == 100.0
    assert controller._heard(101.0, 5.0) == 101.0  # heard since: as usual
    assert controller.next_pass_in(100.0) == pytest.approx(controller.period)
    assert controller.next_pass_in(104.9) == pytest.approx(0.1)  # quiet: NotReady at 105
    controller._cluster.nodes.pop("quiet")
    assert controller.next_pass_in(109.9) == pytest.approx(0.1)  # gone: evicted at 110


async def test_a_node_deleted_while_not_ready_is_forgotten(
    controller: NodeLifecycleController,
) -> None:
    """A NotReady node's clock goes with the node (it stayed for good when it was deleted)."""
    add_node(controller, "kept", ready=False, heartbeat=1e12)  # heard from: not evicted
    controller.not_ready_since.update(kept=1e12, deleted=1e12)
    await controller.reconcile()
    assert controller.not_ready_since == {"kept": 1e12}


def bound_pod(name: str, node: str, policy: str = "Always") -> Pod:
    return Pod.model_validate(
        {
            "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4())},
            "spec": {
                "nodeName": node,
                "restartPolicy": policy,
                "containers": [
                    {"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "1"}}}
                ],
            },
        }
    )


async def test_the_cluster_indexes_pods_bound_to_nodes_that_do_not_exist(tmp_path: Path) -> None:
    """Bound before their node joined, or left on a deleted node: indexed by node name, so
    the node's arrival and the lifecycle's sweep need not look at every pod."""
    store = await SqliteStore.open(tmp_path / "state.db")
    try:
        cluster = ClusterState(store)
        pod = bound_pod("web", "late")
        pod_kv = await store.put(pod_key("default", "web"), encode(pod), obj=pod, expect=0)
        cluster.apply(Event("PUT", pod_kv, None, pod_kv.mod_revision))
        assert cluster.unknown_nodes == {"late": {"/pods/default/web"}}
        assert [p.metadata.name for p in cluster.pods_on("late")] == ["web"]
        node = Node(metadata=ObjectMeta(name="late"))
        node_kv = await store.put(node_key("late"), encode(node), obj=node, expect=0)
        cluster.apply(Event("PUT", node_kv, None, node_kv.mod_revision))
        assert cluster.unknown_nodes == {} and cluster.nodes["late"].req_cpu == 1000
        gone = await store.delete(node_key("late"))
        cluster.apply(Event("DELETE", gone, None, gone.mod_revision))
        assert cluster.unknown_nodes == {"late": {"/pods/default/web"}}
        deleted = await store.delete(pod_key("default", "web"))
        cluster.apply(Event("DELETE", deleted, None, deleted.mod_revision))
        assert cluster.unknown_nodes == {} and cluster.pods_on("late") == []
    finally:
        await store.close()


async def test_pods_bound_to_a_node_that_does_not_exist_are_evicted_after_a_quarantine(
    controller: NodeLifecycleController,
) -> None:
    """No agent runs them and nothing else moved them: they waited Pending for good. After
    ORPHAN_QUARANTINE, as from a lost node: replaced (Always) or Failed (Never)."""
    store, cluster = controller._store, controller._cluster
    for name, policy in (("kept", "Always"), ("lost", "Never")):
        pod = bound_pod(name, "ghost", policy)
        await store.put(pod_key("default", name), encode(pod), obj=pod, expect=0)
    await cluster.load()
    await controller.reconcile()  # first seen now: quarantined
    assert cluster.pods["/pods/default/kept"].spec.node_name == "ghost"
    controller.missing_since["ghost"] -= ORPHAN_QUARANTINE
    await controller.reconcile()
    kept, lost = [await store.get(pod_key("default", n)) for n in ("kept", "lost")]
    assert kept is not None and lost is not None
    replaced, failed = decode(kept, Pod), decode(lost, Pod)
    assert replaced.spec.node_name is None and replaced.status.phase == "Pending"
    assert "node ghost does not exist" in (replaced.status.message or "")
    assert (failed.status.phase, failed.status.reason) == ("Failed", "NodeLost")


def running_ready(name: str, node: str) -> Pod:
    pod = bound_pod(name, node)
    pod.status = PodStatus(phase="Running", conditions=[PodCondition(type="Ready", status="True")])
    return pod


async def caught_up(cluster: ClusterState, store: Store) -> None:
    """Until the cluster view has applied every durable write (its watch has no event to
    wait on)."""
    for _ in range(1000):
        if cluster.revision >= store.revision:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the cluster view did not catch up with the store")


class PodsOnCounter:
    """Counts the pass's reads of each node's pods (`ClusterState.pods_on`), and notes what
    the loop's other task had counted by each."""

    def __init__(self, cluster: ClusterState) -> None:
        self.reads: Counter[str] = Counter()
        self.ticks_seen: list[int] = []
        self.ticks = 0
        self._pods_on = cluster.pods_on
        cluster.pods_on = self  # type: ignore[method-assign]

    def __call__(self, node: str) -> list[Pod]:
        self.reads[node] += 1
        self.ticks_seen.append(self.ticks)
        return self._pods_on(node)


async def test_a_settled_node_is_not_read_again(controller: NodeLifecycleController) -> None:
    """Once a NotReady node's ready pods are marked, passes skip it: the marks' own writes,
    and a pod change that leaves no pod to mark, do not bring it back. A pod made ready on
    it does, once."""
    store, cluster = controller._store, controller._cluster
    add_node(controller, "n", ready=False, heartbeat=1e12)  # heard from: not evicted
    for name in ("a", "b"):
        pod = running_ready(name, "n")
        await store.put(pod_key("default", name), encode(pod), obj=pod, expect=0)
    await cluster.load()
    counter = PodsOnCounter(cluster)
    watch = asyncio.create_task(cluster.run())
    try:
        await controller.reconcile()
        await caught_up(cluster, store)
        assert all(is_marked(cluster.pods[pod_key("default", n)]) for n in ("a", "b"))
        assert counter.reads["n"] == 1
        # A label on a marked pod: nothing to mark.
        kv = cluster.pod_kvs[pod_key("default", "a")]
        labelled = mutable_copy(cluster.pods[pod_key("default", "a")])
        labelled.metadata.labels = {"tier": "web"}
        await store.put(kv.key, encode(labelled), obj=labelled, expect=kv.mod_revision)
        await caught_up(cluster, store)
        revision = store.revision
        await controller.reconcile()
        await controller.reconcile()
        assert counter.reads["n"] == 1 and store.revision == revision  # nothing written
        # Made ready again (a late report of its agent): read once more, and marked.
        kv = cluster.pod_kvs[pod_key("default", "b")]
        again = running_ready("b", "n")
        again.metadata.uid = cluster.pods[kv.key].metadata.uid
        await store.put(kv.key, encode(again), obj=again, expect=kv.mod_revision)
        await caught_up(cluster, store)
        await controller.reconcile()
        await caught_up(cluster, store)
        await controller.reconcile()
        assert counter.reads["n"] == 2
        assert is_marked(cluster.pods[kv.key])
    finally:
        watch.cancel()


async def test_a_pass_over_many_not_ready_nodes_lets_other_tasks_run(
    controller: NodeLifecycleController,
) -> None:
    """A partition leaves thousands of nodes NotReady at once: the pass that marks their
    pods gives the loop to other tasks every 64 nodes, rather than holding it throughout."""
    cluster = controller._cluster
    for i in range(200):
        add_node(controller, f"n{i:03d}", ready=False, heartbeat=1e12)
    counter = PodsOnCounter(cluster)
    done = False

    async def other_task() -> None:
        while not done:
            counter.ticks += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_task())
    await asyncio.sleep(0)  # it runs once before the pass
    try:
        await controller.reconcile()
    finally:
        done = True
        await other
    assert len(counter.ticks_seen) == 200
    # The other task ran between the 64th and 65th node read, and again every 64.
    assert counter.ticks_seen[0] == counter.ticks_seen[63] < counter.ticks_seen[64]
    assert counter.ticks_seen[64] == counter.ticks_seen[127] < counter.ticks_seen[128]
    assert counter.ticks_seen[128] == counter.ticks_seen[191] < counter.ticks_seen[192]
