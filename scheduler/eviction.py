"""Taking pods off a node that was lost or drained.

A pod whose restartPolicy is Always or OnFailure is *replaced*: the same pod
(name, spec) gets a new incarnation uid and goes back to the scheduling queue;
the old incarnation is fenced off, since the hub only lets a node run the uids
of pods bound to it. A pod with restartPolicy Never is marked Failed with the
reason (`NodeLost`), as Kubernetes does, and stays for people to inspect.
"""

from __future__ import annotations

import uuid

from common.models import (
    ContainerState,
    ContainerStateTerminated,
    ContainerStatus,
    Pod,
    PodStatus,
    now,
)
from scheduler.cluster import TERMINAL_PHASES, ClusterState
from scheduler.events import EventRecorder, pod_ref
from scheduler.objects import decode, encode, mutable_copy, pod_store_key
from scheduler.store import Op, Store


def replacement(pod: Pod, reason: str, message: str) -> Pod:
    """The pod as a new, unbound incarnation, remembering why the old one ended."""
    stamp = now()
    new = mutable_copy(pod)
    old_uid = pod.metadata.uid
    new.metadata.uid = str(uuid.uuid4())
    new.spec.node_name = None
    previous = {s.name: s for s in pod.status.container_statuses}
    new.status = PodStatus(
        phase="Pending",
        message=f"{message}; replaces incarnation {old_uid}",
        container_statuses=[
            ContainerStatus(
                name=c.name,
                image=c.image,
                restart_count=(previous[c.name].restart_count + 1) if c.name in previous else 1,
                state=ContainerState(),
                last_state=ContainerState(
                    terminated=ContainerStateTerminated(
                        exit_code=137, reason=reason, message=message, finished_at=stamp
                    )
                ),
            )
            for c in pod.spec.containers
        ],
    )
    return new


def failed(pod: Pod, reason: str, message: str) -> Pod:
    """The pod marked Failed for good (restartPolicy Never)."""
    new = mutable_copy(pod)
    new.status.phase = "Failed"
    new.status.reason = reason
    new.status.message = message
    new.status.conditions = [c for c in new.status.conditions if c.type != "Ready"]
    return new


def evicted(pod: Pod, reason: str, message: str) -> Pod:
    """The pod as an eviction leaves it: a new incarnation, or Failed for good (Never)."""
    if pod.spec.restart_policy != "Never":
        return replacement(pod, reason, message)
    return failed(pod, reason, message)


def record_eviction(events: EventRecorder, pod: Pod, new: Pod, reason: str, message: str) -> None:
    """The events of an eviction written: on the old incarnation, and on the new one."""
    events.record(pod_ref(pod), reason, message, type="Warning")
    if new.metadata.uid != pod.metadata.uid:
        events.record(
            pod_ref(new),
            "Rescheduled",
            f"incarnation {pod.metadata.uid} on {pod.spec.node_name} replaced by "
            f"{new.metadata.uid}",
        )


async def evict_node_pods(
    store: Store, cluster: ClusterState, events: EventRecorder, node: str, reason: str, message: str
) -> list[Pod]:
    """Replace or fail every unfinished pod bound to `node`, in one transaction; the pods
    evicted (as they were).

    Each is built on its newest version, queued writes included, as the hub's status
    writes are: on the durable one, a status report in flight made the eviction a
    conflict, and nothing moved the pod later once its node was deleted. With no await
    between the reads and the transaction's guards, they hold. One transaction, not one
    write awaited after another: while its agent kept reporting, 40 pods' commits in a
    row outlasted a client's 10 s timeout on a slow machine."""
    evictions: list[tuple[Pod, Pod]] = []
    ops: list[Op] = []
    for listed in cluster.pods_on(node):
        key = pod_store_key(listed)
        kv = store.latest(key)
        pod = decode(kv, Pod) if kv is not None else None
        if (
            kv is None
            or pod is None
            or pod.spec.node_name != node
            or pod.status.phase in TERMINAL_PHASES
            or pod.metadata.deletion_timestamp  # its deletion finishes it (podfinal.py)
        ):
            continue
        new = evicted(pod, reason, message)
        evictions.append((pod, new))
        ops.append(Op("put", key, encode(new), new, kv.mod_revision))
    await store.txn(ops)
    for pod, new in evictions:
        record_eviction(events, pod, new, reason, message)
    return [pod for pod, _ in evictions]
