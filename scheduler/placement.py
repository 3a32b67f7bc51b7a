"""Placement: choose a node for a pod with a pipeline of small filters and scores.

As in kube-scheduler's framework and Nomad's feasibility checkers and rankers:

    pod ──> prepare (requests computed once) ──> visit nodes in a shuffled order
              │ filters, cheapest first: NodeReady, NodeUnschedulable, NodeSelector,
              │   PodCount, ResourcesFit; a node that fails is counted under its reason
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
from collections import Counter
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


class FilterPlugin(Protocol):
    """Called by `Placement.place` for each visited node; returns the reasons the node
    cannot take the pod (`FITS`, empty, if it can). Must be cheap and free of side
    effects: it runs for every node visited, so the reasons are shared constants."""

    name: str

    def filter(self, cycle: CycleState, node: NodeState) -> Reasons: ...


class ScorePlugin(Protocol):
    """Called for each feasible node of the sample; returns 0 (worst) to 100 (best)."""

    name: str

    def score(self, cycle: CycleState, node: NodeState) -> float: ...


class NodeReady:
    name = "NodeReady"

    def filter(self, cycle: CycleState, node: NodeState) -> Reasons:
        return FITS if node.ready else _NOT_READY


class NodeUnschedulable:
    name = "NodeUnschedulable"

    def filter(self, cycle: CycleState, node: NodeState) -> Reasons:
        return _UNSCHEDULABLE if node.cordoned else FITS


class NodeSelector:
    name = "NodeSelector"

    def filter(self, cycle: CycleState, node: NodeState) -> Reasons:
        if cycle.node_selector:
            labels = node.node.metadata.labels
            for key, value in cycle.node_selector.items():
                if labels.get(key) != value:
                    return _SELECTOR
        return FITS


class PodCount:
    name = "PodCount"

    def filter(self, cycle: CycleState, node: NodeState) -> Reasons:
        return _TOO_MANY_PODS if len(node.pods) >= node.alloc_pods else FITS


class ResourcesFit:
    name = "ResourcesFit"

    def filter(self, cycle: CycleState, node: NodeState) -> Reasons:
        no_cpu = cycle.cpu > node.free_cpu
        no_mem = cycle.mem > node.free_mem
        if no_cpu or no_mem:
            return _NO_CPU_OR_MEMORY if no_cpu and no_mem else _NO_CPU if no_cpu else _NO_MEMORY
        return FITS


def _allocated_fraction(cycle: CycleState, node: NodeState) -> float:
    """Mean of CPU and memory allocated on the node once the pod is added (0..1)."""
    cpu = (node.req_cpu + cycle.cpu) / node.alloc_cpu if node.alloc_cpu else 1.0
    mem = (node.req_mem + cycle.mem) / node.alloc_mem if node.alloc_mem else 1.0
    return (min(cpu, 1.0) + min(mem, 1.0)) / 2


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


_: FilterPlugin = NodeReady()
_ = NodeUnschedulable()
_ = NodeSelector()
_ = PodCount()
_ = ResourcesFit()
__: ScorePlugin = LeastAllocated()
__ = MostAllocated()


@dataclass(slots=True)
class Decision:
    """The outcome of one placement: a node, or the reasons no node fits."""

    node: str | None
    reasons: Counter[str] = field(default_factory=Counter)
    total_nodes: int = 0
    visited: int = 0

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
    """The pipeline, assembled once. `place` is called by the scheduling loop per pod."""

    def __init__(
        self, nodes: dict[str, NodeState], strategy: str = "spread", sample: int = 0
    ) -> None:
        self._nodes = nodes
        # Cheapest and most selective first: readiness and cordons are a field read,
        # the selector a few dict lookups, resources some arithmetic.
        self.filters: list[FilterPlugin] = [
            NodeReady(),
            NodeUnschedulable(),
            NodeSelector(),
            PodCount(),
            ResourcesFit(),
        ]
        self.scorer: ScorePlugin = MostAllocated() if strategy == "binpack" else LeastAllocated()
        self._sample = sample
        self._names: list[str] = []
        self._names_version = -1
        self.version = 0  # bumped by the owner when nodes are added or removed

    def _node_names(self) -> list[str]:
        if self._names_version != self.version or len(self._names) != len(self._nodes):
            self._names = list(self._nodes)
            self._names_version = self.version
        return self._names

    def sample_size(self, total: int) -> int:
        if self._sample:
            return self._sample
        return max(8, math.ceil(math.log2(total))) if total > 1 else 1

    def place(self, pod: Pod) -> Decision:
        cpu, mem = pod.spec.requests()
        cycle = CycleState(pod, cpu, mem, pod.spec.node_selector)
        names = self._node_names()
        total = len(names)
        decision = Decision(None, Counter(), total)
        if not total:
            return decision
        want = self.sample_size(total)
        # A start and a stride coprime with the count, both drawn from the uid, visit
        # every node exactly once in a shuffled order without shuffling a list per
        # placement; crc32 (not hash()) so that a placement replays across processes.
        seed = zlib.crc32((pod.metadata.uid or pod.metadata.name).encode())
        start = seed % total
        stride = 1 + (seed >> 8) % (total - 1) if total > 2 else 1
        while math.gcd(stride, total) != 1:
            stride += 1
        checks = [plugin.filter for plugin in self.filters]
        score = self.scorer.score
        nodes = self._nodes
        best: NodeState | None = None
        best_score = -1.0
        feasible = visited = 0
        index = start
        for _ in range(total):
            state = nodes.get(names[index])
            index = (index + stride) % total
            if state is None:
                continue
            visited += 1
            for check in checks:
                reasons = check(cycle, state)
                if reasons:
                    decision.reasons.update(reasons)
                    break
            else:
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
