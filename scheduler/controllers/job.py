"""The Job controller: run pods until `completions` of them succeed, or give up.

One pass for one Job::

    finished (Complete or Failed)? ──> stop what still runs; delete the Job
                                       ttlSecondsAfterFinished after it finished
    active longer than activeDeadlineSeconds ──> Failed, reason DeadlineExceeded
    failed pods > backoffLimit, or (OnFailure)
    active pods' restarts >= backoffLimit    ──> Failed, reason BackoffLimitExceeded
    `completions` pods Succeeded             ──> Complete (the rest are stopped)
    suspended                                ──> stop what runs (resumed: startTime
                                                 is reset, the deadline counts anew)
    otherwise: keep min(parallelism, completions - succeeded) pods active,
               waiting BACKOFF_SECONDS * 2^(failures-1) (at most BACKOFF_CAP)
               after the latest failure before starting a replacement (failures:
               those counted since the last success, as Kubernetes' backoff record)

Counts are kept as Kubernetes keeps them, with the finalizer JOB_TRACKING on
every pod the Job makes, so that deleting a finished pod does not lose it (the
Job would run its work again): a pod that finishes is first recorded in
`status.uncountedTerminatedPods`, durably; then its finalizer is removed; then it
is moved into `succeeded` or `failed`. A pod deleted before it finished is held
by its finalizer until it has stopped (set Failed: scheduler/podfinal.py) and
counts as failed. Once the Job has finished, or when it is gone or gives a pod
up (propagationPolicy Orphan), the finalizer is removed without counting.

The Job fails when more pods than `backoffLimit` are counted failed, or, for
`restartPolicy: OnFailure` (the pod restarts in place), once the containers of its
Pending or Running pods have restarted `backoffLimit` times between them (more than
0 for a limit of 0), as Kubernetes decides it: restarts of a pod that went on to
finish are not counted. Without `completions` (a
work queue), no pod is started once one has succeeded, those still active are left
to finish, and the Job is Complete when none is.
Pods are named `<job>-<5 random>` and labelled `job-name` and `controller-uid`,
as in Kubernetes. The backoff is seconds, not Kubernetes' ten-second base, in line
with corral's other timers.

The backoff follows Kubernetes' backoff record (pkg/controller/job/backoff_utils.go):
the pods counted failed since the last counted success, and when the last of them
finished (`finished_at`), updated as finished pods are recorded, so deleting failed
pods does not reset it, and a pod the Job stops itself (never counted) does not add
to it. Like kube-controller-manager's, it is kept in memory: a restart of the
scheduler forgets it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

from common.models import (
    Job,
    JobStatus,
    Pod,
    UncountedTerminatedPods,
    WorkloadCondition,
    now,
)
from scheduler.cluster import TERMINAL_PHASES
from scheduler.context import Context
from scheduler.controllers.base import Controller
from scheduler.controllers.cache import ObjectCache, OwnerIndex, controller_ref
from scheduler.controllers.podcontrol import (
    BURST,
    create_pods,
    delete_pod,
    deletion_order,
    generate_name,
    is_active,
    is_ready,
    new_pod,
    owner_reference,
    pod_store_key,
    prototype,
    restarts,
    set_finalizer,
)
from scheduler.events import Ref
from scheduler.kinds import JOBS, PODS
from scheduler.objects import encode
from scheduler.store import KV, Conflict, NotFound

_LOGGER = logging.getLogger(__name__)

BACKOFF_SECONDS = 1.0
BACKOFF_CAP = 60.0
JOB_TRACKING = "batch.kubernetes.io/job-tracking"  # Kubernetes' name for it


def job_labels(job: Job) -> dict[str, str]:
    name, uid = job.metadata.name, job.metadata.uid or ""
    return {
        "job-name": name,
        "batch.kubernetes.io/job-name": name,
        "controller-uid": uid,
        "batch.kubernetes.io/controller-uid": uid,
    }


def finished_condition(job: Job) -> WorkloadCondition | None:
    """The Complete or Failed condition, if the Job has finished."""
    for cond in job.status.conditions:
        if cond.type in ("Complete", "Failed") and cond.status == "True":
            return cond
    return None


def tracked(pod: Pod) -> bool:
    """Does the pod carry the Job controller's finalizer (its end not yet counted)?"""
    return JOB_TRACKING in (pod.metadata.finalizers or ())


