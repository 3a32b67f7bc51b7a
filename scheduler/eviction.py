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
from scheduler.cluster import TERMINAL_PHASES
from scheduler.events import EventRecorder, pod_ref
from scheduler.objects import encode, mutable_copy, pod_store_key
from scheduler.store import Conflict, NotFound, Store


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


async def evict(
    store: Store, pod: Pod, expect: int, reason: str, message: str, events: EventRecorder
) -> bool:
    """Replace or fail one pod; False if it changed meanwhile (the next pass retries)."""
    if pod.status.phase in TERMINAL_PHASES:
        return True
    new = evicted(pod, reason, message)
    key = pod_store_key(pod)
    try:
        await store.put(key, encode(new), obj=new, expect=expect)
    except (Conflict, NotFound):
        return False
    record_eviction(events, pod, new, reason, message)
    return True
