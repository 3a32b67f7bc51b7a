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
from collections.abc import Awaitable
from datetime import datetime

from common.models import Pod, PodCondition, PodStatus, now
from scheduler.cluster import needs_node
from scheduler.context import Context
from scheduler.events import pod_ref
from scheduler.objects import (
    bound_pod_json,
    encode,
    replaced,
    split_unbound_pod,
    status_json,
)
from scheduler.placement import Placement
from scheduler.store import KV, Conflict, NotFound, Op, StoreError

_LOGGER = logging.getLogger(__name__)

BATCH = 256  # pods placed per pass before yielding to the event loop (bounds API latency)
RETRY_SECONDS = 5.0


class Scheduler:
    def __init__(self, ctx: Context, placement: Placement) -> None:
        self._store = ctx.store
        self._cluster = ctx.cluster
        self._placement = placement
        self._metrics = ctx.metrics
        self._errors = ctx.errors
        self._events = ctx.events
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
        metrics = self._metrics
        # One time for the batch (Kubernetes times are whole seconds), and so one
        # PodScheduled condition, shared by the bound pods as their other fields are.
        stamp = now()
        scheduled = PodCondition(type="PodScheduled", status="True", last_transition_time=stamp)
        # The bound statuses of the batch and their JSON, by the pending status's JSON: the
        # pending pods of a batch mostly have the same status, so they share the bound one.
        statuses: dict[bytes, tuple[PodStatus, bytes]] = {}
        placed = unschedulable = 0
        binds: list[tuple[str, str, float, Awaitable[list[KV]]]] = []
        timings: list[float] = []  # placement_seconds, observed once the batch is done
        for key in self._ready_keys():
            pod = cluster.pods.get(key)
            if pod is None or not needs_node(pod):
                cluster.pending.pop(key, None)
                continue
            started = time.perf_counter()
            decision = self._placement.place(pod)
            timings.append(time.perf_counter() - started)
            node = decision.node
            if node is None:
                unschedulable += 1
                self._parked.add(key)
                self._mark_unschedulable(key, pod, decision.message, stamp)
                continue
            placed += 1
            kv = cluster.pod_kvs.get(key)
            if kv is None:
                continue
            first_seen = cluster.pending.get(key, time.monotonic())
            cluster.assume(key, node, *decision.requests)
            self._parked.discard(key)
            self.unschedulable.pop(key, None)
            bound, value = _bind(pod, node, kv.value, scheduled, statuses)
            write = self._store.txn([Op("put", key, value, bound, kv.mod_revision)])
            binds.append((key, node, first_seen, write))
            self._events.record(
                pod_ref(pod),
                "Scheduled",
                f"Successfully assigned {pod.key} to {node}",
                timestamp=stamp,
            )
        # Counted once a batch: nothing can read the counters in the middle of one.
        metrics.placement_seconds.observe_all(timings)
        if placed:
            metrics.placement_attempts.labels(result="scheduled").inc(placed)
        if unschedulable:
            metrics.placement_attempts.labels(result="unschedulable").inc(unschedulable)
        if binds:
            # One task waits for the whole batch: the group commit makes them durable together.
            task = asyncio.create_task(self._finish_binds(binds))
            self._binds.add(task)
            task.add_done_callback(self._binds.discard)

    async def _finish_binds(self, binds: list[tuple[str, str, float, Awaitable[list[KV]]]]) -> None:
        # Awaited one by one, not gathered: they are durable together, so after the first
        # the rest are done and awaiting them costs nothing, while gather would add a
        # callback to each and run them all through the event loop (a few us a bind).
        # Futures as gather makes them, so that coroutines still run concurrently.
        writes = [asyncio.ensure_future(w) for *_, w in binds]
        results: list[list[KV] | BaseException] = []
        try:
            for write in writes:
                try:
                    results.append(await write)
                except Exception as exc:  # as gather's return_exceptions
                    results.append(exc)
        except asyncio.CancelledError:
            for write in writes:  # as gather, cancelled: nothing is left unawaited
                write.cancel()
            raise
        done = time.monotonic()
        latencies: list[float] = []
        for (key, node, first_seen, _), result in zip(binds, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Conflict | NotFound):
                    self._errors.add(f"bind {key} to {node}: {result}")
                # Changed or deleted meanwhile: recount from the durable object, which
                # the watch brings back to the queue if it still needs a node.
                self._cluster.forget(key)
                continue
            latencies.append(done - first_seen)
        self._metrics.scheduling_latency.observe_all(latencies)
        if latencies:  # one per bind that landed
            self._metrics.binds.inc(len(latencies))
            self._metrics.last_bind.set(time.time())

    def _mark_unschedulable(self, key: str, pod: Pod, message: str, stamp: datetime) -> None:
        if self.unschedulable.get(key) == message:
            return
        self.unschedulable[key] = message
        self._events.record(
            pod_ref(pod), "FailedScheduling", message, type="Warning", timestamp=stamp
        )
        kv = self._cluster.pod_kvs.get(key)
        if kv is None:
            return
        status = pod.status.model_copy()
        status.conditions = _with_condition(
            pod.status.conditions,
            PodCondition(
                type="PodScheduled",
                status="False",
                reason="Unschedulable",
                message=message,
                last_transition_time=stamp,
            ),
        )
        updated = pod.model_copy(update={"status": status})
        task = asyncio.create_task(self._write_status(key, updated, kv.mod_revision))
        self._binds.add(task)
        task.add_done_callback(self._binds.discard)

    async def _write_status(self, key: str, pod: Pod, expect: int) -> None:
        with contextlib.suppress(Conflict, NotFound):
            try:
                await self._store.put(key, encode(pod), obj=pod, expect=expect)
            except StoreError as exc:
                self._errors.add(f"update {key}: {exc}")


