"""Garbage collection: what a deleted Deployment or Job owned goes with it.

Deleting an owner removes only the owner (Kubernetes' background propagation);
this controller then deletes every object whose ownerReferences name an owner
uid that no longer exists: pods (gracefully, through their agents) and
ControllerRevisions. One that names another live owner too (one that exists and
is not being deleted in the foreground: Kubernetes' solid owner) is not deleted
but freed of the reference to the gone one, as Kubernetes' collector does. Its
keys are owner uids. It is told of an owner's deletion by the owner caches, of a
dependent that names a missing owner by the dependents' listeners, and it looks at
every owner uid it knows on a periodic resync, so an owner deleted while the
scheduler was down is collected too.

Only owners of a kind corral runs controllers for (Deployment, Job) are
checked; an ownerReference to any other kind is kept and ignored.
`propagationPolicy=Foreground` and `Orphan`, as in Kubernetes: the API only
marks the owner (deletionTimestamp and the finalizer foregroundDeletion or
orphan), its controller stops, and this controller deletes its dependents, then
the owner once none is left that blocks it (`blockOwnerDeletion`, which the
controllers' own pods carry; one held by finalizers of its own holds the owner
too); or frees every dependent of it, pods and revisions alike (as Kubernetes
keeps an orphaned Deployment's ReplicaSets), then deletes the owner once all are
free. A freed object names no owner, so nothing here collects it later. A marked
owner found at start, the scheduler stopped in the middle, is finished the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from common.models import FOREGROUND_DELETION, ORPHAN, ControllerRevision, ObjectMeta, Pod
from scheduler.context import Context
from scheduler.controllers.base import Controller
from scheduler.controllers.cache import OwnerIndex
from scheduler.controllers.podcontrol import delete_pod
from scheduler.kinds import DEPLOYMENTS, JOBS, PODS, REVISIONS
from scheduler.objects import decode, encode, replaced
from scheduler.store import Conflict, NotFound, Store

_LOGGER = logging.getLogger(__name__)

OWNER_KINDS = frozenset({"Deployment", "Job"})
RETRY_SECONDS = 1.0


class GarbageCollector(Controller):
    name = "garbage-collector"
    workers = 2

    def __init__(
        self,
        ctx: Context,
        owner_exists: Callable[[str], bool],
        owner_going: Callable[[str], tuple[str, str] | None],
        indexes: list[OwnerIndex],
    ) -> None:
        super().__init__(ctx)
        self.owner_exists = owner_exists
        # The store key of an owner marked for deletion, and how (`going`).
        self.owner_going = owner_going
        self.indexes = indexes
        self._announced: set[str] = set()  # owners whose collection was logged

    def keys(self) -> list[str]:
        return [uid for index in self.indexes for uid in index.owners()]

    def check(self, uid: str, kind: str) -> None:
        """A dependent names this owner: collect if the owner is gone (cheap when it is not)."""
        if kind in OWNER_KINDS and (not self.owner_exists(uid) or self.owner_going(uid)):
            self.queue.add(uid)

    def owner_deleted(self, uid: str | None) -> None:
        if uid:
            self.queue.add(uid)

    async def reconcile(self, uid: str) -> float | None:
        going = self.owner_going(uid)
        if going is None and self.owner_exists(uid):
            return None
        keys = [
            k for index in self.indexes for k in index.of(uid) if index.kind_of(uid) in OWNER_KINDS
        ]
        if going is not None and going[1] == "Orphan":
            # Its dependents are kept, freed of it; then it goes. Not before: a dependent
            # still naming it then would be collected as a gone owner's.
            freed = await asyncio.gather(*(release(self.store, k, uid) for k in keys))
            if not all(freed):
                return RETRY_SECONDS  # written under every try: the owner waits for it
            await self._remove_owner(going[0], uid, "Orphan")
            return None
        # One that another live owner still holds is not deleted, only freed of this one.
        shared = [k for k in keys if self._held_elsewhere(k, uid)]
        if shared:
            freed = await asyncio.gather(*(release(self.store, k, uid) for k in shared))
            if not all(freed):
                return RETRY_SECONDS  # never deleted for want of being freed
            keys = [k for k in keys if k not in shared]
        if not keys:
            self._announced.discard(uid)
            if going is not None:
                await self._remove_owner(going[0], uid, "Foreground")
            return None
        pods = [k for k in keys if k.startswith(PODS.prefix)]
        others = [k for k in keys if k.startswith(REVISIONS.prefix)]
        await asyncio.gather(*(delete_pod(self.store, self.cluster, k) for k in pods))
        for key in others:
            kv = await self.store.get(key)
            if kv is not None:
                try:
                    await self.store.delete(key, expect=kv.mod_revision)
                except (Conflict, NotFound):
                    pass
        if uid not in self._announced:  # not again at each retry while pods stop
            self._announced.add(uid)
            _LOGGER.info("collecting %d objects of deleted owner %s", len(keys), uid)
        if going is not None and not any(self._blocks(k, uid) for k in pods):
            # What is left does not hold its owner's deletion (Kubernetes' Foreground
            # waits only for dependents whose ownerReference says blockOwnerDeletion):
            # the owner goes now, and they are collected after it, as a gone owner's.
            self._announced.discard(uid)
            await self._remove_owner(going[0], uid, "Foreground")
            return None
        # Pods stopping gracefully are still listed until their agents confirm.
        return RETRY_SECONDS

    def _held_elsewhere(self, key: str, uid: str) -> bool:
        """Does the dependent at `key` name a live owner besides `uid`: one of a kind corral
        runs that exists and is not being deleted in the foreground (Kubernetes' solid
        owner)? References to other kinds are ignored here as everywhere."""
        for index in self.indexes:
            for other in index.owners_of(key):
                if other == uid or index.kind_of(other) not in OWNER_KINDS:
                    continue
                going = self.owner_going(other)
                if self.owner_exists(other) and (going is None or going[1] != "Foreground"):
                    return True
        return False

    def _blocks(self, key: str, uid: str) -> bool:
        """Does the pod at `key` hold the deletion of its owner `uid`? (Revisions are
        deleted at once, and held by nothing.)"""
        pod = self.cluster.pods.get(key)
        if pod is None:
            return False  # gone
        return any(
            r.uid == uid and r.block_owner_deletion for r in pod.metadata.owner_references or ()
        )

    async def _remove_owner(self, key: str, uid: str, policy: str) -> None:
        """The owner marked with `policy`, its dependents gone (Foreground) or freed
        (Orphan): now it goes too, if the stored one is still that owner, marked so (not
        re-marked with the other policy meanwhile). Guarded (Conflict: looked at again)."""
        kv = await self.store.get(key)
        kind = DEPLOYMENTS if key.startswith(DEPLOYMENTS.prefix) else JOBS
        owner = decode(kv, kind.model) if kv is not None else None
        meta = owner.metadata if owner is not None else None  # type: ignore[attr-defined]
        if kv is None or meta is None or meta.uid != uid or going(meta) != policy:
            return  # gone, released, re-marked, or the name is another's now
        await self.store.delete(key, expect=kv.mod_revision)
        what = "dependents gone" if policy == "Foreground" else "dependents freed"
        _LOGGER.info("deleted %s, its %s (propagationPolicy %s)", key, what, policy)


async def release(store: Store, key: str, owner_uid: str) -> bool:
    """Free the pod or ControllerRevision at `key` of its ownerReference to `owner_uid`
    (propagationPolicy Orphan; a pod relabelled out of its Deployment's selector): it
    stays, owned by no one (a Deployment whose selector matches it may adopt it).
    Guarded; looked at again after a concurrent write, up to five times. True once it
    no longer names the owner (or is gone); False if it still does."""
    model: type[Pod] | type[ControllerRevision] = (
        Pod if key.startswith(PODS.prefix) else ControllerRevision
    )
    for _attempt in range(5):
        kv = await store.get(key)
        if kv is None:
            return True
        obj = decode(kv, model)
        refs = obj.metadata.owner_references or []
        kept = [r for r in refs if r.uid != owner_uid]
        if len(kept) == len(refs):
            return True  # not (or no longer) its
        meta = replaced(obj.metadata, {"owner_references": kept or None})
        freed = replaced(obj, {"metadata": meta})
        try:
            await store.put(key, encode(freed), obj=freed, expect=kv.mod_revision)
            return True
        except (Conflict, NotFound):
            await store.settled(key)  # a write of it was queued: read it durable
    return False


def finalizer_policy(finalizers: Iterable[str]) -> str | None:
    """The propagation policy an owner's finalizers name, as in Kubernetes: "Orphan"
    (orphan), "Foreground" (foregroundDeletion), or None."""
    if ORPHAN in finalizers:
        return "Orphan"
    return "Foreground" if FOREGROUND_DELETION in finalizers else None


def going(meta: ObjectMeta) -> str | None:
    """How an owner marked for deletion lets its dependents go: "Foreground" (deleted
    before it), "Orphan" (freed of it before it goes), or None: not so marked.

    An owner marked without any finalizer is an Orphan delete too: how the API marked
    one before the finalizer orphan was used (a scheduler stopped in the middle left it
    so), and nothing else marks an owner without one."""
    if meta.deletion_timestamp is None:
        return None
    return finalizer_policy(meta.finalizers) if meta.finalizers else "Orphan"
