"""The scheduling loop: take pending pods, place them, bind them durably.

Placement runs on the event loop against the in-memory `ClusterState`; each
decision is assumed there at once, and binds are written concurrently so the
store's group commit puts hundreds of them in one transaction. A pod that fits
nowhere gets `PodScheduled=False, reason Unschedulable` with the per-reason
counts, and waits until capacity changes (a node joins or becomes ready, a pod
finishes or is deleted) or `RETRY_SECONDS` pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from common.models import Pod, PodCondition, now
from scheduler.cluster import ClusterState, needs_node
from scheduler.metrics import SchedulerMetrics
from scheduler.objects import encode, mutable_copy
from scheduler.placement import Placement
from scheduler.recent import RecentErrors
from scheduler.store import Conflict, NotFound, Store, StoreError

_LOGGER = logging.getLogger(__name__)

BATCH = 2000  # pods placed per pass before yielding to the event loop
RETRY_SECONDS = 5.0


class Scheduler:
    def __init__(
        self,
        store: Store,
        cluster: ClusterState,
        placement: Placement,
        metrics: SchedulerMetrics,
        errors: RecentErrors,
    ) -> None:
        self._store = store
        self._cluster = cluster
        self._placement = placement
        self._metrics = metrics
        self._errors = errors
        self.unschedulable: dict[str, str] = {}  # pod key -> last message written
        self._parked: set[str] = set()  # fit nowhere; retried when capacity changes
        self._binds: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        cluster = self._cluster
        try:
            while True:
                if not self._ready_keys():
                    cluster.pending_changed.clear()
                    cluster.capacity_changed.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(RETRY_SECONDS):
                            await _first(cluster.pending_changed, cluster.capacity_changed)
                    if cluster.capacity_changed.is_set() or not cluster.pending_changed.is_set():
                        self.unschedulable_retry()
                    continue
                self._schedule_batch()
                await asyncio.sleep(0)  # let binds, the API and the hub run
        finally:
            for task in self._binds:
                task.cancel()
            await asyncio.gather(*self._binds, return_exceptions=True)

    def unschedulable_retry(self) -> None:
        """Give pods that fit nowhere another try (capacity changed or time passed)."""
        self._parked.clear()
        pending = self._cluster.pending
        for key in [k for k in self.unschedulable if k not in pending]:
            del self.unschedulable[key]

    def _ready_keys(self) -> list[str]:
        keys = []
        for key in self._cluster.pending:
            if key not in self._parked:
                keys.append(key)
                if len(keys) >= BATCH:
                    break
        return keys

    def _schedule_batch(self) -> None:
        cluster = self._cluster
        for key in self._ready_keys():
            pod = cluster.pods.get(key)
            if pod is None or not needs_node(pod):
                cluster.pending.pop(key, None)
                continue
            started = time.perf_counter()
            decision = self._placement.place(pod)
            self._metrics.placement_seconds.observe(time.perf_counter() - started)
            if decision.node is None:
                self._metrics.placement_attempts.labels(result="unschedulable").inc()
                self._parked.add(key)
                self._mark_unschedulable(key, pod, decision.message)
                continue
            self._metrics.placement_attempts.labels(result="scheduled").inc()
            cpu, mem = pod.spec.requests()
            first_seen = cluster.pending.get(key, time.monotonic())
            cluster.assume(key, decision.node, cpu, mem)
            self._parked.discard(key)
            self.unschedulable.pop(key, None)
            task = asyncio.create_task(self._bind(key, pod, decision.node, first_seen))
            self._binds.add(task)
            task.add_done_callback(self._binds.discard)

    async def _bind(self, key: str, pod: Pod, node: str, first_seen: float) -> None:
        kv = self._cluster.pod_kvs.get(key)
        if kv is None:
            self._cluster.forget(key)
            return
        bound = mutable_copy(pod)
        bound.spec.node_name = node
        _set_condition(
            bound, PodCondition(type="PodScheduled", status="True", last_transition_time=now())
        )
        bound.status.reason = None
        bound.status.message = None
        try:
            await self._store.put(key, encode(bound), obj=bound, expect=kv.mod_revision)
        except (Conflict, NotFound):
            # Changed or deleted meanwhile: recount from the durable object, which the
            # watch will bring back to the queue if it still needs a node.
            self._cluster.forget(key)
            return
        except StoreError as exc:
            self._errors.add(f"bind {key} to {node}: {exc}")
            self._cluster.forget(key)
            return
        self._metrics.scheduling_latency.observe(time.monotonic() - first_seen)
        self._metrics.binds.inc()

    def _mark_unschedulable(self, key: str, pod: Pod, message: str) -> None:
        if self.unschedulable.get(key) == message:
            return
        self.unschedulable[key] = message
        kv = self._cluster.pod_kvs.get(key)
        if kv is None:
            return
        updated = mutable_copy(pod)
        _set_condition(
            updated,
            PodCondition(
                type="PodScheduled",
                status="False",
                reason="Unschedulable",
                message=message,
                last_transition_time=now(),
            ),
        )
        task = asyncio.create_task(self._write_status(key, updated, kv.mod_revision))
        self._binds.add(task)
        task.add_done_callback(self._binds.discard)

    async def _write_status(self, key: str, pod: Pod, expect: int) -> None:
        with contextlib.suppress(Conflict, NotFound):
            try:
                await self._store.put(key, encode(pod), obj=pod, expect=expect)
            except StoreError as exc:
                self._errors.add(f"update {key}: {exc}")


def _set_condition(pod: Pod, condition: PodCondition) -> None:
    conditions = [c for c in pod.status.conditions if c.type != condition.type]
    old = next((c for c in pod.status.conditions if c.type == condition.type), None)
    if old is not None and old.status == condition.status:
        condition.last_transition_time = old.last_transition_time
    pod.status.conditions = [*conditions, condition]


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
