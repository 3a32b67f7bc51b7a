"""Pods on behalf of a controller: made from a template, named, owned, counted, deleted.

A controller's pods are ordinary pods: they are built from the template as a
Pod manifest and validated by the same model as a pod posted to the API; they
carry an ownerReference (`controller: true`) to their Deployment or Job and
a generated name (`web-7d4b9c6f58-x2x9k`, as Kubernetes' ReplicaSets name
them). Deleting one follows the API's rules: a pod running on a Ready node is
marked and stopped by its agent; anything else is removed at once.
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from common.models import (
    DEFAULT_DNS_POLICY,
    ObjectMeta,
    OwnerReference,
    Pod,
    PodCondition,
    PodStatus,
    PodTemplateSpec,
    now,
)
from scheduler.cluster import TERMINAL_PHASES, ClusterState
from scheduler.names import ALPHABET, random_suffix
from scheduler.objects import decode, encode, pod_store_key, replaced
from scheduler.podfinal import mark_deleted, marked_for_deletion, may_run, must_wait
from scheduler.store import KV, Conflict, NotFound, Op, Store

HASH_LABEL = "pod-template-hash"
# A generated pod name is at most 63 characters, so that it fits a hostname.
_MAX_NAME_BASE = 63 - 6


def safe_encode(text: str) -> str:
    return "".join(ALPHABET[b % len(ALPHABET)] for b in text.encode())


def template_hash(template: PodTemplateSpec, collision_count: int | None = None) -> str:
    """A short, stable name for a template (defaults filled in, so spelling does not matter).
    `dnsPolicy: ClusterFirst`, Kubernetes' default, which corral leaves unset in a
    template unless given (as it was before corral set it on pods), hashes as unset.
    A Deployment's `status.collisionCount`, once set, is hashed in after the template, as
    Kubernetes' ComputeHash does, so that a name taken by another object gives way to a
    new one."""
    doc = template.to_dict()
    if template.spec.dns_policy == DEFAULT_DNS_POLICY:
        del doc["spec"]["dnsPolicy"]
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    if collision_count is not None:
        data += (collision_count & 0xFFFFFFFF).to_bytes(8, "little")
    return safe_encode(str(zlib.crc32(data)))


def generate_name(base: str) -> str:
    """`base-xxxxx`, the base shortened so that the name fits in a hostname."""
    return f"{base[:_MAX_NAME_BASE].rstrip('-.')}-{random_suffix()}"


def owner_reference(kind: str, api_version: str, name: str, uid: str) -> OwnerReference:
    return OwnerReference(
        api_version=api_version,
        kind=kind,
        name=name,
        uid=uid,
        controller=True,
        block_owner_deletion=True,
    )


def prototype(template: PodTemplateSpec, namespace: str) -> Pod:
    """The template as a Pod, through the same validation as a pod sent to the API."""
    doc = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "prototype", "namespace": namespace},
        "spec": template.spec.to_dict(),
    }
    pod = Pod.model_validate(doc)
    pod.spec.node_name = None  # a template never binds its pods
    # Its pods get the default a pod created through the API gets (api/pods.py); the
    # template keeps what it was given (`template_hash` takes the two as one).
    pod.spec.dns_policy = pod.spec.dns_policy or DEFAULT_DNS_POLICY
    return pod


def new_pod(
    proto: Pod,
    template: PodTemplateSpec,
    name: str,
    labels: dict[str, str],
    owner: OwnerReference,
) -> Pod:
    """One pod from the template's prototype: fresh identity, labels, owner, empty status."""
    meta = ObjectMeta(
        name=name,
        namespace=proto.metadata.namespace,
        uid=str(uuid.uuid4()),
        labels={**template.metadata.labels, **labels},
        annotations=dict(template.metadata.annotations),
        creation_timestamp=now(),
        generation=1,
        owner_references=[owner],
        finalizers=list(template.metadata.finalizers or ()) or None,
    )
    return Pod(metadata=meta, spec=proto.spec.model_copy(deep=True), status=PodStatus())


# The most pods a controller creates for one owner in one pass, as kube-controller-
# manager's burstReplicas: the next pass (its pods' events, its status written) makes
# more. Unbounded, a Deployment of 2**31-1 replicas (a valid int32) had its controller
# build that many pods in memory at once, and the scheduler stopped answering.
BURST = 500


