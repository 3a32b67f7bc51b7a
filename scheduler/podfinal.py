"""How a pod leaves the store: once it runs nowhere, and once no finalizer holds it.

Deleting a pod that may still run (bound to a Ready node with a connected agent, not
finished) only marks it (`deletionTimestamp`); its agent stops it and confirms, and the
pod is removed then (the hub), or after its grace period if the agent never confirms
(the node lifecycle controller). A pod that runs nowhere is removed at once.

Finalizers, as in Kubernetes: while `metadata.finalizers` names any, a deleted pod is
only marked, whatever else holds, and stays until the last one is removed; whoever put
a finalizer there removes it once done (the Job controller counts the pod first). A
held pod that has stopped is set Failed (unless it had finished), as the kubelet moves
a deleted pod to a terminal phase, so that its holders see it end. The node lifecycle
controller's pass removes a marked pod once it is both stopped and free (within half a
second of its last finalizer going), which covers every way a finalizer is removed.
"""

from __future__ import annotations

from datetime import datetime

from common.models import (
    ContainerState,
    ContainerStateTerminated,
    Pod,
    PodCondition,
    PodStatus,
    now,
)
from scheduler.cluster import TERMINAL_PHASES, ClusterState
from scheduler.objects import encode, mutable_copy, replaced
from scheduler.store import KV, Store

STOPPED_HELD = "stopped: the pod was deleted, and finalizers keep it until they are removed"
# What the kubelet says of a container whose end it could not see; the agent reports
# a stop, not each container's exit.
UNKNOWN_END = "ContainerStatusUnknown"


def may_run(cluster: ClusterState, pod: Pod) -> bool:
    """Might the pod's containers still run? Bound to a Ready node whose agent is
    connected, and not finished: only its agent can say when it has stopped."""
    node = cluster.nodes.get(pod.spec.node_name or "")
    return (
        node is not None
        and node.ready
        and node.connected
        and pod.status.phase not in TERMINAL_PHASES
    )


def must_wait(pod: Pod, running: bool) -> bool:
    """Is a delete of the pod a mark rather than a removal (its agent must stop it first,
    or finalizers hold it)?"""
    return running or bool(pod.metadata.finalizers)


async def mark_deleted(
    store: Store, key: str, kv: KV, pod: Pod, stamp: datetime, grace: int | None = None
) -> KV:
    """Write the pod marked for deletion at `stamp` (with `grace` seconds to stop, if
    given); guarded by `kv`'s revision (Conflict, NotFound)."""
    marked = marked_for_deletion(pod, stamp, grace)
    return await store.put(key, encode(marked), obj=marked, expect=kv.mod_revision)


def marked_for_deletion(pod: Pod, stamp: datetime, grace: int | None = None) -> Pod:
    """A copy of the pod marked for deletion at `stamp` (with `grace` seconds to stop, if
    given)."""
    marked = mutable_copy(pod)
    marked.metadata.deletion_timestamp = stamp
    if grace is not None:
        marked.spec.termination_grace_period_seconds = grace
    return marked


async def remove_stopped(store: Store, key: str, kv: KV, pod: Pod) -> None:
    """The marked pod runs nowhere now (its agent confirmed the stop, or no agent will):
    removed, or, while finalizers hold it, set Failed (unless it finished) and kept.
    Guarded by `kv`'s revision (Conflict, NotFound)."""
    if not pod.metadata.finalizers:
        await store.delete(key, expect=kv.mod_revision)
        return
    if pod.status.phase in TERMINAL_PHASES:
        return
    stopped = replaced(pod, {"status": stopped_status(pod.status, now())})
    await store.put(key, encode(stopped), obj=stopped, expect=kv.mod_revision)


def stopped_status(status: PodStatus, stamp: datetime) -> PodStatus:
    """The status of a deleted pod held by finalizers once it has stopped: Failed, not
    ready, every container that had not ended terminated (exit code 137, reason
    ContainerStatusUnknown, as the kubelet reports an end it did not see)."""
    containers = [
        cs
        if cs.state.terminated is not None
        else replaced(
            cs,
            {
                "state": ContainerState(
                    terminated=ContainerStateTerminated(
                        exit_code=137,
                        reason=UNKNOWN_END,
                        message="stopped as its pod was deleted",
                        started_at=cs.state.running.started_at if cs.state.running else None,
                        finished_at=stamp,
                        container_id=cs.container_id,
                    )
                ),
                "ready": False,
                "started": False,
            },
        )
        for cs in status.container_statuses
    ]
    conditions = [
        PodCondition(type=c.type, status="False", reason="PodCompleted", last_transition_time=stamp)
        if c.type in ("Ready", "ContainersReady") and c.status == "True"
        else c
        for c in status.conditions
    ]
    changes = {"container_statuses": containers, "conditions": conditions}
    return replaced(status, {"phase": "Failed", "message": STOPPED_HELD, **changes})
