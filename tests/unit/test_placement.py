"""Placement pipeline: filters, scores, bounded sampling and kube-style reasons."""

from __future__ import annotations

import uuid

from common.models import (
    Container,
    Node,
    NodeCondition,
    NodeSpec,
    NodeStatus,
    ObjectMeta,
    Pod,
    PodSpec,
)
from common.quantity import cpu_millis, memory_bytes
from scheduler.cluster import NodeState
from scheduler.placement import CycleState, NodeSelector, Placement


def make_node(
    name: str,
    cpu: str = "4",
    memory: str = "8Gi",
    *,
    ready: bool = True,
    cordoned: bool = False,
    labels: dict[str, str] | None = None,
    used_cpu: str = "0",
    used_mem: str = "0",
) -> NodeState:
    node = Node(
        metadata=ObjectMeta(name=name, labels=labels or {}),
        spec=NodeSpec(unschedulable=cordoned),
        status=NodeStatus(
            capacity={"cpu": cpu, "memory": memory},
            allocatable={"cpu": cpu, "memory": memory, "pods": "110"},
            conditions=[NodeCondition(type="Ready", status="True" if ready else "Unknown")],
        ),
    )
    state = NodeState(name, node)
    state.update(node)
    state.req_cpu = cpu_millis(used_cpu)
    state.req_mem = memory_bytes(used_mem)
    return state


def make_pod(
    cpu: str = "100m", memory: str = "64Mi", selector: dict[str, str] | None = None
) -> Pod:
    return Pod(
        metadata=ObjectMeta(name="p", namespace="default", uid=str(uuid.uuid4())),
        spec=PodSpec(
            containers=[
                Container(
                    name="c", image="i", resources={"requests": {"cpu": cpu, "memory": memory}}
                )
            ],
            node_selector=selector or {},
        ),
    )


def placement(*nodes: NodeState, strategy: str = "spread", sample: int = 0) -> Placement:
    return Placement({n.name: n for n in nodes}, strategy, sample)


def test_spread_prefers_least_allocated() -> None:
    """The default strategy puts the pod on the emptiest node."""
    p = placement(make_node("busy", used_cpu="3", used_mem="6Gi"), make_node("idle"))
    assert p.place(make_pod()).node == "idle"


def test_binpack_prefers_most_allocated() -> None:
    """binpack puts the pod on the fullest node that still fits."""
    p = placement(
        make_node("busy", used_cpu="3", used_mem="6Gi"), make_node("idle"), strategy="binpack"
    )
    assert p.place(make_pod()).node == "busy"


def test_filters_and_reason_counts() -> None:
    """A pod that fits nowhere gets kube-scheduler's message with a count per reason."""
    p = placement(
        make_node("small-1", memory="1Gi"),
        make_node("small-2", memory="1Gi"),
        make_node("down", ready=False),
        make_node("off", cordoned=True),
    )
    decision = p.place(make_pod(memory="2Gi"))
    assert decision.node is None
    assert decision.message == (
        "0/4 nodes are available: 2 Insufficient memory, 1 node(s) were not ready, "
        "1 node(s) were unschedulable."
    )


def test_cpu_and_memory_both_reported() -> None:
    """A node short of both resources counts under both reasons."""
    decision = placement(make_node("tiny", cpu="100m", memory="64Mi")).place(make_pod("1", "1Gi"))
    assert decision.message == "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory."


def test_node_selector() -> None:
    """nodeSelector keeps the pod to nodes with matching labels."""
    p = placement(make_node("a", labels={"disk": "hdd"}), make_node("b", labels={"disk": "ssd"}))
    assert p.place(make_pod(selector={"disk": "ssd"})).node == "b"
    decision = p.place(make_pod(selector={"disk": "nvme"}))
    assert (
        decision.message == "0/2 nodes are available: 2 node(s) didn't match Pod's node selector."
    )


def test_exact_fit_is_accepted() -> None:
    """A request equal to the free capacity fits (no off-by-one)."""
    p = placement(make_node("n", cpu="1", memory="1Gi", used_cpu="500m", used_mem="512Mi"))
    assert p.place(make_pod("500m", "512Mi")).node == "n"
    assert p.place(make_pod("501m", "512Mi")).node is None


def test_sample_is_bounded() -> None:
    """With many feasible nodes, only about log2(n) are scored, not all of them."""
    nodes = [make_node(f"n{i:04d}") for i in range(2000)]
    p = placement(*nodes)
    decision = p.place(make_pod())
    assert decision.node is not None
    assert decision.visited <= p.sample_size(2000) == 11


def test_every_node_is_reachable() -> None:
    """The shuffled visit order covers every node, so a lone feasible node is found."""
    nodes = [make_node(f"n{i:03d}", memory="1Gi") for i in range(300)]
    nodes.append(make_node("roomy", memory="64Gi"))
    p = placement(*nodes)
    for _ in range(20):
        assert p.place(make_pod(memory="2Gi")).node == "roomy"


def test_replayable_from_uid() -> None:
    """The same pod uid gives the same decision: placements can be replayed."""
    nodes = [make_node(f"n{i:03d}") for i in range(100)]
    p = placement(*nodes)
    pod = make_pod()
    assert len({p.place(pod).node for _ in range(5)}) == 1