def finished_at(pod: Pod, fallback: datetime) -> datetime:
    """When a finished pod ended, as Kubernetes' getFinishedTime has it: its last
    container's end if every container has one (its agent's own timestamp), else when
    its Ready condition turned False, else when it was deleted, else when it was created
    (`fallback` for a pod with no time at all)."""
    ends = [
        cs.state.terminated.finished_at if cs.state.terminated is not None else None
        for cs in pod.status.container_statuses
    ]
    if ends and all(end is not None for end in ends):
        return max(end for end in ends if end is not None)
    ready = next((c for c in pod.status.conditions if c.type == "Ready"), None)
    if ready is not None and ready.status == "False" and ready.last_transition_time:
        return ready.last_transition_time
    return pod.metadata.deletion_timestamp or pod.metadata.creation_timestamp or fallback


@dataclass(frozen=True)
class Backoff:
    """Kubernetes' backoffRecord: the failures counted since the last success, and when
    the last of them happened."""

    failures: int = 0
    last_failure: datetime | None = None

    def then(self, succeeded: list[Pod], failed: list[Pod], stamp: datetime) -> Backoff:
        """The record once these newly finished pods are counted (newBackoffRecord): a
        success starts it again from the failures that finished after it."""
        if not succeeded and not failed:
            return self
        if not succeeded:
            last = max(finished_at(p, stamp) for p in failed)
            return Backoff(self.failures + len(failed), last)
        last_success = max(finished_at(p, stamp) for p in succeeded)
        after = [t for t in (finished_at(p, stamp) for p in failed) if t > last_success]
        return Backoff(len(after), max(after) if after else None)

    def left(self, stamp: datetime) -> float:
        """Seconds before a replacement may start: BACKOFF_SECONDS * 2^(failures-1), at
        most BACKOFF_CAP, after the last failure (getRemainingTimeForFailuresCount)."""
        if self.failures == 0 or self.last_failure is None:
            return 0.0
        delay = min(BACKOFF_SECONDS * 2 ** min(self.failures - 1, 30), BACKOFF_CAP)
        return max(delay - (stamp - self.last_failure).total_seconds(), 0.0)


