"""Node lifecycle: heartbeats missing -> NotReady -> pods evicted and replaced.

    Ready ──(no heartbeat for node_grace_seconds)──> NotReady(Unknown)
      ^                                                 │
      └──────────(a heartbeat or a new link)────────────┤
                                                        │ no heartbeat for eviction_seconds
                                                        │ (counted from the last heartbeat)
                                                        v
                                  pods replaced elsewhere (Always/OnFailure)
                                  or Failed with reason NodeLost (Never)

While a node is NotReady, its Running pods' Ready condition is False with reason
NodeNotReady (Kubernetes' MarkPodsNotReady; scheduler/podready.py), a pod made ready
meanwhile (a late report of its agent) included, and True again once the node is
Ready without having said otherwise.

Pods bound to a node that does not exist are evicted the same way once
ORPHAN_QUARANTINE has passed (Kubernetes' PodGC). A pod marked for deletion that
runs nowhere (finished, or on a node that is not Ready or no longer exists) is
removed at once, since no agent will confirm it stopped; one whose agent has not
confirmed within its grace period plus FORCE_MARGIN is removed too. Finalizers
hold either (scheduler/podfinal.py).
Level-triggered: every pass looks at the whole state, so a restart of the
scheduler or a missed event is healed by the next pass.

After a start the scheduler has heard from no agent, and agents that lost the
old scheduler are redialling with backoff. So, as Nomad does after a leader
failover (failover_heartbeat_ttl), a node not heard from since the start counts
as heard from `failover_grace_seconds - grace` after it: none is marked NotReady
in the first failover_grace_seconds, and eviction follows eviction_seconds -
node_grace_seconds after that. Once its agent is back, the usual timeouts apply.
A node the store already holds as NotReady is evicted eviction_seconds after the
start, as it would have been without the restart.

A scheduler that stalls (a VM or process pause, a long garbage-collector pause)
reads no frame meanwhile, and on waking its timers may run before the frames
buffered in its sockets are read. So a pass that wakes at least half a node
grace late (`scheduler.stall`) treats the silence as the scheduler's own: every
node counts as heard at that moment (NotReady one grace later at the earliest,
evicted eviction_seconds later), as after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from datetime import UTC, datetime

from common.models import Pod
from scheduler import podready
from scheduler.context import Context
from scheduler.events import node_ref, pod_ref
from scheduler.eviction import evict_node_pods
from scheduler.hub import set_node_ready
from scheduler.objects import pod_store_key
from scheduler.podfinal import may_run, remove_stopped
from scheduler.stall import woke_from_stall
from scheduler.store import Conflict, NotFound

_LOGGER = logging.getLogger(__name__)

FORCE_MARGIN = 30.0
# How long pods may stay bound to a node that does not exist before they are evicted as
# from a lost node: a node named in a pod's spec may join a little later; a bind may
# land after its node was deleted. Kubernetes' PodGC waits as long (its quarantine).
ORPHAN_QUARANTINE = 40.0


class NodeLifecycleController:
    def __init__(self, ctx: Context) -> None:
        self._config = ctx.config
        self._store = ctx.store
        self._cluster = ctx.cluster
        self._metrics = ctx.metrics
        self._errors = ctx.errors
        self._events = ctx.events
        self.not_ready_since: dict[str, float] = {}
        # Nodes that do not exist but have pods bound: when first seen so.
        self.missing_since: dict[str, float] = {}
        self.period = min(0.5, ctx.config.node_grace_seconds / 4)
        # After cluster.load(): the nodes it loaded were last heard from before this.
        self.started = time.monotonic()
        self.resumed = -math.inf  # when this scheduler last woke from a stall
        # Nodes some of whose pods may carry podready's mark: those to look at once Ready.
        # From the store at the start (once), then as this controller marks them.
        # Of those, the NotReady nodes all of whose ready pods are marked: not looked at
        # again while they stay NotReady, unless one of their pods is made ready meanwhile
        # (`on_pod_change`): a pass then looks at the few nodes that changed, not at all
        # the NotReady nodes of a partition.
        self.settled: set[str] = set()
        # While a pass marks pods: the nodes a pod was made ready on since it began, which
        # it must not settle (it may have read that pod before the change).
        self._readied: set[str] | None = None
        ctx.cluster.pod_listeners.append(self.on_pod_change)
        self.marked: set[str] = {
            pod.spec.node_name
            for pod in self._cluster.pods.values()
            if pod.spec.node_name is not None and podready.is_marked(pod)
        }

    def on_pod_change(self, key: str, old: Pod | None, new: Pod | None) -> None:
        """A pod made ready on a settled node (its status written through the API, or a
        late report of its agent) unsettles the node, so that the next pass marks it, as
        Kubernetes' node lifecycle controller marks a pod updated on a NotReady node. Runs
        for every pod write: a set lookup, unless a pass is marking."""
        node = new.spec.node_name if new is not None else None
        if node is None or (self._readied is None and node not in self.settled):
            return
        assert new is not None  # it has a node
        if podready.markable(new):
            self.settled.discard(node)
            if self._readied is not None:
                self._readied.add(node)

    async def run(self) -> None:
        while True:
            try:
                await self.reconcile()
            except Exception:  # one bad pass must not stop node health checking
                _LOGGER.exception("node lifecycle pass failed")
            delay = self.next_pass_in(time.monotonic())
            due = time.monotonic() + delay
            await asyncio.sleep(delay)
            self.note_wake(due, time.monotonic())

    def note_wake(self, due: float, woke: float) -> None:
        """A pass due at `due` woke at `woke`. If late, the event loop ran nothing meanwhile,
        so no heartbeat was read either: from half a grace late on (`woke_from_stall`), that
        silence is counted as the scheduler's own, not the nodes' (the module's docstring).
        Every wake's lateness is the event loop's lag (`corral_event_loop_lag_seconds`)."""
        self._metrics.loop_lag.observe(max(0.0, woke - due))
        if not woke_from_stall(due, woke, self._config.node_grace_seconds):
            return
        self.resumed = woke
        self._metrics.stalls.inc()
        self._errors.add(f"scheduler stalled for {woke - due:.1f}s: node timeouts restart from now")

    def next_pass_in(self, mono: float) -> float:
        """Seconds to the next pass: the nearest NotReady or eviction deadline, at most
        `period` (deletions and new nodes are picked up by the periodic pass), so a node
        is evicted when its time is up rather than up to one period later."""
        # Runs twice a second over every node: the loop reads plain attributes only.
        deadline = mono + self.period
        grace, eviction = self._config.node_grace_seconds, self._config.eviction_seconds
        stretches = self._cluster.heartbeat_stretch
        for name, state in self._cluster.nodes.items():
            stretch = stretches.get(name, 1.0)
            heard = self._heard(state.last_heartbeat, grace * stretch)
            if state.ready:
                due = heard + grace * stretch
            else:
                since = self.not_ready_since.get(name, mono)
                due = self._silent_from(heard, since) + eviction * stretch
            if due < deadline:
                deadline = due
        return max(0.01, deadline - mono)

    async def reconcile(self) -> None:
        mono = time.monotonic()
        marks: list[str] = []  # NotReady nodes: their ready pods are marked not ready
        restores: list[str] = []  # Ready nodes with marked pods: the marks taken back
        least_grace = self._config.node_grace_seconds  # stretches are never below 1
        for name, state in list(self._cluster.nodes.items()):
            if state.ready:
                if self.not_ready_since:
                    self.not_ready_since.pop(name, None)
                if self.marked and name in self.marked:
                    restores.append(name)
                if mono - state.last_heartbeat <= least_grace:
                    continue  # the common case, decided without the node's stretch
                grace, eviction = self._timeouts(name)
                if mono - self._heard(state.last_heartbeat, grace) > grace:
                    age = mono - state.last_heartbeat
                    self._errors.add(f"node {name}: no heartbeat for {age:.1f}s; marking NotReady")
                    self._events.record(
                        node_ref(name),
                        "NodeNotReady",
                        f"Node {name} status is now: NodeNotReady (no heartbeat for {age:.1f}s)",
                        type="Warning",
                    )
                    await set_node_ready(
                        self._store,
                        name,
                        False,
                        "NodeStatusUnknown",
                        f"corral-agent stopped posting heartbeats ({age:.1f}s > {grace:g}s)",
                    )
                continue
            grace, eviction = self._timeouts(name)
            if name not in self.settled:
                marks.append(name)
            since = self.not_ready_since.setdefault(name, mono)
            # Evict once the node has been silent for eviction_seconds in all (counted
            # from its last heartbeat), and NotReady for at least one pass.
            silent = mono - self._silent_from(self._heard(state.last_heartbeat, grace), since)
            if silent >= eviction and (mono > since or not state.connected):
                await self._evict_node(
                    name, f"node {name} sent no heartbeat for more than {eviction:g}s"
                )
        for name in [n for n in self.not_ready_since if n not in self._cluster.nodes]:
            del self.not_ready_since[name]  # the node was deleted while NotReady
            self.marked.discard(name)
            self.settled.discard(name)
        await self._set_pods_ready(marks, restores)
        await self._evict_orphans(mono)
        await self._finish_deletions()

    async def _set_pods_ready(self, marks: list[str], restores: list[str]) -> None:
        """Ready False on the running, ready pods of the NotReady nodes `marks`, and True
        again on the marked pods of the Ready nodes `restores`: every write of the pass
        at once (one commit), whatever the number of nodes."""
        changes: list[tuple[str, Pod, Pod, int]] = []  # node, pod, changed, revision
        work = [(n, podready.marked_not_ready) for n in marks]
        work += [(n, podready.restored) for n in restores]
        self._readied = set()
        try:
            for i, (node, change) in enumerate(work):
                if i and not i % 64:
                    await asyncio.sleep(0)  # a partition of thousands of nodes: let others run
                for pod in self._cluster.pods_on(node):
                    changed = change(pod, node)
                    kv = self._cluster.pod_kvs.get(pod_store_key(pod))
                    if changed is not None and kv is not None:
                        changes.append((node, pod, changed, kv.mod_revision))
            self.marked.update(marks)
            written = await asyncio.gather(
                *(podready.write(self._store, changed, rev) for _, _, changed, rev in changes)
            )
        finally:
            readied, self._readied = self._readied, None
        undone = set()
        for (node, pod, changed, _), ok in zip(changes, written, strict=True):
            if not ok:
                undone.add(node)  # lost to another write: the next pass looks again
            elif podready.is_marked(changed):
                self._events.record(
                    pod_ref(pod), "NodeNotReady", f"Node {node} is not ready", type="Warning"
                )
        self.marked -= set(restores) - undone
        self.settled -= set(restores)
        # Not the nodes a pod was made ready on meanwhile: it may have been read before.
        self.settled |= set(marks) - undone - readied

    async def _evict_orphans(self, mono: float) -> None:
        """Pods bound to a node that does not exist are evicted as from a lost node once
        ORPHAN_QUARANTINE has passed: no agent runs them, and nothing else would move them
        (they waited Pending for good, their requests held against no node)."""
        unknown = self._cluster.unknown_nodes
        for name in [n for n in self.missing_since if n not in unknown]:
            del self.missing_since[name]  # the node joined, or its pods went
        for name in list(unknown):
            since = self.missing_since.setdefault(name, mono)
            if mono - since >= ORPHAN_QUARANTINE:
                await self._evict_node(
                    name, f"node {name} does not exist (for {ORPHAN_QUARANTINE:g}s)"
                )

    def _heard(self, last_heartbeat: float, grace: float) -> float:
        """When the node counts as last heard from: its last heartbeat; if that was
        before this controller started, no earlier than leaves the node
        failover_grace_seconds from the start to reconnect; never before the scheduler
        last woke from a stall."""
        heard = last_heartbeat
        if last_heartbeat <= self.started:
            heard = max(heard, self.started + self._config.failover_grace_seconds - grace)
        return max(heard, self.resumed)

    def _silent_from(self, heard: float, not_ready_since: float) -> float:
        """Since when a NotReady node counts as silent, for its eviction."""
        return max(min(heard, not_ready_since), self.resumed)

    def _timeouts(self, name: str) -> tuple[float, float]:
        """(grace, eviction) for this node: the configured ones, stretched as its
        heartbeat interval was (config.heartbeat_stretch)."""
        stretch = self._cluster.heartbeat_stretch.get(name, 1.0)
        return (
            self._config.node_grace_seconds * stretch,
            self._config.eviction_seconds * stretch,
        )

    async def _evict_node(self, name: str, message: str) -> None:
        # All of the node's pods at once, in one commit.
        for pod in await evict_node_pods(
            self._store, self._cluster, self._events, name, "NodeLost", message
        ):
            self._metrics.evictions.labels(reason="NodeLost").inc()
            _LOGGER.info("pod %s evicted from lost node %s", pod_store_key(pod), name)

    async def _finish_deletions(self) -> None:
        wall = datetime.now(UTC)
        for key in list(self._cluster.terminating):
            pod = self._cluster.pods.get(key)
            stamp = pod.metadata.deletion_timestamp if pod is not None else None
            if pod is None or stamp is None:
                continue
            overdue = (wall - stamp).total_seconds() > (
                pod.spec.termination_grace_period_seconds + FORCE_MARGIN
            )
            # Finished, it runs nowhere: a pod its finalizers held goes once they are gone.
            if not may_run(self._cluster, pod) or overdue:
                kv = self._cluster.pod_kvs.get(key)
                if kv is not None:
                    with contextlib.suppress(Conflict, NotFound):
                        await remove_stopped(self._store, key, kv, pod)
