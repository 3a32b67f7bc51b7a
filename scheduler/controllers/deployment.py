"""The Deployment controller: `replicas` pods of the current template, rolled out safely.

A Deployment owns its pods directly; corral has no ReplicaSets. What a
ReplicaSet gives Kubernetes is kept by two things:

- each pod carries `pod-template-hash`, a hash of the template it was made
  from: the pods with the current template's hash are the *new* pods, every
  other active pod is *old*;
- each template rolled out is recorded as a ControllerRevision named
  `<deployment>-<hash>` (owned by the Deployment, numbered 1, 2, ...), which is
  what `corral rollout history|undo` read. Returning to an earlier template
  reuses its revision under the next number, as Kubernetes does. A name taken by
  another's revision (long Deployment names are cut to fit) bumps the Deployment's
  `status.collisionCount`, which is hashed with the template, as Kubernetes does;
  the current template's revision is found by its template, so one made before
  keeps its hash.

Orphans (freed by a delete with propagationPolicy=Orphan) are adopted as
Kubernetes' Deployment adopts orphaned ReplicaSets and their pods: an active pod
a Deployment made (`pod-template-hash`) whose labels the selector matches, and a
revision written for a Deployment of the same name whose pods' labels (its
template's, and its hash) the selector matches (`history_of`). So a Deployment
created again takes its pods and its history back. A pod it controls whose labels
the selector no longer matches (relabelled out of it) is released, as a ReplicaSet
releases it: its ownerReference is removed, it runs on, and it is replaced.

One pass (`reconcile`) for one Deployment::

    adopt orphans its selector matches, pods and revisions (then look again)
        │
    record the template's revision ──> release pods it no longer matches,
        │                              delete finished pods (they are replaced)
        │
    replace each template's lost pods (its revision's REPLICAS), as a ReplicaSet would
        │
        ├─ paused, or replicas changed: scale (below), and nothing more this pass
        ├─ Recreate:      delete every old pod; create new ones only once none is left
        └─ RollingUpdate: create new pods while   total < replicas + maxSurge
                          delete old pods while    available > replicas - maxUnavailable
                          (unavailable old pods first: they cost no availability)
        │
        └─> status (replicas, updated, ready, available; Available and Progressing)

A pod is *available* once its Ready condition has been True for
`minReadySeconds`. Progress (more updated, ready or available pods, fewer old
ones) refreshes the Progressing condition; none for `progressDeadlineSeconds`
turns it False with reason ProgressDeadlineExceeded. A paused Deployment is
scaled but not rolled out, and a template it was given while paused is recorded
as a revision only once it is resumed (as Kubernetes makes its ReplicaSet only then).

Scaling, as Kubernetes' `sync` and `scale` (pkg/controller/deployment/sync.go). Each
template with active pods is a *group*, what a ReplicaSet is there. Each revision
records what its group was last sized for: the Deployment's replicas and replicas +
maxSurge, in the annotations `deployment.kubernetes.io/desired-replicas` and
`max-replicas` (a ReplicaSet's, under the same names). A group sized for other
replicas than the Deployment's now makes the pass a scale (`_scale`): the only group
(or, none having pods, the newest template) gets `replicas`; a new template with all
`replicas` available leaves the old ones none; otherwise, in a rolling update, what
brings the total to replicas + maxSurge is shared between the groups in proportion to
their sizes (`proportional`). So a scale in the middle of a rollout keeps the old
pods' share, and the Deployment its availability, instead of giving every added pod to
a new template that may never become ready (and every removed one to the old).

What a group wants (a ReplicaSet's `spec.replicas`) is recorded on its revision too
(REPLICAS), written in the same transaction as the pods the controller creates or
deletes for it (a scale, a rolling update's steps), so a restart finds all of it or
none. A pod lost otherwise (deleted, failed, relabelled out) leaves its template short
of that, and the pass first makes it up with a pod of the same template (`_replenish`),
as the ReplicaSet of an old template replaces its own pods until the rollout scales it
down: a lost old pod's place does not go to a new template that may never become
available. The controller alone writes these annotations (a PUT of the Deployment
replaces its annotations, so they could not live there), a revision lives as long as
its template has pods or is to have some (`_prune_revisions` keeps those), and one
write per template records it (an annotation on each pod would take a write per pod).
A revision written before REPLICAS existed records nothing: its pods are what it wants.

Those transactions delete pods guarded by the versions the controller has seen. A
status write of a pod still being committed (agents report all the time) fails such
a guard; the deletions are then made again from the store's latest versions and tried
again at once (`_transact`), rather than the pass retried with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from common.models import (
    ControllerRevision,
    Deployment,
    DeploymentStatus,
    ObjectMeta,
    OwnerReference,
    Pod,
    PodTemplateSpec,
    WorkloadCondition,
    now,
)
from scheduler.context import Context
from scheduler.controllers.base import Controller
from scheduler.controllers.cache import ObjectCache, OrphanIndex, OwnerIndex, controller_ref
from scheduler.controllers.gc import release
from scheduler.controllers.podcontrol import (
    BURST,
    HASH_LABEL,
    create_pods,
    creation_op,
    delete_pod,
    deletion_op,
    deletion_order,
    generate_name,
    is_active,
    is_ready,
    new_pod,
    owner_reference,
    pod_store_key,
    prototype,
    ready_condition,
    template_hash,
)
from scheduler.events import Ref
from scheduler.kinds import DEPLOYMENTS, PODS, REVISIONS
from scheduler.objects import encode, mutable_copy
from scheduler.store import KV, Conflict, NotFound, Op

_LOGGER = logging.getLogger(__name__)

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE = "kubernetes.io/change-cause"
# On a revision: the Deployment's replicas, and replicas + maxSurge, that its pods were
# last sized for (Kubernetes' annotations of a ReplicaSet, under the same names).
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
# On a revision: how many active pods its template should have, what a ReplicaSet's
# `spec.replicas` is (corral's own: a revision has no spec to hold it). Written in the
# same transaction as the pods the controller creates or deletes for that template, so
# a pod lost otherwise (deleted, failed, released) is put back from its own template.
REPLICAS = "corral.dev/replicas"
# A revision or pod name is a DNS subdomain.
MAX_NAME = 253
# Tries of one transaction that deletes pods: a pod whose status write is still being
# committed fails the guard on the cached version; the retry guards on the latest.
DELETION_ATTEMPTS = 3


def resolve(value: int | str, replicas: int, *, round_up: bool) -> int:
    """maxSurge / maxUnavailable as a pod count: `25%` of 10 is 3 (surge) or 2 (unavailable)."""
    if isinstance(value, int):
        return value
    fraction = int(value.rstrip("%")) * replicas / 100
    return math.ceil(fraction) if round_up else math.floor(fraction)


def surge_and_unavailable(d: Deployment) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) in pods; never both 0, as Kubernetes guarantees."""
    if d.spec.strategy.type == "Recreate":
        return 0, d.spec.replicas
    rolling = d.spec.strategy.rolling_update
    surge_value = rolling.max_surge if rolling else "25%"
    unavailable_value = rolling.max_unavailable if rolling else "25%"
    surge = resolve(surge_value, d.spec.replicas, round_up=True)
    unavailable = resolve(unavailable_value, d.spec.replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def revision_name(deployment: str, hash_: str) -> str:
    """`<deployment>-<hash>`, as Kubernetes names a Deployment's ReplicaSet, the name cut
    (only if it must be) so that the whole fits a DNS subdomain. Two Deployments whose
    long names share what is kept may then want one name for one template: the second
    bumps its `status.collisionCount` (`_sync_revision`), which changes its hash."""
    keep = MAX_NAME - 1 - len(hash_)
    base = deployment if len(deployment) <= keep else deployment[:keep].rstrip("-.")
    return f"{base}-{hash_}"


def revision_template(rev: ControllerRevision) -> PodTemplateSpec | None:
    """The pod template a revision records (None if it does not hold a readable one)."""
    spec = rev.data.get("spec")
    template = spec.get("template") if isinstance(spec, dict) else None
    if not isinstance(template, dict):
        return None
    try:
        return PodTemplateSpec.model_validate(template)
    except ValueError:
        return None


def created(rev: ControllerRevision) -> tuple[float, str]:
    """A revision's age as Kubernetes orders ReplicaSets (ReplicaSetsByCreationTimestamp):
    by creation, then by name."""
    stamp = rev.metadata.creation_timestamp
    return (stamp.timestamp() if stamp is not None else 0.0, rev.metadata.name)


def set_condition(
    conditions: list[WorkloadCondition], cond: WorkloadCondition
) -> list[WorkloadCondition]:
    """Replace the condition of that type. An unchanged condition keeps its times (so a
    pass that changes nothing writes nothing); a changed one keeps its transition time
    if its status stayed."""
    old = next((c for c in conditions if c.type == cond.type), None)
    if old is not None and (old.status, old.reason, old.message) == (
        cond.status,
        cond.reason,
        cond.message,
    ):
        return conditions
    if old is not None and old.status == cond.status:
        cond.last_transition_time = old.last_transition_time
    return [*(c for c in conditions if c.type != cond.type), cond]


def find_condition(conditions: list[WorkloadCondition], kind: str) -> WorkloadCondition | None:
    return next((c for c in conditions if c.type == kind), None)


@dataclass
class Group:
    """The active pods of one template (one `pod-template-hash`): what a ReplicaSet is to
    Kubernetes, its size (`spec.replicas` there) the number of those pods."""

    hash: str
    size: int
    revision: ControllerRevision | None = None  # its template and annotations, if recorded
    pods: list[Pod] = field(default_factory=list)

    def annotation(self, name: str) -> int | None:
        """DESIRED_REPLICAS, MAX_REPLICAS or REPLICAS as its revision records it (None: not
        recorded)."""
        return recorded(self.revision, name) if self.revision else None

    @property
    def created(self) -> float:
        """Its age, as Kubernetes breaks ties between ReplicaSets of one size: its
        revision's creation (a group with none counts as the oldest)."""
        stamp = self.revision.metadata.creation_timestamp if self.revision else None
        return stamp.timestamp() if stamp is not None else 0.0


def proportional(groups: list[Group], allowed: int, status_replicas: int) -> dict[str, int]:
    """The size of each group after a scale in the middle of a rollout, as Kubernetes'
    `scale` (pkg/controller/deployment/sync.go) sizes its active ReplicaSets. `allowed`
    is the total to reach: replicas + maxSurge (0 for 0 replicas). What that adds (or
    removes) is shared in proportion to each group's size: its share is
    `round(size * allowed / max-replicas) - size` (max-replicas: the total its size was
    set for, else status.replicas), no more than what is left to share; groups are
    taken largest first (on a tie, the newer first when adding, the older first when
    removing) and the first takes what rounding left over. Never below 0."""
    total = sum(g.size for g in groups)
    to_add = allowed - total
    if to_add == 0:
        return {g.hash: g.size for g in groups}
    newer_first = to_add > 0
    ordered = sorted(groups, key=lambda g: (-g.size, -g.created if newer_first else g.created))
    sizes: dict[str, int] = {}
    added = 0
    for g in ordered:
        share = _proportion(g, allowed, status_replicas, to_add, added)
        sizes[g.hash] = g.size + share
        added += share
    first = ordered[0].hash
    sizes[first] = max(sizes[first] + to_add - added, 0)
    return sizes


def _proportion(g: Group, allowed: int, status_replicas: int, to_add: int, added: int) -> int:
    """Kubernetes' GetProportion: the group's fraction, no more than what is left to add
    (or to remove)."""
    if g.size == 0 or to_add == added:
        return 0
    if allowed == 0:
        fraction = -g.size  # scaled to zero: every group goes
    else:
        before = g.annotation(MAX_REPLICAS) or status_replicas
        if before == 0:
            return 0
        # Rounded half away from zero, as Kubernetes' RoundToInt32 (in integers: exact).
        fraction = (2 * g.size * allowed + before) // (2 * before) - g.size
    left = to_add - added
    return min(fraction, left) if to_add > 0 else max(fraction, left)


def template_counts(pods: Iterable[Pod]) -> Counter[str]:
    """How many of `pods` each template (`pod-template-hash`) has."""
    return Counter(pod.metadata.labels.get(HASH_LABEL, "") for pod in pods)


def recorded(rev: ControllerRevision, name: str) -> int | None:
    """A count the revision records in annotation `name` (None: not recorded)."""
    value = rev.metadata.annotations.get(name)
    return int(value) if value is not None and value.isdigit() else None


@dataclass
class Picture:
    """The pods of one Deployment, sorted for one pass."""

    new: list[Pod] = field(default_factory=list)
    old: list[Pod] = field(default_factory=list)
    terminating_old: list[Pod] = field(default_factory=list)
    finished: list[Pod] = field(default_factory=list)
    released: list[str] = field(default_factory=list)  # keys: its selector no longer matches
    available: set[str] = field(default_factory=set)  # uids
    next_check: float | None = None  # seconds until a pod becomes available

    def count_available(self, pods: list[Pod]) -> int:
        return sum(1 for p in pods if p.metadata.uid in self.available)


class DeploymentController(Controller):
    name = "deployment"

    def __init__(
        self,
        ctx: Context,
        deployments: ObjectCache[Deployment],
        revisions: ObjectCache[ControllerRevision],
        pod_owners: OwnerIndex,
        revision_owners: OwnerIndex,
        orphans: OrphanIndex,
        orphan_revisions: OrphanIndex,
    ) -> None:
        super().__init__(ctx)
        self.deployments = deployments
        self.revisions = revisions
        self.pod_owners = pod_owners
        self.revision_owners = revision_owners
        self.orphans = orphans  # pod keys: made by a Deployment, controlled by none (manager)
        self.orphan_revisions = orphan_revisions  # revision keys controlled by none (manager)
        self._ready_seen: dict[str, float] = {}  # uid -> when first seen Ready (no timestamp)

    def keys(self) -> list[str]:
        return list(self.deployments.objects)

    def enqueue(self, namespace: str, name: str) -> None:
        self.queue.add(DEPLOYMENTS.key(namespace, name))

    def forget_pod(self, uid: str | None) -> None:
        self._ready_seen.pop(uid or "", None)

    # -- one pass -----------------------------------------------------------------------------

    async def reconcile(self, key: str) -> float | None:
        d = self.deployments.get(key)
        kv = self.deployments.kvs.get(key)
        if d is None or kv is None or d.metadata.deletion_timestamp is not None:
            return None  # gone or going: the garbage collector takes its pods
        if await self._adopt(key, d):
            return 0.0  # look again once the adopted pods are counted as its own
        hash_ = self._current_hash(d)
        revision = await self._sync_revision(key, kv, d, hash_)
        if revision is None:
            return 0.2  # its revision's name is taken: adopted, or a new hash, next pass
        # A revision renumbered just now (`rollout undo`) is written again by this pass
        # (what its pods are sized for): from the cache's version of it, once caught up,
        # not the one before, whose guard would fail the pass.
        await self._caught_up(key)
        picture = self._picture(d, hash_)
        await self._release(d, picture.released)
        await asyncio.gather(
            *(delete_pod(self.store, self.cluster, pod_store_key(p)) for p in picture.finished)
        )
        replenished = await self._replenish(key, d, hash_, picture)
        groups = self._groups(d, picture)
        scaled = False
        if d.spec.paused or scaling_event(groups, d.spec.replicas):
            # Kubernetes' `sync`: a scale is a pass of its own (the rollout goes on at the
            # next one); a paused Deployment is scaled, never rolled out.
            changed = scaled = await self._scale(key, d, hash_, groups, picture)
        elif d.spec.strategy.type == "Recreate":
            changed = await self._recreate(key, d, hash_, revision, picture)
        else:
            changed = await self._rolling(key, d, hash_, revision, picture)
        changed = changed or replenished
        await self._prune_revisions(d, hash_)
        requeue = await self._write_status(key, kv, d, hash_, revision, picture, changed)
        if picture.next_check is not None:
            requeue = min(requeue or picture.next_check, picture.next_check)
        return 0.0 if scaled else requeue

    async def _adopt(self, key: str, d: Deployment) -> bool:
        """Claim the orphans its selector matches, pods and revisions (a Deployment
        deleted with propagationPolicy=Orphan and created again takes its pods and its
        history back, as Kubernetes' Deployment adopts its orphaned ReplicaSets); True if
        it claimed any."""
        if not self.orphans and not self.orphan_revisions:
            return False
        namespace = d.metadata.namespace or "default"
        owner = owner_reference("Deployment", "apps/v1", d.metadata.name, d.metadata.uid or "")
        pod_claims = []
        for pod_key in self.orphans.in_namespace(namespace):
            pod = self.cluster.pods.get(pod_key)
            kv = self.cluster.pod_kvs.get(pod_key)
            if pod is None or kv is None or not d.spec.selector.matches(pod.metadata.labels):
                continue
            pod_claims.append(self._claim(pod_key, pod, kv.mod_revision, owner))
        revision_claims = []
        for rev_key in self.orphan_revisions.in_namespace(namespace):
            rev = self.revisions.get(rev_key)
            kv = self.revisions.kvs.get(rev_key)
            if rev is None or kv is None or not history_of(rev, d):
                continue
            revision_claims.append(self._claim(rev_key, rev, kv.mod_revision, owner))
        # Concurrently, for one commit; one that changed meanwhile is claimed on its event.
        claimed = await asyncio.gather(*pod_claims, *revision_claims)
        pods = [kv for kv in claimed[: len(pod_claims)] if kv is not None]
        revisions = [kv for kv in claimed[len(pod_claims) :] if kv is not None]
        self.wrote(key, pods + revisions)
        if pods:
            self.events.record(_ref(d), "Adopted", f"Adopted {len(pods)} pods its selector matches")
        if revisions:
            self.events.record(
                _ref(d), "Adopted", f"Adopted {len(revisions)} revisions its selector matches"
            )
        return bool(pods or revisions)

    async def _release(self, d: Deployment, keys: list[str]) -> None:
        """Free the pods it controls that its selector no longer matches (relabelled out of
        it), as a ReplicaSet releases them: they keep running, owned by no one, and are
        replaced."""
        if not keys:
            return
        uid = d.metadata.uid or ""
        freed = await asyncio.gather(*(release(self.store, k, uid) for k in keys))
        keys = [k for k, ok in zip(keys, freed, strict=True) if ok]  # else the next pass
        if not keys:
            return
        for key in keys:
            pod = self.cluster.pods.get(key)
            self.forget_pod(pod.metadata.uid if pod is not None else None)
        names = ", ".join(k.rsplit("/", 1)[1] for k in keys)
        self.events.record(
            _ref(d), "Released", f"Released pods its selector no longer matches: {names}"
        )

    async def _claim(
        self, key: str, obj: Pod | ControllerRevision, expect: int, owner: OwnerReference
    ) -> KV | None:
        """`obj` with `owner` added to its references, written if unchanged since."""
        claimed = mutable_copy(obj)
        claimed.metadata.owner_references = [*(obj.metadata.owner_references or ()), owner]
        try:
            return await self.store.put(key, encode(claimed), obj=claimed, expect=expect)
        except (Conflict, NotFound):
            return None

    def _picture(self, d: Deployment, hash_: str) -> Picture:
        picture = Picture()
        wall = time.time()
        min_ready = d.spec.min_ready_seconds
        # Owners are namespace-local: a pod elsewhere naming this uid is not one of its own.
        prefix = PODS.namespace_prefix(d.metadata.namespace or "default")
        for pod_key in self.pod_owners.of(d.metadata.uid):
            pod = self.cluster.pods.get(pod_key)
            if pod is None or not pod_key.startswith(prefix):
                continue
            ref = controller_ref(pod.metadata.owner_references)
            if ref is None or ref.uid != d.metadata.uid:
                continue  # it names the Deployment, but is not controlled by it: not its own
            if not d.spec.selector.matches(pod.metadata.labels):
                picture.released.append(pod_key)  # relabelled out of it: no longer its own
                continue
            current = pod.metadata.labels.get(HASH_LABEL) == hash_
            if pod.metadata.deletion_timestamp is not None:
                if not current:
                    picture.terminating_old.append(pod)
                continue
            if not is_active(pod):
                picture.finished.append(pod)
                continue
            (picture.new if current else picture.old).append(pod)
            uid = pod.metadata.uid or ""
            if not is_ready(pod):
                self._ready_seen.pop(uid, None)
                continue
            cond = ready_condition(pod)
            if cond is not None and cond.last_transition_time is not None:
                since = cond.last_transition_time.timestamp()
            else:  # an agent that does not time its conditions: count from when seen
                since = self._ready_seen.setdefault(uid, wall)
            waited = wall - since
            if waited >= min_ready:
                picture.available.add(uid)
            else:
                left = min_ready - waited
                picture.next_check = min(picture.next_check or left, left)
        return picture

    # -- scaling ------------------------------------------------------------------------------

    def _groups(self, d: Deployment, picture: Picture) -> list[Group]:
        """Its active pods by template, each with its revision where one is recorded."""
        by_hash: dict[str, list[Pod]] = {}
        for pod in picture.old + picture.new:
            by_hash.setdefault(pod.metadata.labels.get(HASH_LABEL, ""), []).append(pod)
        revisions = {r.metadata.labels.get(HASH_LABEL): r for r in self._owned_revisions(d)}
        return [Group(h, len(pods), revisions.get(h), pods) for h, pods in by_hash.items()]

    async def _scale(
        self, key: str, d: Deployment, hash_: str, groups: list[Group], picture: Picture
    ) -> bool:
        """Kubernetes' `scale`: the only template with pods (or, with none, the newest)
        gets `replicas`; a saturated new template (all `replicas` available) leaves the
        old ones none; otherwise, in a rolling update, the new size is shared in
        proportion (`proportional`). A scale-up adds at most BURST pods in one pass: a
        larger one is done in steps of that, each shared in proportion again. True if it
        wrote anything."""
        replicas = d.spec.replicas
        surge = surge_and_unavailable(d)[0]
        goal = replicas + surge if replicas > 0 else 0
        total = sum(g.size for g in groups)
        new = next((g for g in groups if g.hash == hash_), None)
        if len(groups) <= 1:
            only = groups[0] if groups else self._latest(d, hash_)
            if only is None:
                return False
            if d.spec.strategy.type == "Recreate" and any(
                p.metadata.labels.get(HASH_LABEL) != only.hash for p in picture.terminating_old
            ):
                return False  # Recreate: no pod of a template while another's still stop
            target = min(replicas, only.size + BURST)
            return await self._resize(
                key, d, hash_, [only], {only.hash: target}, picture, target == replicas
            )
        if new is not None and self._saturated(new, replicas, picture):
            sizes = {g.hash: replicas if g is new else 0 for g in groups}
            return await self._resize(key, d, hash_, groups, sizes, picture, True)
        if d.spec.strategy.type == "RollingUpdate":
            allowed = min(goal, total + BURST)
            sizes = proportional(groups, allowed, d.status.replicas)
            return await self._resize(key, d, hash_, groups, sizes, picture, allowed == goal)
        # Recreate with pods of several templates (Kubernetes leaves them as they are):
        # its own pass removes the old ones.
        sizes = {g.hash: g.size for g in groups}
        return await self._resize(key, d, hash_, groups, sizes, picture, True)

    @staticmethod
    def _saturated(new: Group, replicas: int, picture: Picture) -> bool:
        """Kubernetes' IsSaturated: the new template has all it wants, all available."""
        return (
            new.size == replicas
            and new.annotation(DESIRED_REPLICAS) == replicas
            and picture.count_available(new.pods) == replicas
        )

    def _latest(self, d: Deployment, hash_: str) -> Group | None:
        """No pod left: the template to scale up is the current one if it has a revision,
        else the newest revision's (that of a Deployment edited while paused): the last
        created, as Kubernetes' FindActiveOrLatest takes the newest ReplicaSet, not the
        highest revision number (which `rollout undo` gives an older template)."""
        owned = self._owned_revisions(d)
        rev = next((r for r in owned if r.metadata.labels.get(HASH_LABEL) == hash_), None)
        rev = rev or max(owned, key=created, default=None)
        if rev is None or HASH_LABEL not in rev.metadata.labels:
            return None
        return Group(rev.metadata.labels[HASH_LABEL], 0, rev)

    async def _resize(
        self,
        key: str,
        d: Deployment,
        hash_: str,
        groups: list[Group],
        sizes: dict[str, int],
        picture: Picture,
        done: bool,
    ) -> bool:
        """Give each group its size and record on each revision what the sizes are for
        (`done`: the Deployment's replicas; else a step of a larger scale-up, whose next
        step starts from these sizes): pods created, pods deleted and revisions
        annotated in one transaction, so that a restart finds either none of it (and
        scales again) or all of it (and goes on with the rollout)."""
        replicas = d.spec.replicas
        max_replicas = replicas + surge_and_unavailable(d)[0] if done else sum(sizes.values())
        annotations: list[Op] = []
        made: dict[str, list[Pod]] = {}
        doomed: dict[str, list[Pod]] = {}
        for g in groups:
            want = sizes[g.hash]
            template = self._template(d, hash_, g) if want > g.size else None
            if template is not None:
                made[g.hash] = self._new_pods(d, g.hash, template, want - g.size)
            elif want < g.size:
                doomed[g.hash] = deletion_order(g.pods)[: g.size - want]
            changes = {MAX_REPLICAS: str(max_replicas)}
            desired = replicas if done else g.annotation(DESIRED_REPLICAS)
            if desired is not None:
                changes[DESIRED_REPLICAS] = str(desired)
            # A template that cannot grow (no readable revision) keeps what it has.
            changes[REPLICAS] = str(want if want <= g.size or g.hash in made else g.size)
            annotate = self._annotation_op(d, g.revision, changes)
            if annotate is not None:
                annotations.append(annotate)
        created_pods = [p for pods in made.values() for p in pods]
        doomed_pods = [p for pods in doomed.values() for p in pods]
        # Conflict (a revision changed, a pod name taken): the next pass.
        kvs = await self._transact(key, created_pods, doomed_pods, annotations)
        if not kvs:
            return False
        for g in groups:
            if g.hash in made:
                (picture.new if g.hash == hash_ else picture.old).extend(made[g.hash])
            self._forget_deleted(picture, doomed.get(g.hash, []))
            if g.hash in made or g.hash in doomed:
                number = g.revision.revision if g.revision is not None else "?"
                self.events.record(
                    _ref(d),
                    "ScalingReplicaSet",
                    f"Scaled {'up' if g.hash in made else 'down'} revision {number} "
                    f"({revision_name(d.metadata.name, g.hash)}) from {g.size} to "
                    f"{g.size + len(made.get(g.hash, [])) - len(doomed.get(g.hash, []))}",
                )
        return True

    def _template(self, d: Deployment, hash_: str, g: Group) -> PodTemplateSpec | None:
        """The template of the group's pods: the Deployment's own, or its revision's (None
        for a group without a readable revision: it cannot grow)."""
        if g.hash == hash_:
            return d.spec.template
        return revision_template(g.revision) if g.revision is not None else None

    def _annotation_op(
        self, d: Deployment, rev: ControllerRevision | None, changes: dict[str, str]
    ) -> Op | None:
        """The write recording `changes` in `rev`'s annotations, what its pods are sized
        for (None if already so, or if it has no revision)."""
        if rev is None:
            return None
        annotations = {**rev.metadata.annotations, **changes}
        rkey = REVISIONS.key(d.metadata.namespace or "default", rev.metadata.name)
        kv = self.revisions.kvs.get(rkey)
        if annotations == rev.metadata.annotations or kv is None:
            return None
        meta = rev.metadata.model_copy(update={"annotations": annotations})
        updated = rev.model_copy(update={"metadata": meta})
        return Op("put", rkey, encode(updated), updated, expect=kv.mod_revision)

    # -- strategies ---------------------------------------------------------------------------

    async def _rolling(
        self,
        key: str,
        d: Deployment,
        hash_: str,
        revision: int,
        picture: Picture,
    ) -> bool:
        desired = d.spec.replicas
        surge, max_unavailable = surge_and_unavailable(d)
        changed = False
        new, old = picture.new, picture.old
        if len(new) > desired:
            excess = deletion_order(new)[: len(new) - desired]
            await self._delete(key, d, excess, picture, f"revision {revision}")
            changed = True
        elif len(new) < desired:
            total = len(new) + len(old)
            count = min(desired + surge - total, desired - len(new))
            if count > 0:
                await self._create(key, d, hash_, revision, count, picture)
                changed = True
        if not old:
            return changed
        min_available = desired - max_unavailable
        total = len(new) + len(old)
        new_unavailable = len(new) - picture.count_available(new)
        budget = total - min_available - new_unavailable
        if budget <= 0:
            return changed
        # Old pods that are not available first: removing them costs no availability.
        unhealthy = [p for p in deletion_order(old) if p.metadata.uid not in picture.available]
        doomed = unhealthy[:budget]
        available = picture.count_available(new) + picture.count_available(old)
        healthy_budget = min(available - min_available, budget - len(doomed))
        if healthy_budget > 0:
            healthy = [p for p in deletion_order(old) if p.metadata.uid in picture.available]
            doomed += healthy[:healthy_budget]
        if doomed:
            await self._delete(key, d, doomed, picture, "old revisions")
            changed = True
        return changed

    async def _recreate(
        self,
        key: str,
        d: Deployment,
        hash_: str,
        revision: int,
        picture: Picture,
    ) -> bool:
        # Every old template is sized to 0, as Kubernetes scales every old ReplicaSet to 0
        # for a Recreate, not only those with pods left to delete: one whose pods all went
        # otherwise (deleted, released) would keep its REPLICAS, its revision past the
        # history limit, and have its pods made up again under a later RollingUpdate.
        doomed_hashes = {p.metadata.labels.get(HASH_LABEL, "") for p in picture.old}
        emptied = [
            op
            for rev in self._owned_revisions(d)
            if (h := rev.metadata.labels.get(HASH_LABEL)) != hash_
            and h not in doomed_hashes
            and (recorded(rev, REPLICAS) or 0) > 0
            and (op := self._annotation_op(d, rev, {REPLICAS: "0"})) is not None
        ]
        if picture.old:
            await self._delete(key, d, list(picture.old), picture, "old revisions", emptied)
            return True
        if emptied:
            await self._transact(key, [], [], emptied)
        if picture.terminating_old:
            return False  # Recreate: new pods only once every old one is gone
        desired = d.spec.replicas
        if len(picture.new) < desired:
            await self._create(key, d, hash_, revision, desired - len(picture.new), picture)
            return True
        if len(picture.new) > desired:
            excess = deletion_order(picture.new)[: len(picture.new) - desired]
            await self._delete(key, d, excess, picture, f"revision {revision}")
            return True
        return False

    async def _create(
        self, key: str, d: Deployment, hash_: str, revision: int, count: int, picture: Picture
    ) -> None:
        pods = self._new_pods(d, hash_, d.spec.template, min(count, BURST))  # the rest later
        # Sized now for the Deployment's replicas, as Kubernetes annotates a ReplicaSet it
        # scales: a template that had no pod at the last scale was not annotated then.
        current = next(
            (r for r in self._owned_revisions(d) if r.metadata.labels.get(HASH_LABEL) == hash_),
            None,
        )
        replicas = d.spec.replicas
        changes = {
            DESIRED_REPLICAS: str(replicas),
            MAX_REPLICAS: str(replicas + surge_and_unavailable(d)[0]),
            REPLICAS: str(len(picture.new) + len(pods)),
        }
        annotate = self._annotation_op(d, current, changes)
        also = [annotate] if annotate is not None else []
        # Conflict (a name taken, the revision changed): the next pass.
        kvs = await create_pods(self.store, pods, also)
        self.wrote(key, kvs)
        picture.new.extend(pods)
        self.events.record(
            _ref(d),
            "ScalingReplicaSet",
            f"Scaled up revision {revision} ({revision_name(d.metadata.name, hash_)}) "
            f"to {len(picture.new)}",
        )

    def _new_pods(
        self, d: Deployment, hash_: str, template: PodTemplateSpec, count: int
    ) -> list[Pod]:
        """`count` pods of `template` (whose hash is `hash_`) for the Deployment."""
        proto = prototype(template, d.metadata.namespace or "default")
        owner = owner_reference("Deployment", "apps/v1", d.metadata.name, d.metadata.uid or "")
        base = f"{d.metadata.name}-{hash_}"
        labels = {HASH_LABEL: hash_}
        return [new_pod(proto, template, generate_name(base), labels, owner) for _ in range(count)]

    @staticmethod
    def _forget_deleted(picture: Picture, pods: list[Pod]) -> None:
        for pod in pods:
            if pod in picture.new:
                picture.new.remove(pod)
            if pod in picture.old:
                picture.old.remove(pod)
                picture.terminating_old.append(pod)
            picture.available.discard(pod.metadata.uid or "")

    async def _delete(
        self,
        key: str,
        d: Deployment,
        pods: list[Pod],
        picture: Picture,
        what: str,
        also: Sequence[Op] = (),
    ) -> None:
        """Delete the pods and record each template's new size (REPLICAS) on its revision,
        in one transaction (with `also`): what a rolling update does to a ReplicaSet's
        replicas."""
        after = template_counts(picture.new + picture.old)
        after.subtract(template_counts(pods))
        revisions = {r.metadata.labels.get(HASH_LABEL): r for r in self._owned_revisions(d)}
        annotations = [
            op
            for h in {p.metadata.labels.get(HASH_LABEL, "") for p in pods}
            if (op := self._annotation_op(d, revisions.get(h), {REPLICAS: str(after[h])}))
            is not None
        ]
        await self._transact(key, [], pods, [*annotations, *also])
        self._forget_deleted(picture, pods)
        self.events.record(
            _ref(d),
            "ScalingReplicaSet",
            f"Scaled down {what} by {len(pods)}: "
            f"{', '.join(p.metadata.name for p in pods[:5])}{' ...' if len(pods) > 5 else ''}",
        )

    async def _transact(
        self, key: str, made: list[Pod], doomed: list[Pod], also: list[Op]
    ) -> list[KV]:
        """Create `made`, delete `doomed` and write `also` in one transaction. Each deletion
        is guarded by the pod's cached version; one that fails only because the pod
        changed meanwhile (an agent's status write still being committed: on a busy
        cluster there nearly always is one) is made again from the store's latest version
        of every doomed pod and tried again at once (DELETION_ATTEMPTS in all), so that a
        scale is not put off, with backoff, until no status write is in flight. A pod gone
        or marked meanwhile is left out (it is going anyway). Any other conflict (a
        revision changed, a name taken) is raised: the next pass looks again."""
        doomed_keys = {pod_store_key(p) for p in doomed}
        for attempt in range(DELETION_ATTEMPTS):
            ops = [creation_op(p) for p in made]
            ops += self._deletion_ops(doomed, latest=attempt > 0)
            ops += also
            if not ops:
                return []
            try:
                kvs = await self.store.txn(ops)
            except Conflict as exc:
                if exc.key not in doomed_keys or attempt == DELETION_ATTEMPTS - 1:
                    raise
                continue
            self.wrote(key, kvs)
            return kvs
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def _deletion_ops(self, pods: list[Pod], *, latest: bool) -> list[Op]:
        """The ops deleting `pods`, from the cached versions (or the store's latest, which
        also stands in for a pod this pass created and the cache has not seen yet)."""
        ops = []
        for pod in pods:
            pkey = pod_store_key(pod)
            kv = None if latest else self.cluster.pod_kvs.get(pkey)
            kv = kv or self.store.latest(pkey)
            if kv is None:
                continue
            op = deletion_op(self.cluster, pkey, kv)
            if op is not None:
                ops.append(op)
        return ops

    async def _replenish(self, key: str, d: Deployment, hash_: str, picture: Picture) -> bool:
        """What Kubernetes' ReplicaSet controller does: a template with fewer active pods
        than its revision's REPLICAS (one deleted, failed, or released) gets pods of its
        own template to make them up, old templates in the middle of a rollout too (an old
        ReplicaSet keeps its replicas until the rollout scales it down), so that a lost old
        pod's place does not go to a new template that may never become available. Under
        Recreate only the current template, once no old pod is left (the old ones are all
        to go). True if it created any."""
        counts = template_counts(picture.new + picture.old)
        recreate = d.spec.strategy.type == "Recreate"
        made: dict[str, list[Pod]] = {}
        budget = BURST
        for rev in self._owned_revisions(d):
            rhash = rev.metadata.labels.get(HASH_LABEL)
            want = recorded(rev, REPLICAS)
            if rhash is None or want is None or want <= counts.get(rhash, 0) or budget <= 0:
                continue
            if recreate and (rhash != hash_ or picture.old or picture.terminating_old):
                continue
            template = d.spec.template if rhash == hash_ else revision_template(rev)
            if template is None:
                continue
            count = min(want - counts.get(rhash, 0), budget)
            made[rhash] = self._new_pods(d, rhash, template, count)
            budget -= count
        if not made:
            return False
        kvs = await create_pods(self.store, [p for pods in made.values() for p in pods])
        self.wrote(key, kvs)
        for h, pods in made.items():
            (picture.new if h == hash_ else picture.old).extend(pods)
            self.events.record(
                _ref(d),
                "SuccessfulCreate",
                f"Replaced {len(pods)} lost pods of {revision_name(d.metadata.name, h)}",
            )
        return True

    # -- revisions ----------------------------------------------------------------------------

    def _current_hash(self, d: Deployment) -> str:
        """The `pod-template-hash` of the Deployment's template: that of a revision of its
        own recording the same template (as Kubernetes finds the new ReplicaSet by its
        template, not its name: one made before a collision bumped the count keeps its
        hash), else the template's hashed with `status.collisionCount`."""
        hash_ = template_hash(d.spec.template, d.status.collision_count)
        owned = self._owned_revisions(d)
        if any(r.metadata.labels.get(HASH_LABEL) == hash_ for r in owned):
            return hash_
        plain = template_hash(d.spec.template)
        same = [
            r
            for r in owned
            if HASH_LABEL in r.metadata.labels
            and (t := revision_template(r)) is not None
            and template_hash(t) == plain
        ]
        return min(same, key=created).metadata.labels[HASH_LABEL] if same else hash_

    async def _bump_collision_count(self, key: str, kv: KV, d: Deployment, name: str) -> None:
        """Kubernetes' answer to a ReplicaSet name taken by another's: count the collision
        in `status.collisionCount`, which changes the template's hash, and so the name,
        from the next pass on."""
        count = (d.status.collision_count or 0) + 1
        status = d.status.model_copy(update={"collision_count": count})
        updated = d.model_copy(update={"status": status})
        written = await self.store.put(key, encode(updated), obj=updated, expect=kv.mod_revision)
        self.wrote(key, [written])
        _LOGGER.info(
            "deployment %s: revision name %s is taken; collisionCount is now %d", key, name, count
        )

    def _owned_revisions(self, d: Deployment) -> list[ControllerRevision]:
        found = (self.revisions.get(k) for k in self.revision_owners.of(d.metadata.uid))
        return [r for r in found if r is not None]

    async def _sync_revision(self, key: str, kv: KV, d: Deployment, hash_: str) -> int | None:
        """The number of the current template's revision, recording it first if new (None:
        its name is taken, by an orphan of its own to adopt, or by another's revision, for
        which `status.collisionCount` is bumped, as Kubernetes does)."""
        owned = self._owned_revisions(d)
        name = revision_name(d.metadata.name, hash_)
        top = max((r.revision for r in owned), default=0)
        current = next((r for r in owned if r.metadata.name == name), None)
        cause = d.metadata.annotations.get(CHANGE_CAUSE)
        namespace = d.metadata.namespace or "default"
        rkey = REVISIONS.key(namespace, name)
        if current is not None and current.revision == top:
            return top
        if d.spec.paused:
            # No rollout while paused, so no revision for its template yet: it is recorded
            # on resume (Kubernetes makes no ReplicaSet for it until then), and several
            # edits made while paused become one revision.
            return top
        if current is not None:
            # Back to an earlier template (`rollout undo`): it becomes the newest revision.
            updated = current.model_copy(update={"revision": top + 1})
            updated.metadata = current.metadata.model_copy(
                update={"annotations": _with_cause(current.metadata.annotations, cause)}
            )
            rkv = self.revisions.kvs.get(rkey)
            if rkv is None:
                return None
            written = await self.store.put(
                rkey, encode(updated), obj=updated, expect=rkv.mod_revision
            )
            self.wrote(key, [written])
            return top + 1
        taken = self.revisions.get(rkey)
        if taken is not None:
            if controller_ref(taken.metadata.owner_references) is None and history_of(taken, d):
                return None  # its own orphan: adopted on the next pass
            # Another's (a Deployment whose long name begins as this one's, or a deleted
            # namesake's): a new hash, as Kubernetes resolves a ReplicaSet name collision.
            await self._bump_collision_count(key, kv, d, name)
            return None
        revision = ControllerRevision(
            metadata=ObjectMeta(
                name=name,
                namespace=namespace,
                uid=_uid(),
                labels={**d.spec.selector.match_labels, HASH_LABEL: hash_},
                annotations=_with_cause(
                    {
                        DESIRED_REPLICAS: str(d.spec.replicas),
                        MAX_REPLICAS: str(d.spec.replicas + surge_and_unavailable(d)[0]),
                    },
                    cause,
                ),
                creation_timestamp=now(),
                owner_references=[
                    owner_reference("Deployment", "apps/v1", d.metadata.name, d.metadata.uid or "")
                ],
            ),
            data={"spec": {"template": d.spec.template.to_dict()}},
            revision=top + 1,
        )
        try:
            written = await self.store.put(rkey, encode(revision), obj=revision, expect=0)
        except Conflict:
            return None
        self.wrote(key, [written])
        return top + 1

    async def _prune_revisions(self, d: Deployment, hash_: str) -> None:
        """Keep `revisionHistoryLimit` old revisions; never one that still has pods."""
        current = revision_name(d.metadata.name, hash_)
        old = sorted(
            (r for r in self._owned_revisions(d) if r.metadata.name != current),
            key=lambda r: r.revision,
        )
        excess = len(old) - d.spec.revision_history_limit
        if excess <= 0:
            return
        in_use = {
            pod.metadata.labels.get(HASH_LABEL)
            for k in self.pod_owners.of(d.metadata.uid)
            if (pod := self.cluster.pods.get(k)) is not None
        }
        namespace = d.metadata.namespace or "default"
        for rev in old:
            if excess <= 0:
                break
            if rev.metadata.labels.get(HASH_LABEL) in in_use or (recorded(rev, REPLICAS) or 0) > 0:
                continue  # its pods, or pods it is to make up (an old ReplicaSet's replicas)
            rkey = REVISIONS.key(namespace, rev.metadata.name)
            kv = self.revisions.kvs.get(rkey)
            if kv is not None:
                try:
                    await self.store.delete(rkey, expect=kv.mod_revision)
                except (Conflict, NotFound):
                    continue
            excess -= 1

    # -- status -------------------------------------------------------------------------------

    async def _write_status(
        self,
        key: str,
        kv: KV,
        d: Deployment,
        hash_: str,
        revision: int,
        picture: Picture,
        changed: bool,
    ) -> float | None:
        desired = d.spec.replicas
        # Kubernetes' MaxUnavailable, which is 0 for Recreate: that strategy stops every
        # old pod at once, but a Deployment with no pod available is not Available.
        rolling = d.spec.strategy.type == "RollingUpdate"
        max_unavailable = surge_and_unavailable(d)[1] if rolling else 0
        active = picture.new + picture.old
        available = picture.count_available(active)
        ready = sum(1 for p in active if is_ready(p))
        old_status = d.status
        status = DeploymentStatus(
            observed_generation=d.metadata.generation,
            replicas=len(active),
            updated_replicas=len(picture.new),
            ready_replicas=ready,
            available_replicas=available,
            # Kubernetes' total (what its ReplicaSets want: replicas, more in a surge)
            # less the available.
            unavailable_replicas=max(max(desired, len(active)) - available, 0),
            conditions=list(old_status.conditions),
            collision_count=old_status.collision_count,
        )
        stamp = now()
        enough = available >= desired - max_unavailable
        status.conditions = set_condition(
            status.conditions,
            WorkloadCondition(
                type="Available",
                status="True" if enough else "False",
                reason="MinimumReplicasAvailable" if enough else "MinimumReplicasUnavailable",
                message="Deployment has minimum availability."
                if enough
                else "Deployment does not have minimum availability.",
                last_update_time=stamp,
                last_transition_time=stamp,
            ),
        )
        requeue = self._progress(d, status, old_status, hash_, revision, changed, stamp)
        annotations = dict(d.metadata.annotations)
        if revision:  # none yet for a Deployment created paused
            annotations[REVISION_ANNOTATION] = str(revision)
        if status == old_status and annotations == d.metadata.annotations:
            return requeue
        meta = d.metadata.model_copy(update={"annotations": annotations})
        updated = d.model_copy(update={"metadata": meta, "status": status})
        written = await self.store.put(key, encode(updated), obj=updated, expect=kv.mod_revision)
        self.wrote(key, [written])
        return requeue

    def _progress(
        self,
        d: Deployment,
        status: DeploymentStatus,
        old: DeploymentStatus,
        hash_: str,
        revision: int,
        changed: bool,
        now_: datetime,
    ) -> float | None:
        """Set Progressing; return when to look again for the deadline."""
        name = revision_name(d.metadata.name, hash_)
        cond = find_condition(status.conditions, "Progressing")
        desired = d.spec.replicas
        if d.spec.paused:
            status.conditions = set_condition(
                status.conditions,
                WorkloadCondition(
                    type="Progressing",
                    status="Unknown",
                    reason="DeploymentPaused",
                    message="Deployment is paused",
                    last_update_time=now_,
                    last_transition_time=now_,
                ),
            )
            return None
        complete = (
            status.updated_replicas == desired
            and status.replicas == desired
            and status.available_replicas == desired
        )
        if complete:
            reason = "NewReplicaSetAvailable"
            message = f'Revision {revision} ("{name}") has successfully progressed.'
            if cond is None or cond.reason != reason or cond.message != message:
                self._set_progressing(status, "True", reason, message, now_)
            return None
        progressed = (
            changed
            or old.observed_generation != d.metadata.generation
            or status.updated_replicas > old.updated_replicas
            or (status.replicas - status.updated_replicas) < (old.replicas - old.updated_replicas)
            or status.ready_replicas > old.ready_replicas
            or status.available_replicas > old.available_replicas
        )
        deadline = d.spec.progress_deadline_seconds
        if progressed or cond is None or cond.last_update_time is None:
            message = f'Revision {revision} ("{name}") is progressing.'
            self._set_progressing(status, "True", "ReplicaSetUpdated", message, now_)
            return float(deadline)
        waited = (now_ - cond.last_update_time).total_seconds()
        if cond.reason == "ProgressDeadlineExceeded":
            return None
        if waited >= deadline:
            self._set_progressing(
                status,
                "False",
                "ProgressDeadlineExceeded",
                f'Revision {revision} ("{name}") has timed out progressing.',
                cond.last_update_time,
            )
            self.events.record(
                _ref(d),
                "ProgressDeadlineExceeded",
                f"Deployment {d.metadata.name} has not progressed for {deadline}s",
                type="Warning",
            )
            return None
        return max(deadline - waited, 0.5)

    @staticmethod
    def _set_progressing(
        status: DeploymentStatus,
        value: Literal["True", "False", "Unknown"],
        reason: str,
        message: str,
        stamp: datetime | None,
    ) -> None:
        """Set Progressing with `stamp` as its update time (progress made, or not since)."""
        old = find_condition(status.conditions, "Progressing")
        transition = stamp if old is None or old.status != value else old.last_transition_time
        status.conditions = [
            *(c for c in status.conditions if c.type != "Progressing"),
            WorkloadCondition(
                type="Progressing",
                status=value,
                reason=reason,
                message=message,
                last_update_time=stamp,
                last_transition_time=transition,
            ),
        ]


def scaling_event(groups: list[Group], replicas: int) -> bool:
    """Kubernetes' isScalingEvent: a template with pods was sized for other replicas than
    the Deployment's (one without a record of it, as a revision written before there was
    one, says nothing)."""
    for g in groups:
        desired = g.annotation(DESIRED_REPLICAS)
        if g.size > 0 and desired is not None and desired != replicas:
            return True
    return False


def history_of(rev: ControllerRevision, d: Deployment) -> bool:
    """An orphaned revision is `d`'s to adopt: it was written for a Deployment of `d`'s
    name (deleted with propagationPolicy=Orphan; its name is `revision_name` of it), and
    `d`'s selector matches the pods it made. Unlike a ReplicaSet in Kubernetes, a
    revision is never adopted across names: named after its Deployment and numbered in
    its history, it would be another's revision under a name this one cannot record."""
    hash_ = rev.metadata.labels.get(HASH_LABEL)
    if hash_ is None or rev.metadata.name != revision_name(d.metadata.name, hash_):
        return False
    labels = pod_labels(rev)
    return labels is not None and d.spec.selector.matches(labels)


def pod_labels(rev: ControllerRevision) -> dict[str, str] | None:
    """The labels of the pods made from the revision's template: the template's own and
    `pod-template-hash` (a ReplicaSet's labels in Kubernetes). None where the revision
    does not hold a template as this controller writes it."""
    spec = rev.data.get("spec")
    template = spec.get("template") if isinstance(spec, dict) else None
    meta = template.get("metadata") if isinstance(template, dict) else None
    labels = meta.get("labels") if isinstance(meta, dict) else None
    hash_ = rev.metadata.labels.get(HASH_LABEL)
    if not isinstance(labels, dict) or hash_ is None:
        return None
    return {**labels, HASH_LABEL: hash_}


def _with_cause(annotations: dict[str, str], cause: str | None) -> dict[str, str]:
    result = {k: v for k, v in annotations.items() if k != CHANGE_CAUSE}
    if cause:
        result[CHANGE_CAUSE] = cause
    return result


def _ref(d: Deployment) -> Ref:
    return Ref("Deployment", d.metadata.name, d.metadata.namespace, d.metadata.uid)


def _uid() -> str:
    return str(uuid.uuid4())