class JobController(Controller):
    name = "job"

    def __init__(self, ctx: Context, jobs: ObjectCache[Job], pod_owners: OwnerIndex) -> None:
        super().__init__(ctx)
        self.jobs = jobs
        self.pod_owners = pod_owners
        # Job key -> the uid of the Job it was kept for, and its record. A Job created again
        # under its name is another Job, which must not start out backing off from the
        # failures of the first: `forget` drops the record on the deletion's event, the uid
        # keeps one it came too late for from counting.
        self._backoffs: dict[str, tuple[str, Backoff]] = {}

    def keys(self) -> list[str]:
        return list(self.jobs.objects)

    def enqueue(self, namespace: str, name: str) -> None:
        self.queue.add(JOBS.key(namespace, name))

    def forget(self, key: str) -> None:
        """The Job at `key` is gone: its backoff record goes too (no pass may come for a
        key no Job holds, and a Job created later under its name starts afresh)."""
        self._backoffs.pop(key, None)

    def release_if_orphaned(self, key: str, pod: Pod) -> None:
        """Queue the pod (by its store key) to have JOB_TRACKING removed if no live Job
        controls it any more: nothing else would, and a delete would wait for good."""
        if tracked(pod) and not self._controlled(pod):
            self.queue.add(key)

    def _controlled(self, pod: Pod) -> bool:
        ref = controller_ref(pod.metadata.owner_references)
        job_key = self.jobs.by_uid.get(ref.uid) if ref is not None and ref.kind == "Job" else None
        job = self.jobs.get(job_key) if job_key is not None else None
        return job is not None and job.metadata.deletion_timestamp is None

    async def _release_orphan(self, key: str) -> None:
        pod = self.cluster.pods.get(key)
        if pod is not None and tracked(pod) and not self._controlled(pod):
            await set_finalizer(self.store, self.cluster, key, JOB_TRACKING, on=False)

    async def reconcile(self, key: str) -> float | None:
        if key.startswith(PODS.prefix):  # a pod queued by `release_if_orphaned`
            await self._release_orphan(key)
            return None
        job = self.jobs.get(key)
        kv = self.jobs.kvs.get(key)
        if job is None or kv is None or job.metadata.deletion_timestamp is not None:
            self._backoffs.pop(key, None)
            return None
        # Owners are namespace-local: a pod elsewhere naming this uid is not one of its own.
        prefix = PODS.namespace_prefix(job.metadata.namespace or "default")
        # Only the pods it controls: one that names it without `controller: true` is not
        # its to count or stop (as Kubernetes' controllers go by the controller reference).
        pods = [
            p
            for k in self.pod_owners.of(job.metadata.uid)
            if k.startswith(prefix)
            and (p := self.cluster.pods.get(k))
            and (ref := controller_ref(p.metadata.owner_references)) is not None
            and ref.uid == job.metadata.uid
        ]
        stamp = now()
        status = job.status.model_copy(deep=True)
        done = finished_condition(job)
        uncounted = status.uncounted_terminated_pods or UncountedTerminatedPods()
        new_succeeded, new_failed = _record_finished(uncounted, pods) if done is None else ([], [])
        if new_succeeded or new_failed:
            # Durable before any finalizer goes: a crash in between cannot lose them.
            status.uncounted_terminated_pods = uncounted
            self.wrote(key, [await self._put_status(key, kv, job, status)])
            # Counted once recorded (a write that lost records them again next pass).
            backoff = self._backoff_record(key, job).then(new_succeeded, new_failed, stamp)
            self._backoffs[key] = (job.metadata.uid or "", backoff)
            return 0.0  # on with the recorded status
        retry = await self._count(
            key, status, uncounted, pods, finished=done is not None, adopt=not job.spec.suspend
        )
        active = [p for p in pods if is_active(p)]
        succeeded = status.succeeded + len(uncounted.succeeded)
        failures = status.failed + len(uncounted.failed)
        requeue: float | None = retry
        if done is not None:
            self._backoffs.pop(key, None)
            await self._stop(key, job, active, "the Job has finished")
            active = []
            deleted, requeue = await self._expire(key, job, done, stamp)
            if deleted:
                return None
        elif job.spec.suspend:
            await self._stop(key, job, active, "the Job is suspended")
            active = []
            status.conditions = _set(
                status.conditions, "Suspended", "JobSuspended", "Job suspended"
            )
        else:
            if status.start_time is None or _suspended(job):
                # Started, or resumed: activeDeadlineSeconds counts from now (Kubernetes
                # resets startTime on resume, so the time suspended is not counted).
                status.start_time = stamp
            status.conditions = [c for c in status.conditions if c.type != "Suspended"]
            active, requeue = await self._run(
                key, job, status, active, pods, succeeded, failures, stamp
            )
        if retry is not None:
            requeue = retry if requeue is None else min(requeue, retry)
        status.active = len(active)
        status.ready = sum(1 for p in active if is_ready(p))
        if status != job.status:
            self.wrote(key, [await self._put_status(key, kv, job, status)])
            if finished_condition(job.model_copy(update={"status": status})) and done is None:
                requeue = 0.0  # look again at once: the TTL starts now, the pods go free
        return requeue

    async def _put_status(self, key: str, kv: KV, job: Job, status: JobStatus) -> KV:
        updated = job.model_copy(update={"status": status})
        return await self.store.put(key, encode(updated), obj=updated, expect=kv.mod_revision)

    async def _count(
        self,
        key: str,
        status: JobStatus,
        uncounted: UncountedTerminatedPods,
        pods: list[Pod],
        *,
        finished: bool,
        adopt: bool,
    ) -> float | None:
        """Remove JOB_TRACKING from the recorded pods (from every pod that is not active
        once the Job has finished), add it (`adopt`, unless finished) to active pods that
        lack it (made before it existed), then move the recorded pods whose finalizer is
        gone into the counts. The seconds after which to look again if a write lost,
        else None. Active pods the controller stops itself are freed by `_stop`."""
        recorded = set(uncounted.succeeded) | set(uncounted.failed)
        free = [
            p
            for p in pods
            if tracked(p) and (p.metadata.uid in recorded or (finished and not is_active(p)))
        ]
        adopt = adopt and not finished
        bare = [p for p in pods if adopt and is_active(p) and not tracked(p)]
        writes = [(p, False) for p in free] + [(p, True) for p in bare]
        results = await self._set_tracking(key, writes)
        released = {
            p.metadata.uid
            for (p, on), r in zip(writes, results, strict=True)
            if isinstance(r, KV) and not on
        }
        still = {p.metadata.uid for p in pods if tracked(p)} - released
        for uids, field in ((uncounted.succeeded, "succeeded"), (uncounted.failed, "failed")):
            gone = [uid for uid in uids if uid not in still]
            if gone:
                setattr(status, field, getattr(status, field) + len(gone))
                uids[:] = [uid for uid in uids if uid in still]
        has_any = uncounted.succeeded or uncounted.failed
        status.uncounted_terminated_pods = uncounted if has_any else None
        return 0.05 if not all(isinstance(r, KV) for r in results) else None

    async def _set_tracking(
        self, key: str, writes: list[tuple[Pod, bool]]
    ) -> list[KV | Conflict | NotFound]:
        """Add (True) or remove (False) JOB_TRACKING on each pod, side by side; each
        write's new version, or why it did not land (it lost to a newer version of its
        pod, which is gone or on its way to this controller)."""
        results = await asyncio.gather(
            *(
                set_finalizer(self.store, self.cluster, pod_store_key(p), JOB_TRACKING, on)
                for p, on in writes
            ),
            return_exceptions=True,
        )
        landed: list[KV | Conflict | NotFound] = []
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Conflict | NotFound):
                raise result
            landed.append(result)
        self.wrote(key, [r for r in landed if isinstance(r, KV)])
        return landed

    async def _run(
        self,
        key: str,
        job: Job,
        status: JobStatus,
        active: list[Pod],
        pods: list[Pod],
        succeeded: int,
        failures: int,
        stamp: datetime,
    ) -> tuple[list[Pod], float | None]:
        """Decide the outcome, or keep the right number of pods active; (active, requeue).
        `succeeded` and `failures` are the Job's counts."""
        spec = job.spec
        completions = spec.completions
        parallelism = spec.parallelism if spec.parallelism is not None else 1
        if completions is None and spec.parallelism is None:
            completions = 1
        elapsed = (stamp - status.start_time).total_seconds() if status.start_time else 0.0
        deadline = spec.active_deadline_seconds
        if deadline is not None and elapsed >= deadline:
            await self._finish(
                key,
                job,
                status,
                active,
                "Failed",
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
                stamp,
            )
            return [], None
        if failures > spec.backoff_limit or restarts_past_limit(job, pods):
            await self._finish(
                key,
                job,
                status,
                active,
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
                stamp,
            )
            return [], None
        if completions is not None:
            complete = succeeded >= completions
        else:
            complete = bool(succeeded) and not active
        if complete:
            status.completion_time = stamp
            await self._finish(
                key,
                job,
                status,
                active,
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                stamp,
            )
            return [], None
        if completions is None:
            # A work queue: no new pod after a success, and those still active are left
            # to finish their share (Kubernetes' wantActive = active), not stopped.
            want = len(active) if succeeded else parallelism
        else:
            want = min(parallelism, completions - succeeded)
        requeue: float | None = None
        if deadline is not None:
            requeue = max(deadline - elapsed, 0.1)
        missing = want - len(active)
        if missing < 0:
            extra = deletion_order(active)[:-missing]
            await self._stop(key, job, extra, "parallelism was lowered")
            active = [p for p in active if p not in extra]
        elif missing > 0:
            wait = self._backoff_record(key, job).left(stamp)
            if wait > 0:
                requeue = min(requeue or wait, wait)
            else:
                active = active + await self._create(key, job, missing)
        return active, requeue

    def _backoff_record(self, key: str, job: Job) -> Backoff:
        """The Job's backoff record: none yet, or one kept for an earlier Job of its name."""
        kept = self._backoffs.get(key)
        return kept[1] if kept is not None and kept[0] == (job.metadata.uid or "") else Backoff()

    async def _create(self, key: str, job: Job, count: int) -> list[Pod]:
        namespace = job.metadata.namespace or "default"
        proto = prototype(job.spec.template, namespace)
        owner = owner_reference("Job", "batch/v1", job.metadata.name, job.metadata.uid or "")
        labels = job_labels(job)
        count = min(count, BURST)  # the rest in the next passes
        pods = [
            new_pod(proto, job.spec.template, generate_name(job.metadata.name), labels, owner)
            for _ in range(count)
        ]
        for pod in pods:
            pod.metadata.finalizers = [
                *(f for f in pod.metadata.finalizers or () if f != JOB_TRACKING),
                JOB_TRACKING,
            ]
        kvs = await create_pods(self.store, pods)
        self.wrote(key, kvs)
        names = ", ".join(p.metadata.name for p in pods[:5]) + (" ..." if count > 5 else "")
        self.events.record(
            _ref(job),
            "SuccessfulCreate",
            f"Created pod: {names}" if count == 1 else f"Created {count} pods: {names}",
        )
        return pods

    async def _stop(self, key: str, job: Job, pods: list[Pod], why: str) -> None:
        """Delete active pods the Job no longer wants, freed of JOB_TRACKING first: a pod
        the controller stops itself is not a failure (Kubernetes' rule for suspend)."""
        if not pods:
            return
        held = [p for p in pods if tracked(p)]
        freed = await self._set_tracking(key, [(p, False) for p in held])
        conflicts = [r for r in freed if isinstance(r, Conflict)]
        lost = {p.metadata.uid for p, r in zip(held, freed, strict=True) if isinstance(r, Conflict)}
        kvs = await asyncio.gather(
            *(
                delete_pod(self.store, self.cluster, pod_store_key(p))
                for p in pods
                if p.metadata.uid not in lost
            )
        )
        self.wrote(key, [kv for kv in kvs if kv is not None])
        names = ", ".join(p.metadata.name for p in pods[:5]) + (" ..." if len(pods) > 5 else "")
        self.events.record(_ref(job), "SuccessfulDelete", f"Deleted pod: {names} ({why})")
        if conflicts:  # still held: deleted so, it would count as failed; the next pass does it
            raise conflicts[0]

    async def _finish(
        self,
        key: str,
        job: Job,
        status: JobStatus,
        active: list[Pod],
        kind: str,
        reason: str,
        message: str,
        stamp: datetime,
    ) -> None:
        await self._stop(key, job, active, message.lower())
        status.conditions = [
            *(c for c in status.conditions if c.type not in (kind, "Suspended")),
            WorkloadCondition(
                type=kind,
                status="True",
                reason=reason,
                message=message,
                last_probe_time=stamp,
                last_transition_time=stamp,
            ),
        ]
        if kind == "Complete":
            self.events.record(_ref(job), "Completed", "Job completed")
        else:
            self.events.record(_ref(job), reason, message, type="Warning")

    async def _expire(
        self, key: str, job: Job, done: WorkloadCondition, stamp: datetime
    ) -> tuple[bool, float | None]:
        """Delete a finished Job once its ttlSecondsAfterFinished has passed; (deleted,
        seconds until it is due)."""
        ttl = job.spec.ttl_seconds_after_finished
        if ttl is None:
            return False, None
        finished = done.last_transition_time or job.status.completion_time or stamp
        left = ttl - (stamp - finished).total_seconds()
        if left > 0:
            return False, left
        kv = self.jobs.kvs.get(key)
        if kv is None:
            return True, None
        try:
            await self.store.delete(key, expect=kv.mod_revision)
        except (Conflict, NotFound):
            return False, 0.1
        _LOGGER.info("job %s deleted %ds after it finished", key, ttl)
        return True, None