def creation_op(pod: Pod) -> Op:
    """The write that creates the pod, as one operation of a transaction (its name free)."""
    return Op("put", pod_store_key(pod), encode(pod), pod, expect=0)


async def create_pods(store: Store, pods: list[Pod], also: Sequence[Op] = ()) -> list[KV]:
    """Create every pod in one durable transaction (names must be free), with `also`."""
    return await store.txn([*(creation_op(p) for p in pods), *also])


async def delete_pod(store: Store, cluster: ClusterState, key: str) -> KV | None:
    """Delete like `DELETE .../pods/NAME`: graceful where an agent will confirm; None if gone."""
    kv = await store.get(key)
    if kv is None:
        return None
    pod = decode(kv, Pod)
    if pod.metadata.deletion_timestamp is not None:
        return kv
    try:
        if must_wait(pod, may_run(cluster, pod)):
            return await mark_deleted(store, key, kv, pod, now())
        return await store.delete(key, expect=kv.mod_revision)
    except (Conflict, NotFound):
        return None  # changed meanwhile: the next pass looks again


def deletion_op(cluster: ClusterState, key: str, kv: KV | None = None) -> Op | None:
    """`delete_pod` as one operation of a transaction, made from the cluster view's version
    of the pod (or from `kv`, such as the store's latest) and guarded by it (a stale one
    fails the transaction): a mark where its agent must stop it or finalizers hold it,
    else its removal. None if there is no such pod, or if it is marked already."""
    if kv is None:
        kv = cluster.pod_kvs.get(key)
        pod = cluster.pods.get(key)
    else:
        pod = decode(kv, Pod)
    if kv is None or pod is None:
        return None
    if pod.metadata.deletion_timestamp is not None:
        return None  # on its way out already: a mark again would change nothing
    if not must_wait(pod, may_run(cluster, pod)):
        return Op("delete", key, expect=kv.mod_revision)
    marked = marked_for_deletion(pod, now())
    return Op("put", key, encode(marked), marked, expect=kv.mod_revision)


async def set_finalizer(store: Store, cluster: ClusterState, key: str, name: str, on: bool) -> KV:
    """Add (`on`) or remove finalizer `name` of the pod as the cluster view has it, guarded
    by that version (Conflict, NotFound: a newer one is on its way; look again)."""
    kv = cluster.pod_kvs.get(key)
    if kv is None:
        raise NotFound(key)
    pod = decode(kv, Pod)
    finalizers = [f for f in pod.metadata.finalizers or () if f != name]
    if on:
        finalizers.append(name)
    changed = replaced(pod.metadata, {"finalizers": finalizers or None})
    updated = replaced(pod, {"metadata": changed})
    return await store.put(key, encode(updated), obj=updated, expect=kv.mod_revision)


def is_active(pod: Pod) -> bool:
    """Counts toward a controller's replicas: not finished, not being deleted."""
    return pod.metadata.deletion_timestamp is None and pod.status.phase not in TERMINAL_PHASES


def ready_condition(pod: Pod) -> PodCondition | None:
    for cond in pod.status.conditions:
        if cond.type == "Ready":
            return cond
    return None


def is_ready(pod: Pod) -> bool:
    cond = ready_condition(pod)
    return cond is not None and cond.status == "True" and pod.status.phase == "Running"


def restarts(pod: Pod) -> int:
    return sum(cs.restart_count for cs in pod.status.container_statuses)


def deletion_order(pods: Iterable[Pod]) -> list[Pod]:
    """Pods in the order a controller scales them down, as Kubernetes' ReplicaSets do:
    unbound before bound, pending before running, not ready before ready, more
    restarts before fewer, newer before older."""
    phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}

    def rank(pod: Pod) -> tuple[int, int, int, int, float]:
        created = pod.metadata.creation_timestamp or datetime.min.replace(tzinfo=UTC)
        return (
            pod.spec.node_name is not None,
            phase_rank.get(pod.status.phase, 3),
            is_ready(pod),
            -restarts(pod),
            -created.timestamp(),
        )

    return sorted(pods, key=rank)
