"""Placement: choose a node for a pod with a pipeline of small filters and scores.

As in kube-scheduler's framework and Nomad's feasibility checkers and rankers:

    pod ──> prepare (requests computed once) ──> visit nodes in a shuffled order
              │ node filters (NodeReady, NodeUnschedulable) depend on the node only:
              │   evaluated when a node changes, not per pod (Nomad's computed node class)
              │ pod filters, cheapest first: NodeSelector, PodCount, ResourcesFit; one
              │   that cannot fail for this pod says so once (kube's PreFilter "Skip")
              │   and is not called per node; a node that fails is counted under its reason
              │ stop once `sample` nodes pass (about log2 of the node count, as Nomad
              │   does), so a placement does not visit every node of a big cluster
              └─> scores on the feasible sample: LeastAllocated (spread, default) or
                  MostAllocated (binpack); the best node wins; ties go to the first seen

The shuffle is seeded from the pod's uid, so a placement can be replayed when
debugging. A pod that fits nowhere gets a kube-scheduler-style message:
`0/3 nodes are available: 2 Insufficient memory, 1 node(s) were not ready.`
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Protocol

from common.models import Pod
from scheduler.cluster import NodeState


@dataclass(slots=True)
class CycleState:
    """Computed once per pod, read by every filter and score."""

    pod: Pod
    cpu: int
    mem: int
    node_selector: dict[str, str]


Reasons = tuple[str, ...]
FITS: Reasons = ()  # the node passes the filter

_NOT_READY: Reasons = ("node(s) were not ready",)
_UNSCHEDULABLE: Reasons = ("node(s) were unschedulable",)
_SELECTOR: Reasons = ("node(s) didn't match Pod's node selector",)
_TOO_MANY_PODS: Reasons = ("Too many pods",)
_NO_CPU: Reasons = ("Insufficient cpu",)
_NO_MEMORY: Reasons = ("Insufficient memory",)
_NO_CPU_OR_MEMORY: Reasons = _NO_CPU + _NO_MEMORY


class NodeFilterPlugin(Protocol):
    """A filter that looks at the node only (readiness, cordon), whatever the pod: its
    verdict is computed when the node changes (`Placement.version`), not per placement.
    Returns the reasons no pod can go to the node (`FITS`, empty, if pods can)."""

    name: str

    def node_filter(self, node: NodeState) -> Reasons: ...


class FilterPlugin(Protocol):
    """Called by `Placement.place` for each visited node; returns the reasons the node
    cannot take the pod (`FITS`, empty, if it can). Must be cheap and free of side
    effects: it runs for every node visited, so the reasons are shared constants.
    `pre_filter` is asked once per pod: False means the filter cannot fail for this pod
    (kube-scheduler's PreFilter `Skip`), and it is not called for any node."""

    name: str

    def pre_filter(self, cycle: CycleState) -> bool: ...

    def filter(self, cycle: CycleState, node: NodeState) -> Reasons: ...


class ScorePlugin(Protocol):
    """Called for each feasible node of the sample; returns 0 (worst) to 100 (best)."""

    name: str

    def score(self, cycle: CycleState, node: NodeState) -> float: ...


class NodeReady:
    name = "NodeReady"

    def node_filter(self, node: NodeState) -> Reasons:
        return FITS if node.ready else _NOT_READY


class NodeUnschedulable:
    name = "NodeUnschedulable"

    def node_filter(self, node: NodeState) -> Reasons:
        return _UNSCHEDULABLE if node.cordoned else FITS


class NodeSelector:
    name = "NodeSelector"

    def pre_filter(self, cycle: CycleState) -> bool:
        return bool(cycle.node_selector)  # no selector: every node matches

    def filter(self, cycle: CycleState, node: NodeState) -> Reasons:
        labels = node.node.metadata.labels
        for key, value in cycle.node_selector.items():
            if labels.get(key) != value:
                return _SELECTOR
        return FITS


class PodCount:
    name = "PodCount"

    def pre_filter(self, cycle: CycleState) -> bool:
        return True

    def filter(self, cycle: CycleState, node: NodeState) -> Reasons:
        return _TOO_MANY_PODS if len(node.pods) >= node.alloc_pods else FITS


class ResourcesFit:
    name = "ResourcesFit"

    def pre_filter(self, cycle: CycleState) -> bool:
        return True

    def filter(self, cycle: CycleState, node: NodeState) -> Reasons:
        no_cpu = cycle.cpu > node.alloc_cpu - node.req_cpu
        no_mem = cycle.mem > node.alloc_mem - node.req_mem
        if no_cpu or no_mem:
            return _NO_CPU_OR_MEMORY if no_cpu and no_mem else _NO_CPU if no_cpu else _NO_MEMORY
        return FITS


def _allocated_fraction(cycle: CycleState, node: NodeState) -> float:
    """Mean of CPU and memory allocated on the node once the pod is added (0..1)."""
    cpu = (node.req_cpu + cycle.cpu) / node.alloc_cpu if node.alloc_cpu else 1.0
    mem = (node.req_mem + cycle.mem) / node.alloc_mem if node.alloc_mem else 1.0
    # Conditionals, not min(): the builtin's call costs more than the arithmetic here.
    return ((cpu if cpu < 1.0 else 1.0) + (mem if mem < 1.0 else 1.0)) / 2


class LeastAllocated:
    """Spread: prefer the node with the most room left."""

    name = "LeastAllocated"

    def score(self, cycle: CycleState, node: NodeState) -> float:
        return 100.0 * (1.0 - _allocated_fraction(cycle, node))


class MostAllocated:
    """Bin-pack: prefer the fullest node that still fits, leaving whole nodes free."""

    name = "MostAllocated"

    def score(self, cycle: CycleState, node: NodeState) -> float:
        return 100.0 * _allocated_fraction(cycle, node)


_n: NodeFilterPlugin = NodeReady()
_n = NodeUnschedulable()
_: FilterPlugin = NodeSelector()
_ = PodCount()
_ = ResourcesFit()
__: ScorePlugin = LeastAllocated()
__ = MostAllocated()


@dataclass(slots=True)
class Decision:
    """The outcome of one placement: a node, or the reasons no node fits."""

    node: str | None
    reasons: dict[str, int] = field(default_factory=dict)  # reason -> nodes that gave it
    total_nodes: int = 0
    visited: int = 0
    requests: tuple[int, int] = (0, 0)  # what the pod reserves: millicores, bytes

    @property
    def message(self) -> str:
        """`0/3 nodes are available: 2 Insufficient memory, 1 node(s) were not ready.`"""
        if self.node is not None:
            return f"placed on {self.node}"
        if not self.total_nodes:
            return "0/0 nodes are available: no nodes registered."
        parts = ", ".join(
            f"{n} {r}" for r, n in sorted(self.reasons.items(), key=lambda x: (-x[1], x[0]))
        )
        return f"0/{self.total_nodes} nodes are available: {parts}."


class Placement:
    """The pipeline, assembled once. `place` is called by the scheduling loop per pod.

    The owner bumps `version` whenever a node is added, removed or changed (the
    cluster's node listeners), which is when the node filters' verdicts are redone.
    """

    def __init__(
        self, nodes: dict[str, NodeState], strategy: str = "spread", sample: int = 0
    ) -> None:
        self._nodes = nodes
        # Node filters first (their verdict is cached per node), then the pod filters,
        # cheapest and most selective first: the selector is a few dict lookups,
        # the pod count a len(), resources some arithmetic.
        self.node_filters: list[NodeFilterPlugin] = [NodeReady(), NodeUnschedulable()]
        self.filters: list[FilterPlugin] = [NodeSelector(), PodCount(), ResourcesFit()]
        self.scorer: ScorePlugin = MostAllocated() if strategy == "binpack" else LeastAllocated()
        self._sample = sample
        # Every node with the reasons its node filters gave (empty: pods may go there).
        self._visit: list[tuple[NodeState, Reasons]] = []
        self._visit_version = -1
        self._want = 1  # sample_size of the visit list
        self.version = 0

    def _visit_list(self) -> list[tuple[NodeState, Reasons]]:
        if self._visit_version != self.version or len(self._visit) != len(self._nodes):
            self._visit = [(state, self._node_verdict(state)) for state in self._nodes.values()]
            self._visit_version = self.version
            self._want = self.sample_size(len(self._visit))
        return self._visit

    def _node_verdict(self, node: NodeState) -> Reasons:
        for plugin in self.node_filters:
            reasons = plugin.node_filter(node)
            if reasons:
                return reasons
        return FITS

    def sample_size(self, total: int) -> int:
        if self._sample:
            return self._sample
        return max(8, math.ceil(math.log2(total))) if total > 1 else 1

    def place(self, pod: Pod) -> Decision:
        visit = self._visit_list()
        total = len(visit)
        cpu, mem = requests = pod.spec.requests()
        decision = Decision(None, {}, total, 0, requests)
        if not total:
            return decision
        cycle = CycleState(pod, cpu, mem, pod.spec.node_selector)
        want = self._want
        # A start and a stride coprime with the count, both drawn from the uid, visit
        # every node exactly once in a shuffled order without shuffling a list per
        # placement; crc32 (not hash()) so that a placement replays across processes.
        seed = zlib.crc32((pod.metadata.uid or pod.metadata.name).encode())
        index = seed % total
        stride = 1 + (seed >> 8) % (total - 1) if total > 2 else 1
        while math.gcd(stride, total) != 1:
            stride += 1
        checks = [plugin.filter for plugin in self.filters if plugin.pre_filter(cycle)]
        score = self.scorer.score
        counts = decision.reasons
        best: NodeState | None = None
        best_score = -1.0
        feasible = visited = 0
        for _ in range(total):
            state, reasons = visit[index]
            index += stride
            if index >= total:
                index -= total
            visited += 1
            if not reasons:
                for check in checks:
                    reasons = check(cycle, state)
                    if reasons:
                        break
            if reasons:
                for reason in reasons:
                    counts[reason] = counts.get(reason, 0) + 1
                continue
            node_score = score(cycle, state)
            if node_score > best_score:
                best, best_score = state, node_score
            feasible += 1
            if feasible >= want:
                break
        decision.visited = visited
        if best is not None:
            decision.node = best.name
        return decision
