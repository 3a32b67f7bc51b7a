"""The workload controllers wired together: caches, owner indexes, and who is told what.

`Workloads` owns the caches of Namespaces, Deployments, Jobs and
ControllerRevisions (fed by the cluster's one watch), the indexes of what each
owner owns (pods, revisions), and the controllers: deployment, job, garbage
collector and namespace. It routes each change to the controller that cares:

    pod changed ─────────> owner index ─> its Deployment / Job queued; GC if the owner is gone;
                                          the Job's finalizer removed if no Job controls it
    pod orphaned ────────> orphans ─────> the Deployments whose selector matches it queued
    Deployment / Job ────> its controller queued; deleted, or marked for a Foreground or
                           Orphan delete: GC queued with its uid
    ControllerRevision ──> revision index; GC if its owner is gone; orphaned (freed by an
                           Orphan delete): the Deployments whose selector matches queued
    Namespace ───────────> namespace controller (when Terminating)

The pod listener runs for every pod write in the cluster, so it returns at once
for pods without ownerReferences (after one label lookup: a pod that a Deployment
made, `pod-template-hash`, and that nobody controls any more is an *orphan*, which
a Deployment whose selector matches adopts, as a ReplicaSet would).
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import Any

from common.models import ControllerRevision, Deployment, Job, Namespace, Pod
from scheduler.context import Context
from scheduler.controllers.cache import (
    ObjectCache,
    OrphanIndex,
    OwnerIndex,
    controller_ref,
    key_namespace,
)
from scheduler.controllers.deployment import DeploymentController, history_of
from scheduler.controllers.gc import GarbageCollector, going
from scheduler.controllers.job import JobController
from scheduler.controllers.namespace import NamespaceController, ensure_namespaces
from scheduler.controllers.podcontrol import HASH_LABEL, is_active
from scheduler.kinds import DEPLOYMENTS, JOBS, NAMESPACES, REVISIONS
from scheduler.store import Event

_LOGGER = logging.getLogger(__name__)


class Workloads:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.namespaces = ObjectCache(NAMESPACES, Namespace)
        self.deployments = ObjectCache(DEPLOYMENTS, Deployment)
        self.jobs = ObjectCache(JOBS, Job)
        self.revisions = ObjectCache(REVISIONS, ControllerRevision)
        self.pod_owners = OwnerIndex()
        self.revision_owners = OwnerIndex()
        self.orphans = OrphanIndex()  # active pods a Deployment made, now unowned
        self.orphan_revisions = OrphanIndex()  # revisions no Deployment controls now
        self.deployment = DeploymentController(
            ctx,
            self.deployments,
            self.revisions,
            self.pod_owners,
            self.revision_owners,
            self.orphans,
            self.orphan_revisions,
        )
        self.job = JobController(ctx, self.jobs, self.pod_owners)
        self.gc = GarbageCollector(
            ctx, self.owner_exists, self.owner_going, [self.pod_owners, self.revision_owners]
        )
        self.namespace = NamespaceController(ctx, self.namespaces)
        self.deployments.handlers.append(self._deployment_changed)
        self.jobs.handlers.append(self._job_changed)
        self.revisions.handlers.append(self._revision_changed)
        self.namespaces.handlers.append(self._namespace_changed)
        # By store prefix, each one path segment ("/deployments/"): one lookup routes an
        # event, and the many nobody here wants (Events, one per pod placed) stop there.
        self._caches: dict[str, ObjectCache[Any]] = {}
        for cache in (self.deployments, self.jobs, self.revisions, self.namespaces):
            prefix = cache.kind.prefix
            assert prefix.startswith("/") and prefix.find("/", 1) == len(prefix) - 1, prefix
            self._caches[prefix] = cache
        ctx.cluster.object_listeners.append(self._object_event)
        ctx.cluster.pod_listeners.append(self._pod_changed)

    async def load(self) -> None:
        """Namespaces made sure of, caches filled, indexes built from the cluster's pods."""
        await ensure_namespaces(self.ctx.store)
        for cache in (self.namespaces, self.deployments, self.jobs, self.revisions):
            await cache.load(self.ctx.store)
        for key, rev in self.revisions.objects.items():
            self.revision_owners.update(key, rev.metadata.owner_references)
            if controller_ref(rev.metadata.owner_references) is None:
                self.orphan_revisions.add(key)
        for key, pod in self.ctx.cluster.pods.items():
            if pod.metadata.owner_references:
                self.pod_owners.update(key, pod.metadata.owner_references)
            elif _orphaned(pod):
                self.orphans.add(key)
            if pod.metadata.finalizers:
                # Its Job may have gone while the scheduler was down, or before the
                # finalizer's removal landed; no change of the pod would tell.
                self.job.release_if_orphaned(key, pod)
        for cache in (self.deployments, self.jobs):
            for owner in cache.objects.values():
                if going(owner.metadata):  # it may have no dependent left to tell
                    self.gc.owner_deleted(owner.metadata.uid)

    def tasks(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        return [
            ("deployment-controller", self.deployment.run()),
            ("job-controller", self.job.run()),
            ("garbage-collector", self.gc.run()),
            ("namespace-controller", self.namespace.run()),
        ]

    def owner_exists(self, uid: str) -> bool:
        return uid in self.deployments.by_uid or uid in self.jobs.by_uid

    def owner_going(self, uid: str) -> tuple[str, str] | None:
        """The store key of the owner `uid` and its propagation policy, if it is marked for
        deletion with one (Foreground, Orphan) that leaves work to the collector."""
        for cache in (self.deployments, self.jobs):
            key = cache.by_uid.get(uid)
            owner = cache.objects.get(key) if key is not None else None
            policy = going(owner.metadata) if owner is not None else None
            if key is not None and policy is not None:
                return key, policy
        return None

    # -- routing ------------------------------------------------------------------------------

    def _object_event(self, event: Event) -> None:
        key = event.kv.key
        cache = self._caches.get(key[: key.find("/", 1) + 1])
        if cache is not None:
            cache.apply(event)

    def _pod_changed(self, key: str, old: Pod | None, new: Pod | None) -> None:
        new_refs = new.metadata.owner_references if new is not None else None
        old_refs = old.metadata.owner_references if old is not None else None
        if not new_refs and not old_refs:  # the common case: a pod nobody owns
            if (new is not None and HASH_LABEL in new.metadata.labels) or key in self.orphans:
                self._orphan_changed(key, new)
            if new is not None and new.metadata.finalizers:
                self.job.release_if_orphaned(key, new)
            return
        try:
            if key in self.orphans or controller_ref(new_refs) is None:
                self._orphan_changed(key, new)  # adopted, or freed (propagationPolicy=Orphan)
            self.pod_owners.update(key, new_refs)
            namespace = key_namespace(key)
            for refs in (new_refs, old_refs):
                ref = controller_ref(refs)
                if ref is None:
                    continue
                if ref.kind == "Deployment":
                    self.deployment.enqueue(namespace, ref.name)
                elif ref.kind == "Job":
                    self.job.enqueue(namespace, ref.name)
            for ref in new_refs or ():
                self.gc.check(ref.uid, ref.kind)
            if new is not None and new.metadata.finalizers:
                self.job.release_if_orphaned(key, new)  # its Job gone, or it was freed
            if new is None:
                for ref in old_refs or ():  # an owner deleted in the foreground may go now
                    self.gc.check(ref.uid, ref.kind)
                uid = old.metadata.uid if old is not None else None
                self.deployment.forget_pod(uid)
        except Exception:  # never into the cluster watch
            _LOGGER.exception("pod listener failed on %s", key)

    def _orphan_changed(self, key: str, new: Pod | None) -> None:
        """Track a pod that a Deployment made and nobody controls; queue who may adopt it."""
        if new is None or not _orphaned(new):
            self.orphans.discard(key)
            return
        self.orphans.add(key)
        try:
            for dkey, d in self.deployments.in_namespace(key_namespace(key)).items():
                if d.spec.selector.matches(new.metadata.labels):
                    self.deployment.queue.add(dkey)
        except Exception:  # never into the cluster watch
            _LOGGER.exception("pod listener failed on orphan %s", key)

    def _deployment_changed(self, key: str, old: Deployment | None, new: Deployment | None) -> None:
        if new is not None:
            self.deployment.queue.add(key)
            if going(new.metadata):  # its dependents go (or are freed) first, then it
                self.gc.owner_deleted(new.metadata.uid)
        elif old is not None:
            self.gc.owner_deleted(old.metadata.uid)

    def _job_changed(self, key: str, old: Job | None, new: Job | None) -> None:
        # A Job being deleted or gone frees its pods of its finalizer now: a pod deleted
        # already would not change again to say so.
        if new is not None:
            self.job.queue.add(key)
            if going(new.metadata):  # its dependents go (or are freed) first, then it
                self.gc.owner_deleted(new.metadata.uid)
            if new.metadata.deletion_timestamp is not None:
                self._release_pods_of(new.metadata.uid)
        elif old is not None:
            self.job.forget(key)
            self.gc.owner_deleted(old.metadata.uid)
            self._release_pods_of(old.metadata.uid)

    def _release_pods_of(self, uid: str | None) -> None:
        for key in list(self.pod_owners.of(uid)):
            pod = self.ctx.cluster.pods.get(key)
            if pod is not None and pod.metadata.finalizers:
                self.job.release_if_orphaned(key, pod)

    def _revision_changed(
        self, key: str, old: ControllerRevision | None, new: ControllerRevision | None
    ) -> None:
        refs = new.metadata.owner_references if new is not None else None
        self.revision_owners.update(key, refs)
        for ref in refs or ():
            self.gc.check(ref.uid, ref.kind)
        if new is None and old is not None:
            # Deleted (`kubectl delete controllerrevision`): its Deployment looks again,
            # and records its template's revision anew if that was the one.
            held_by = controller_ref(old.metadata.owner_references)
            owner = self.deployments.by_uid.get(held_by.uid) if held_by is not None else None
            if owner is not None:
                self.deployment.queue.add(owner)
        if new is None or controller_ref(refs) is not None:
            self.orphan_revisions.discard(key)
            return
        # Freed (propagationPolicy=Orphan): a Deployment of the name it was written for
        # adopts it, if its selector matches (`history_of`).
        self.orphan_revisions.add(key)
        for dkey, d in self.deployments.in_namespace(key_namespace(key)).items():
            if history_of(new, d):
                self.deployment.queue.add(dkey)

    def _namespace_changed(self, key: str, old: Namespace | None, new: Namespace | None) -> None:
        if new is not None and new.status.phase == "Terminating":
            self.namespace.queue.add(key)


def _orphaned(pod: Pod) -> bool:
    """A pod a Deployment made (it carries `pod-template-hash`), active, without a controller."""
    return (
        HASH_LABEL in pod.metadata.labels
        and controller_ref(pod.metadata.owner_references) is None
        and is_active(pod)
    )
