"""The scheduler's in-memory view of the cluster, fed by a watch on the store.

It answers what placement and the controllers ask many times a second: the
pods by key, uid and node, each node's allocatable and requested resources,
and which pods wait for a node. Bindings are *assumed* here the moment
placement decides them, before the bind is durable, so the next placement does
not double-book the node; the watch event of the durable bind then confirms
them, and a failed bind is forgotten (as kube-scheduler's assume cache does).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from common.models import Node, Pod, PodStatus
from common.quantity import cpu_millis, memory_bytes
from scheduler.objects import NODES, PODS, UnreadableObject, decode
from scheduler.store import KV, Event, Store

_LOGGER = logging.getLogger(__name__)

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(slots=True)
class NodeState:
    """What placement needs of one node, kept current from the store and heartbeats."""

    name: str
    node: Node
    cap_cpu: int = 0
    cap_mem: int = 0
    alloc_cpu: int = 0
    alloc_mem: int = 0
    alloc_pods: int = 110
    req_cpu: int = 0
    req_mem: int = 0
    pods: set[str] = field(default_factory=set)  # pod keys accounted to this node
    # Liveness, from the agent link (monotonic seconds; not stored durably).
    last_heartbeat: float = 0.0
    usage_cpu: int = 0
    usage_mem: int = 0
    # Each pod's usage in the last heartbeat, position by position as protocol 5 carries
    # it: kept as received (a heartbeat comes from every node every few seconds, while
    # `pod_usage()` is read only for the metrics API).
    pod_uids: list[str] = field(default_factory=list)
    pod_cpu: list[int] = field(default_factory=list)  # millicores
    pod_memory: list[int] = field(default_factory=list)  # bytes
    connected: bool = False
    # When the oldest desired change its agent has not acknowledged was sent (monotonic;
    # None: all acknowledged, or no link).
    desired_unacked_since: float | None = None
    ready: bool = False
    cordoned: bool = False  # spec.unschedulable

    def pod_usage(self) -> dict[str, tuple[int, int]]:
        """uid -> (CPU millicores, memory bytes) of each pod in the last heartbeat."""
        usage = zip(self.pod_cpu, self.pod_memory, strict=True)
        return dict(zip(self.pod_uids, usage, strict=True))

    def update(self, node: Node) -> None:
        self.node = node
        self.ready = node.ready
        self.cordoned = node.spec.unschedulable
        capacity, alloc = node.status.capacity, node.status.allocatable
        self.cap_cpu = cpu_millis(capacity.get("cpu", 0))
        self.cap_mem = memory_bytes(capacity.get("memory", 0))
        self.alloc_cpu = cpu_millis(alloc.get("cpu", 0))
        self.alloc_mem = memory_bytes(alloc.get("memory", 0))
        self.alloc_pods = int(memory_bytes(alloc.get("pods", 110)))


@dataclass(slots=True)
class NodeTotals:
    """Sums over every node in the view, kept as nodes change: the status summary reads
    them, and summing 5,000 nodes at each request held the event loop for ~12 ms."""

    cap_cpu: int = 0
    cap_mem: int = 0
    alloc_cpu: int = 0
    alloc_mem: int = 0
    req_cpu: int = 0
    req_mem: int = 0
    usage_cpu: int = 0
    usage_mem: int = 0
    ready: int = 0
    cordoned: int = 0
    connected: int = 0

    def add(self, state: NodeState, sign: int) -> None:
        """Count `state` in (sign 1) or out (sign -1)."""
        self.cap_cpu += sign * state.cap_cpu
        self.cap_mem += sign * state.cap_mem
        self.alloc_cpu += sign * state.alloc_cpu
        self.alloc_mem += sign * state.alloc_mem
        self.req_cpu += sign * state.req_cpu
        self.req_mem += sign * state.req_mem
        self.usage_cpu += sign * state.usage_cpu
        self.usage_mem += sign * state.usage_mem
        self.ready += sign * state.ready
        self.cordoned += sign * state.cordoned
        self.connected += sign * state.connected

    @classmethod
    def of(cls, nodes: Iterable[NodeState]) -> NodeTotals:
        """Summed afresh (the tests compare the kept sums with this)."""
        totals = cls()
        for state in nodes:
            totals.add(state, 1)
        return totals


def needs_node(pod: Pod) -> bool:
    """A pod waits for placement: not bound, not finished, not being deleted."""
    return (
        pod.spec.node_name is None
        and pod.metadata.deletion_timestamp is None
        and pod.status.phase not in TERMINAL_PHASES
    )


def unready(status: PodStatus) -> bool:
    """Its Ready condition is False: of a running pod, held out of service by a readiness
    probe (or still starting)."""
    for condition in status.conditions:
        if condition.type == "Ready":
            return condition.status == "False"
    return False


def occupies_node(pod: Pod) -> bool:
    """A bound pod holds its requests on its node until it finishes or is removed."""
    return pod.spec.node_name is not None and pod.status.phase not in TERMINAL_PHASES


PodListener = Callable[[str, Pod | None, Pod | None], None]
NodeListener = Callable[[str, Node | None], None]
ObjectListener = Callable[[Event], None]  # every other key: deployments, jobs, namespaces...


class ClusterState:
    """Pods and nodes as of the store's latest durable revision, plus assumed binds."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.pods: dict[str, Pod] = {}
        self.pod_kvs: dict[str, KV] = {}
        self.by_uid: dict[str, str] = {}
        self.nodes: dict[str, NodeState] = {}
        # Kept as nodes change (`set_usage`, `set_connected`, the store's events): what the
        # status summary shows without looking at every node.
        self.totals = NodeTotals()
        self.not_ready: dict[str, None] = {}  # NotReady nodes, in the order they became so
        # For the status page's table of the first nodes: every name, sorted (kept by
        # insertion: nodes join and leave seldom), and those NotReady, disconnected or
        # cordoned, listed first.
        self.names: list[str] = []
        self.attention: set[str] = set()
        # Per node, the factor its heartbeat interval and timeouts were stretched by when
        # its link was welcomed (config.heartbeat_stretch); 1 if absent.
        self.heartbeat_stretch: dict[str, float] = {}
        self.pending: dict[str, float] = {}  # pod key -> monotonic time first seen pending
        # Pods by phase, kept as pods change: /metrics reads it, and counting every pod at
        # each scrape cost milliseconds of the event loop with tens of thousands of pods.
        self.phases: Counter[str] = Counter()
        self.running_unready = 0  # Running pods that are `unready`, kept the same way
        self.terminating: set[str] = set()  # pods marked for deletion
        self._accounted: dict[str, tuple[str, int, int]] = {}  # key -> (node, cpu, mem)
        # Of those, the pods bound to a node that does not exist (deleted, or never
        # joined): node name -> pod keys, for the node lifecycle's sweep and for the
        # node's arrival, so that neither looks at every pod.
        self.unknown_nodes: dict[str, set[str]] = {}
        self.revision = 0
        self.pod_listeners: list[PodListener] = []
        self.node_listeners: list[NodeListener] = []
        # Fed from this one watch, so the workload controllers see the same revision order.
        self.object_listeners: list[ObjectListener] = []
        self.pending_changed = asyncio.Event()
        self.capacity_changed = asyncio.Event()

    async def load(self) -> None:
        """Read everything once; `run` then follows the store from that revision."""
        pods, revision = await self._store.list(PODS)
        nodes, _ = await self._store.list(NODES)
        for kv in nodes:
            self._load(kv, self._apply_node)
        for kv in pods:
            self._load(kv, self._apply_pod)
        self.revision = revision

    @staticmethod
    def _load(kv: KV, apply: Callable[[str, KV | None], None]) -> None:
        """One stored object into the view; one stored by an older corral that this one
        cannot read (a value past a limit added since) is left out, not the start failed."""
        try:
            apply(kv.key, kv)
        except ValueError:  # pydantic's ValidationError
            _LOGGER.warning("ignoring %s: it does not decode as this corral reads it", kv.key)

    async def run(self) -> None:
        """Apply store events forever (cancel to stop)."""
        watch = self._store.watch("/", self.revision)
        try:
            async for event in watch:
                try:
                    self.apply(event)
                except UnreadableObject as exc:  # written past the API (by hand): never fatal
                    _LOGGER.warning("ignoring %s: it does not decode (%s)", exc.key, exc.problem)
                    self.revision = event.revision
        finally:
            watch.close()

    def apply(self, event: Event) -> None:
        kv = event.kv if event.type == "PUT" else None
        if event.kv.key.startswith(PODS):
            self._apply_pod(event.kv.key, kv)
        elif event.kv.key.startswith(NODES):
            self._apply_node(event.kv.key, kv)
        else:
            for listener in self.object_listeners:
                listener(event)
        self.revision = event.revision

    def _apply_node(self, key: str, kv: KV | None) -> None:
        name = key[len(NODES) :]
        if kv is None:
            state = self.nodes.pop(name, None)
            self.heartbeat_stretch.pop(name, None)
            self.not_ready.pop(name, None)
            self.attention.discard(name)
            node = None
            if state is not None:
                self.totals.add(state, -1)
                del self.names[bisect.bisect_left(self.names, name)]
                if state.pods:
                    self.unknown_nodes[name] = set(state.pods)  # still bound to it
        else:
            node = decode(kv, Node)
            state = self.nodes.get(name)
            if state is None:
                state = self.nodes[name] = NodeState(name, node, last_heartbeat=time.monotonic())
                bisect.insort(self.names, name)
                for key in self.unknown_nodes.pop(name, ()):  # bound before the node was known
                    _, cpu, mem = self._accounted[key]
                    state.req_cpu += cpu
                    state.req_mem += mem
                    state.pods.add(key)
            else:
                self.totals.add(state, -1)
            state.update(node)
            self.totals.add(state, 1)
            if state.ready:
                self.not_ready.pop(name, None)
            elif name not in self.not_ready:
                self.not_ready[name] = None
            self._note_attention(state)
        self.capacity_changed.set()
        for listener in self.node_listeners:
            listener(name, node)

    def _apply_pod(self, key: str, kv: KV | None) -> None:
        new = None if kv is None else decode(kv, Pod)  # first: one unreadable changes nothing
        old = self.pods.get(key)
        if old is not None:
            phase = old.status.phase
            self.phases[phase] -= 1
            # The phase tested first, inline: every write of a pod passes here.
            if phase == "Running" and unready(old.status):
                self.running_unready -= 1
        if kv is None:
            self.pods.pop(key, None)
            self.pod_kvs.pop(key, None)
        else:
            assert new is not None  # decoded above
            self.pods[key] = new
            self.pod_kvs[key] = kv
            phase = new.status.phase
            self.phases[phase] += 1
            if phase == "Running" and unready(new.status):
                self.running_unready += 1
        if old is not None and (new is None or old.metadata.uid != new.metadata.uid):
            self.by_uid.pop(old.metadata.uid or "", None)
        if new is not None and new.metadata.uid:
            self.by_uid[new.metadata.uid] = key
        if new is not None and new.metadata.deletion_timestamp is not None:
            self.terminating.add(key)
        else:
            self.terminating.discard(key)
        if new is not None and needs_node(new):
            if key not in self.pending:
                self.pending[key] = time.monotonic()
                self.pending_changed.set()
        else:
            self.pending.pop(key, None)
        if (
            old is None
            or new is None
            or new.spec is not old.spec
            or not occupies_node(old)
            or not occupies_node(new)
        ):
            self._account(key, new)
        # else a status change of a pod that stays on its node, its spec shared (`replaced`):
        # the same requests as accounted for `old` (only pods waiting for a node are assumed).
        for listener in self.pod_listeners:
            listener(key, old, new)

    def _account(self, key: str, pod: Pod | None) -> None:
        want: tuple[str, int, int] | None = None
        if pod is not None and occupies_node(pod):
            assert pod.spec.node_name is not None
            cpu, mem = pod.spec.requests()
            want = (pod.spec.node_name, cpu, mem)
        self._set_accounting(key, want)

    def _set_accounting(self, key: str, want: tuple[str, int, int] | None) -> None:
        have = self._accounted.get(key)
        if have == want:
            return
        if have is not None:
            state = self.nodes.get(have[0])
            if state is not None:
                state.req_cpu -= have[1]
                state.req_mem -= have[2]
                self.totals.req_cpu -= have[1]
                self.totals.req_mem -= have[2]
                state.pods.discard(key)
            elif (unknown := self.unknown_nodes.get(have[0])) is not None:
                unknown.discard(key)
                if not unknown:
                    del self.unknown_nodes[have[0]]
            del self._accounted[key]
            self.capacity_changed.set()
        if want is not None:
            self._accounted[key] = want
            state = self.nodes.get(want[0])
            if state is not None:
                state.req_cpu += want[1]
                state.req_mem += want[2]
                self.totals.req_cpu += want[1]
                self.totals.req_mem += want[2]
                state.pods.add(key)
            else:
                self.unknown_nodes.setdefault(want[0], set()).add(key)

    def set_usage(self, state: NodeState, cpu: int, mem: int) -> None:
        """The node's usage as its heartbeat gives it (`state` is one of `nodes`)."""
        totals = self.totals
        totals.usage_cpu += cpu - state.usage_cpu
        totals.usage_mem += mem - state.usage_mem
        state.usage_cpu, state.usage_mem = cpu, mem

    def set_connected(self, state: NodeState, connected: bool) -> None:
        """Whether its agent holds a link (`state` is one of `nodes`)."""
        self.totals.connected += connected - state.connected
        state.connected = connected
        self._note_attention(state)

    def _note_attention(self, state: NodeState) -> None:
        if not state.ready or not state.connected or state.cordoned:
            self.attention.add(state.name)
        else:
            self.attention.discard(state.name)

    def assume(self, key: str, node: str, cpu: int, mem: int) -> None:
        """Count a placement decision against the node before its bind is durable."""
        self._set_accounting(key, (node, cpu, mem))
        self.pending.pop(key, None)

    def forget(self, key: str) -> None:
        """Undo an assumption whose bind failed: recount from the durable object."""
        pod = self.pods.get(key)
        self._account(key, pod)
        if pod is not None and needs_node(pod) and key not in self.pending:
            self.pending[key] = time.monotonic()
            self.pending_changed.set()

    def pods_on(self, node: str) -> list[Pod]:
        """The pods bound to `node` that occupy it (not finished)."""
        state = self.nodes.get(node)
        keys = state.pods if state is not None else self.unknown_nodes.get(node, ())
        return [self.pods[k] for k in keys if k in self.pods]
