"""A NotReady node's pods are not ready either (Kubernetes' MarkPodsNotReady).

While a node is NotReady nothing is known of its pods: the node lifecycle controller
sets the Ready condition of each of its Running, ready pods to False with reason
`NodeNotReady`, so that a Deployment stops counting them available and the status
summary counts them not ready (READY in `get pods` counts ready containers, as
Kubernetes', and is left as it was). The agent owns a pod's conditions (the hub merges
its reports over them), so the first report from the node replaces the mark. A node
that becomes Ready again without reporting (its link stayed up: the agent was paused,
or its heartbeats were late) has nothing new to say of its pods; the mark, the only
change since its last report, is then taken back: Ready is True again.
"""

from __future__ import annotations

from common.models import Pod, PodCondition, now
from scheduler.objects import encode, mutable_copy, pod_store_key
from scheduler.store import Conflict, NotFound, Store, StoreUnavailable

NODE_NOT_READY = "NodeNotReady"


def _ready(pod: Pod) -> PodCondition | None:
    return next((c for c in pod.status.conditions if c.type == "Ready"), None)


def is_marked(pod: Pod) -> bool:
    """Its Ready condition is False for its node's sake only."""
    ready = _ready(pod)
    return ready is not None and ready.status == "False" and ready.reason == NODE_NOT_READY


def markable(pod: Pod) -> bool:
    """It runs and is ready: on a NotReady node, it is to be marked."""
    if pod.status.phase != "Running":
        return False
    ready = _ready(pod)
    return ready is not None and ready.status == "True"


def marked_not_ready(pod: Pod, node: str) -> Pod | None:
    """The pod with Ready False for its NotReady node; None unless it runs and is ready."""
    if not markable(pod):
        return None
    return _with_ready(pod, False, f"node {node} is not ready")


def restored(pod: Pod, node: str = "") -> Pod | None:
    """The pod Ready again, its node being Ready; None unless it carries the mark."""
    return _with_ready(pod, True, None) if is_marked(pod) else None


def _with_ready(pod: Pod, ready: bool, message: str | None) -> Pod:
    new = mutable_copy(pod)
    new.status.conditions = [
        PodCondition(
            type="Ready",
            status="True" if ready else "False",
            reason=None if ready else NODE_NOT_READY,
            message=message,
            last_transition_time=now(),
        )
        if c.type == "Ready"
        else c
        for c in pod.status.conditions
    ]
    return new


async def write(store: Store, pod: Pod, expect: int) -> bool:
    """Store the pod as changed here; False if it changed meanwhile (a next pass sees)."""
    key = pod_store_key(pod)
    try:
        await store.put(key, encode(pod), obj=pod, expect=expect)
    except (Conflict, NotFound, StoreUnavailable):  # the next pass tries again
        return False
    return True