def test_spread_over_cluster() -> None:
    """Spread with assumed requests distributes pods across nodes evenly."""
    nodes = {f"n{i}": make_node(f"n{i}") for i in range(4)}
    p = Placement(nodes, "spread")
    for _ in range(40):
        pod = make_pod("100m", "128Mi")
        decision = p.place(pod)
        assert decision.node is not None
        state = nodes[decision.node]
        state.req_cpu += 100
        state.req_mem += 128 * 2**20
        state.pods.add(str(pod.metadata.uid))
    assert sorted(len(n.pods) for n in nodes.values()) == [10, 10, 10, 10]


class CountingFilter:
    """A pod filter that records how often it is asked, per pod and per node."""

    name = "Counting"

    def __init__(self, relevant: bool) -> None:
        self.relevant = relevant
        self.pre_filters = 0
        self.filters = 0

    def pre_filter(self, cycle: CycleState) -> bool:
        self.pre_filters += 1
        return self.relevant

    def filter(self, cycle: CycleState, node: NodeState) -> tuple[str, ...]:
        self.filters += 1
        return ()


def test_a_filter_that_skips_a_pod_is_not_called_per_node() -> None:
    """pre_filter is asked once per pod; False (kube's Skip) spares the per-node calls."""
    p = placement(*(make_node(f"n{i}") for i in range(5)), sample=5)
    skipped, relevant = CountingFilter(False), CountingFilter(True)
    p.filters += [skipped, relevant]
    assert p.place(make_pod()).visited == 5
    assert (skipped.pre_filters, skipped.filters) == (1, 0)
    assert (relevant.pre_filters, relevant.filters) == (1, 5)


def test_node_selector_skips_pods_without_one() -> None:
    """Without a nodeSelector the NodeSelector filter has nothing to check."""
    selector = NodeSelector()
    pod = make_pod()
    assert not selector.pre_filter(CycleState(pod, 0, 0, pod.spec.node_selector))
    pod = make_pod(selector={"disk": "ssd"})
    assert selector.pre_filter(CycleState(pod, 0, 0, pod.spec.node_selector))


def test_node_filters_are_redone_when_a_node_changes() -> None:
    """Readiness and cordons are evaluated per node change (version), not per pod, and
    a change is seen by the next placement with the exact counts."""
    nodes = {n.name: n for n in (make_node("a"), make_node("b"))}
    p = Placement(nodes)
    assert p.place(make_pod()).node is not None
    for name, ready, cordoned in (("a", False, False), ("b", True, True)):
        changed = make_node(name, ready=ready, cordoned=cordoned).node
        nodes[name].update(changed)
    p.version += 1  # what the control plane's node listener does
    assert p.place(make_pod()).message == (
        "0/2 nodes are available: 1 node(s) were not ready, 1 node(s) were unschedulable."
    )
    nodes["a"].update(make_node("a").node)
    p.version += 1
    assert p.place(make_pod()).node == "a"
    nodes["c"] = make_node("c", ready=False)  # a new node is seen even before a bump
    assert p.place(make_pod(memory="64Gi")).message == (
        "0/3 nodes are available: 1 Insufficient memory, 1 node(s) were not ready, "
        "1 node(s) were unschedulable."
    )


def test_a_status_change_keeps_the_accounting_of_a_pod_on_its_node() -> None:
    """`ClusterState._apply_pod` skips recounting a status change that shares the spec; what
    it keeps must be what recounting gives, and a finished or moved pod still releases."""
    from typing import cast

    from common.models import PodStatus, ResourceRequirements
    from scheduler.cluster import ClusterState
    from scheduler.objects import encode, replaced
    from scheduler.store import KV, Store

    cluster = ClusterState(cast(Store, None))
    cluster.nodes["n1"] = make_node("n1")
    cluster.nodes["n2"] = make_node("n2")
    container = Container(
        name="c",
        image="i",
        resources=ResourceRequirements(requests={"cpu": "250m", "memory": "1Mi"}),
    )
    pod = Pod(
        metadata=ObjectMeta(name="p", namespace="default", uid="u1"),
        spec=PodSpec(containers=[container], node_name="n1"),
    )
    key, revision = "/pods/default/p", 0

    def apply(p: Pod) -> None:
        nonlocal revision
        revision += 1
        cluster._apply_pod(key, KV(key, encode(p), 1, revision, p))

    apply(pod)
    n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
    assert (n1.req_cpu, n1.req_mem, n1.pods) == (250, 1 << 20, {key})
    running = replaced(pod, {"status": PodStatus(phase="Running")})
    apply(running)
    assert (n1.req_cpu, n1.req_mem, n1.pods) == (250, 1 << 20, {key})
    assert cluster._accounted[key] == ("n1", 250, 1 << 20)
    apply(replaced(running, {"status": PodStatus(phase="Succeeded")}))
    assert (n1.req_cpu, n1.req_mem, n1.pods) == (0, 0, set())
    moved = replaced(pod, {"spec": replaced(pod.spec, {"node_name": "n2"})})
    apply(moved)
    assert (n2.req_cpu, n2.pods, n1.pods) == (250, {key}, set())
    apply(replaced(moved, {"status": PodStatus(phase="Running")}))
    assert (n2.req_cpu, n2.pods, n1.pods) == (250, {key}, set())