def _record_finished(
    uncounted: UncountedTerminatedPods, pods: list[Pod]
) -> tuple[list[Pod], list[Pod]]:
    """Add the tracked pods that have finished and are not recorded yet; (those that
    succeeded, those that failed)."""
    recorded = set(uncounted.succeeded) | set(uncounted.failed)
    succeeded: list[Pod] = []
    failed: list[Pod] = []
    for pod in pods:
        uid = pod.metadata.uid or ""
        if tracked(pod) and pod.status.phase in TERMINAL_PHASES and uid not in recorded:
            if pod.status.phase == "Succeeded":
                uncounted.succeeded.append(uid)
                succeeded.append(pod)
            else:
                uncounted.failed.append(uid)
                failed.append(pod)
    return succeeded, failed


def restarts_past_limit(job: Job, pods: list[Pod]) -> bool:
    """`restartPolicy: OnFailure`: have the containers of its Pending or Running pods
    restarted backoffLimit times (more than 0 times for a limit of 0)? Kubernetes'
    pastBackoffLimitOnFailure: the restarts of a pod that has finished no longer count."""
    if job.spec.template.spec.restart_policy != "OnFailure":
        return False
    count = sum(restarts(p) for p in pods if p.status.phase in ("Pending", "Running"))
    limit = job.spec.backoff_limit
    return count > 0 if limit == 0 else count >= limit


def _suspended(job: Job) -> bool:
    return any(c.type == "Suspended" and c.status == "True" for c in job.status.conditions)


def _set(
    conditions: list[WorkloadCondition], kind: str, reason: str, message: str
) -> list[WorkloadCondition]:
    if any(c.type == kind and c.status == "True" for c in conditions):
        return conditions
    stamp = now()
    return [
        *(c for c in conditions if c.type != kind),
        WorkloadCondition(
            type=kind,
            status="True",
            reason=reason,
            message=message,
            last_probe_time=stamp,
            last_transition_time=stamp,
        ),
    ]


def _ref(job: Job) -> Ref:
    return Ref("Job", job.metadata.name, job.metadata.namespace, job.metadata.uid)
