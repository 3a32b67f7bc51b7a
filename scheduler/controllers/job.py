"""The Job controller: run pods until `completions` of them succeed, or give up.

One pass for one Job::

    finished (Complete or Failed)? ──> stop what still runs; delete the Job
                                       ttlSecondsAfterFinished after it finished
    active longer than activeDeadlineSeconds ──> Failed, reason DeadlineExceeded
    more failures than backoffLimit          ──> Failed, reason BackoffLimitExceeded
    `completions` pods Succeeded             ──> Complete (the rest are stopped)
    suspended                                ──> stop what runs (resumed: startTime
                                                 is reset, the deadline counts anew)
    otherwise: keep min(parallelism, completions - succeeded) pods active,
               waiting BACKOFF_SECONDS * 2^(failures-1) (at most BACKOFF_CAP)
               after the latest failure before starting a replacement

Failures are the pods that ended Failed plus, for `restartPolicy: OnFailure`,
every restart of a container (the pod restarts in place; Kubernetes counts those
against `backoffLimit` too). Without `completions` (a work queue), the Job is
Complete once a pod has succeeded and none is active. Pods are named
`<job>-<5 random>` and labelled `job-name` and `controller-uid`, as in
Kubernetes. The backoff is seconds, not Kubernetes' ten-second base, in line
with corral's other timers.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from common.models import (
    Job,
    JobStatus,
    Pod,
    WorkloadCondition,
    now,
)
from scheduler.context import Context
from scheduler.controllers.base import Controller
from scheduler.controllers.cache import ObjectCache, OwnerIndex
from scheduler.controllers.podcontrol import (
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
)
from scheduler.events import Ref
from scheduler.kinds import JOBS, PODS
from scheduler.objects import encode
from scheduler.store import Conflict, NotFound

_LOGGER = logging.getLogger(__name__)

BACKOFF_SECONDS = 1.0
BACKOFF_CAP = 60.0


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


def failed_at(pod: Pod) -> datetime | None:
    """When a failed pod's last container ended (its agent's own timestamp)."""
    stamps = [
        cs.state.terminated.finished_at
        for cs in pod.status.container_statuses
        if cs.state.terminated is not None and cs.state.terminated.finished_at is not None
    ]
    return max(stamps) if stamps else None


class JobController(Controller):
    name = "job"

    def __init__(self, ctx: Context, jobs: ObjectCache[Job], pod_owners: OwnerIndex) -> None:
        super().__init__(ctx)
        self.jobs = jobs
        self.pod_owners = pod_owners
        self._failure_seen: dict[str, datetime] = {}  # pod uid -> first seen Failed

    def keys(self) -> list[str]:
        return list(self.jobs.objects)

    def enqueue(self, namespace: str, name: str) -> None:
        self.queue.add(JOBS.key(namespace, name))

    def forget_pod(self, uid: str | None) -> None:
        self._failure_seen.pop(uid or "", None)

    async def reconcile(self, key: str) -> float | None:
        job = self.jobs.get(key)
        kv = self.jobs.kvs.get(key)
        if job is None or kv is None or job.metadata.deletion_timestamp is not None:
            return None
        # Owners are namespace-local: a pod elsewhere naming this uid is not one of its own.
        prefix = PODS.namespace_prefix(job.metadata.namespace or "default")
        pods = [
            p
            for k in self.pod_owners.of(job.metadata.uid)
            if k.startswith(prefix) and (p := self.cluster.pods.get(k))
        ]
        active = [p for p in pods if is_active(p)]
        succeeded = [p for p in pods if p.status.phase == "Succeeded"]
        failed = [p for p in pods if p.status.phase == "Failed"]
        stamp = now()
        status = job.status.model_copy(deep=True)
        requeue: float | None = None
        done = finished_condition(job)
        if done is not None:
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
            active, requeue = await self._run(key, job, status, active, succeeded, failed, stamp)
        status.active = len(active)
        status.ready = sum(1 for p in active if is_ready(p))
        if done is None:  # a finished Job's counts stay, even as its pods are deleted
            status.succeeded = len(succeeded)
            status.failed = len(failed)
        if status != job.status:
            updated = job.model_copy(update={"status": status})
            written = await self.store.put(
                key, encode(updated), obj=updated, expect=kv.mod_revision
            )
            self.wrote(key, [written])
            if finished_condition(updated) is not None and done is None:
                requeue = 0.0  # look again at once: the TTL starts now
        return requeue

    async def _run(
        self,
        key: str,
        job: Job,
        status: JobStatus,
        active: list[Pod],
        succeeded: list[Pod],
        failed: list[Pod],
        stamp: datetime,
    ) -> tuple[list[Pod], float | None]:
        """Decide the outcome, or keep the right number of pods active; (active, requeue)."""
        spec = job.spec
        completions = spec.completions
        parallelism = spec.parallelism if spec.parallelism is not None else 1
        if completions is None and spec.parallelism is None:
            completions = 1
        failures = len(failed)
        if spec.template.spec.restart_policy == "OnFailure":
            failures += sum(restarts(p) for p in active + succeeded + failed)
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
        if failures > spec.backoff_limit:
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
            complete = len(succeeded) >= completions
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
            want = 0 if succeeded else parallelism  # a work queue: no new pods after a success
        else:
            want = min(parallelism, completions - len(succeeded))
        requeue: float | None = None
        if deadline is not None:
            requeue = max(deadline - elapsed, 0.1)
        missing = want - len(active)
        if missing < 0:
            extra = deletion_order(active)[:-missing]
            await self._stop(key, job, extra, "parallelism was lowered")
            active = [p for p in active if p not in extra]
        elif missing > 0:
            wait = self._backoff_left(failed, stamp)
            if wait > 0:
                requeue = min(requeue or wait, wait)
            else:
                active = active + await self._create(key, job, missing)
        return active, requeue

    def _backoff_left(self, failed: list[Pod], stamp: datetime) -> float:
        if not failed:
            return 0.0
        latest = None
        for pod in failed:
            when = failed_at(pod) or self._failure_seen.setdefault(pod.metadata.uid or "", stamp)
            latest = when if latest is None or when > latest else latest
        assert latest is not None
        delay = min(BACKOFF_SECONDS * 2 ** (len(failed) - 1), BACKOFF_CAP)
        return delay - (stamp - latest).total_seconds()

    async def _create(self, key: str, job: Job, count: int) -> list[Pod]:
        namespace = job.metadata.namespace or "default"
        proto = prototype(job.spec.template, namespace)
        owner = owner_reference("Job", "batch/v1", job.metadata.name, job.metadata.uid or "")
        labels = job_labels(job)
        pods = [
            new_pod(proto, job.spec.template, generate_name(job.metadata.name), labels, owner)
            for _ in range(count)
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
        if not pods:
            return
        kvs = await asyncio.gather(
            *(delete_pod(self.store, self.cluster, pod_store_key(p)) for p in pods)
        )
        self.wrote(key, [kv for kv in kvs if kv is not None])
        names = ", ".join(p.metadata.name for p in pods[:5]) + (" ..." if len(pods) > 5 else "")
        self.events.record(_ref(job), "SuccessfulDelete", f"Deleted pod: {names} ({why})")

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