def _with_condition(conditions: list[PodCondition], condition: PodCondition) -> list[PodCondition]:
    """`conditions` with `condition` set; the transition time is kept if the status is the
    same (in a copy: `condition` may be shared)."""
    old = next((c for c in conditions if c.type == condition.type), None)
    if old is not None and old.status == condition.status:
        condition = condition.model_copy(update={"last_transition_time": old.last_transition_time})
    return [*(c for c in conditions if c.type != condition.type), condition]


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _bound(pod: Pod, node: str, scheduled: PodCondition) -> Pod:
    """The pod bound to `node` with the PodScheduled=True condition `scheduled`; shallow
    copies: the cached object and its unchanged parts are shared."""
    return _placed(pod, node, _bound_status(pod.status, scheduled))


def _placed(pod: Pod, node: str, status: PodStatus) -> Pod:
    spec = replaced(pod.spec, {"node_name": node})
    return replaced(pod, {"spec": spec, "status": status})


def _bound_status(status: PodStatus, scheduled: PodCondition) -> PodStatus:
    conditions = _with_condition(status.conditions, scheduled)
    return replaced(status, {"reason": None, "message": None, "conditions": conditions})


def _bind(
    pod: Pod,
    node: str,
    stored: bytes,
    scheduled: PodCondition,
    statuses: dict[bytes, tuple[PodStatus, bytes]],
) -> tuple[Pod, bytes]:
    """`_bound(pod, node, scheduled)` and its stored JSON, made from the pod's stored JSON
    `stored`: the spec's nodeName and the new status spliced in, which costs a fraction of
    serializing the whole pod. The bound status is made and serialized once for all the
    pods of the batch with the same pending status (`statuses`, kept by the caller for one
    batch: it holds the batch's `scheduled`); equal statuses, so equal bound ones."""
    parts = split_unbound_pod(stored)
    if parts is None:  # not as `encode` writes a pod: serialize the whole of it
        bound = _bound(pod, node, scheduled)
        return bound, encode(bound)
    head, spec_rest, pending_status = parts
    shared = statuses.get(pending_status)
    if shared is None:
        status = _bound_status(pod.status, scheduled)
        shared = statuses[pending_status] = (status, status_json(status))
    return _placed(pod, node, shared[0]), bound_pod_json(head, node, spec_rest, shared[1])
