"""The workload controllers in one process, on a real store: Deployments (rolling update,
Recreate, scaling, history, progress deadline, minReadySeconds), Jobs, garbage collection
and namespaces.

No API and no agents: a fake kubelet (a pod listener) plays the nodes, turning each
new pod Running and Ready (or Succeeded, or Failed) after a short delay, and every
pod change is checked against the rollout's invariants as it happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from common.models import (
    FOREGROUND_DELETION,
    ORPHAN,
    ContainerState,
    ContainerStateTerminated,
    ContainerStatus,
    ControllerRevision,
    Deployment,
    Job,
    Namespace,
    OwnerReference,
    Pod,
    PodCondition,
    PodStatus,
    now,
)
from scheduler.cluster import ClusterState
from scheduler.config import SchedulerConfig
from scheduler.context import Context
from scheduler.controllers import gc as gc_controller
from scheduler.controllers import job as job_controller
from scheduler.controllers.deployment import (
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    REVISION_ANNOTATION,
    Group,
    proportional,
    surge_and_unavailable,
)
from scheduler.controllers.manager import Workloads
from scheduler.controllers.namespace import ensure_namespaces, new_namespace
from scheduler.controllers.podcontrol import HASH_LABEL, is_ready, pod_store_key
from scheduler.events import EventRecorder
from scheduler.kinds import DEPLOYMENTS, JOBS, NAMESPACES, PODS, REVISIONS
from scheduler.metrics import SchedulerMetrics
from scheduler.objects import decode, encode, mutable_copy
from scheduler.podfinal import remove_stopped
from scheduler.recent import RecentErrors
from scheduler.store import KV, Conflict, NotFound, Op, SqliteStore
from tests.conftest import wait_until

Outcome = Callable[[Pod], str]  # "ready" | "succeed" | "fail" | "stay"


def always_ready(pod: Pod) -> str:
    return "ready"


M = TypeVar("M", Pod, Deployment)


@dataclass
class Plane:
    """The control plane's workload half, with a fake kubelet."""

    store: SqliteStore
    cluster: ClusterState
    workloads: Workloads
    delay: float = 0.05
    outcome: Outcome = always_ready
    checks: list[Callable[[], None]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def pods(self, namespace: str = "default") -> list[Pod]:
        prefix = PODS.namespace_prefix(namespace)
        return [p for k, p in self.cluster.pods.items() if k.startswith(prefix)]

    def deployment(self, name: str, namespace: str = "default") -> Deployment | None:
        return self.workloads.deployments.get(DEPLOYMENTS.key(namespace, name))

    def job(self, name: str, namespace: str = "default") -> Job | None:
        return self.workloads.jobs.get(JOBS.key(namespace, name))

    async def put(self, obj: Any, kind: Any = DEPLOYMENTS) -> None:
        """Create or replace a Deployment or Job as the API would (generation counted)."""
        for _attempt in range(50):
            try:
                return await self._put(obj.model_copy(deep=True), kind)
            except Conflict:  # a status write queued meanwhile: as a client, try again
                await asyncio.sleep(0.01)
        raise AssertionError("kept conflicting")

    async def _put(self, obj: Any, kind: Any) -> None:
        ns = obj.metadata.namespace or "default"
        obj.metadata.namespace = ns
        key = kind.key(ns, obj.metadata.name)
        kv = await self.store.get(key)
        if kv is None:
            obj.metadata.uid = obj.metadata.uid or f"uid-{obj.metadata.name}"
            obj.metadata.generation = 1
            obj.metadata.creation_timestamp = now()
            await self.store.put(key, encode(obj), obj=obj, expect=0)
            return
        current = decode(kv, kind.model)
        obj.metadata.uid = current.metadata.uid
        obj.metadata.annotations = dict(current.metadata.annotations)
        obj.metadata.generation = (current.metadata.generation or 1) + 1
        obj.metadata.creation_timestamp = current.metadata.creation_timestamp
        obj.status = current.status
        await self.store.put(key, encode(obj), obj=obj, expect=kv.mod_revision)

    def on_pod(self, key: str, old: Pod | None, new: Pod | None) -> None:
        for check in self.checks:
            check()
        if new is None or new.metadata.deletion_timestamp is not None:
            return
        uid = new.metadata.uid or ""
        if new.status.phase == "Pending" and uid not in self.seen:
            self.seen.add(uid)
            loop = asyncio.get_running_loop()
            loop.call_later(self.delay, lambda: asyncio.ensure_future(self._kubelet(key, uid)))

    async def _kubelet(self, key: str, uid: str) -> None:
        kv = await self.store.get(key)
        if kv is None:
            return
        pod = decode(kv, Pod)
        if pod.metadata.uid != uid or pod.metadata.deletion_timestamp is not None:
            return
        outcome = self.outcome(pod)
        if outcome == "stay":
            return
        stamp = now()
        ready = outcome == "ready"
        phase = {"ready": "Running", "succeed": "Succeeded", "fail": "Failed"}[outcome]
        state = ContainerState()
        if not ready:
            code = 0 if outcome == "succeed" else 1
            state = ContainerState(
                terminated=ContainerStateTerminated(exit_code=code, finished_at=stamp)
            )
        status = PodStatus(
            phase=phase,
            conditions=[
                PodCondition(
                    type="Ready", status="True" if ready else "False", last_transition_time=stamp
                )
            ],
            container_statuses=[
                ContainerStatus(name=c.name, ready=ready, state=state) for c in pod.spec.containers
            ],
        )
        updated = pod.model_copy(update={"status": status})
        with contextlib.suppress(Conflict, NotFound):
            await self.store.put(key, encode(updated), obj=updated, expect=kv.mod_revision)


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[Plane]:
    """The store, cluster view, event recorder and workload controllers, running."""
    async with running_plane(tmp_path) as p:
        yield p


@contextlib.asynccontextmanager
async def running_plane(state: Path) -> AsyncIterator[Plane]:
    """A plane on the state in `state`: a second one on the same state after the first
    has stopped is a restart of the scheduler."""
    store = await SqliteStore.open(state / "state.db")
    cluster = ClusterState(store)
    await cluster.load()
    events = EventRecorder(store)
    config = SchedulerConfig(state_dir=str(state))
    ctx = Context(config, store, cluster, SchedulerMetrics(), RecentErrors(), events)
    workloads = Workloads(ctx)
    await workloads.load()
    p = Plane(store, cluster, workloads)
    cluster.pod_listeners.append(p.on_pod)
    tasks = [asyncio.create_task(cluster.run()), asyncio.create_task(events.run())]
    tasks += [asyncio.create_task(coro) for _, coro in workloads.tasks()]
    try:
        yield p
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()


def deployment(
    name: str = "web",
    replicas: int = 3,
    image: str = "nginx:1",
    strategy: dict[str, Any] | None = None,
    **spec: Any,
) -> Deployment:
    return Deployment.model_validate(
        {
            "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "strategy": strategy or {},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "main", "image": image}]},
                },
                **spec,
            },
        }
    )


def job(name: str = "batch", policy: str = "Never", **spec: Any) -> Job:
    return Job.model_validate(
        {
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "template": {
                    "metadata": {"labels": {"flaky": name}},
                    "spec": {
                        "restartPolicy": policy,
                        "containers": [{"name": "main", "image": "busybox"}],
                    },
                },
                **spec,
            },
        }
    )


def active(pods: list[Pod]) -> list[Pod]:
    return [p for p in pods if p.metadata.deletion_timestamp is None]


async def test_deployment_creates_owned_pods_and_reports_status(plane: Plane) -> None:
    """Replicas pods with generated names, the hash label and an owner; status and revision 1."""
    await plane.put(deployment(replicas=3))
    done = await wait_until(
        lambda: (d := plane.deployment("web")) and d.status.available_replicas == 3 and d, within=10
    )
    pods = plane.pods()
    assert len(pods) == 3
    for pod in pods:
        ref = pod.metadata.owner_references[0]  # type: ignore[index]
        assert (ref.kind, ref.name, ref.uid, ref.controller) == (
            "Deployment",
            "web",
            "uid-web",
            True,
        )
        hash_ = pod.metadata.labels[HASH_LABEL]
        assert pod.metadata.name.startswith(f"web-{hash_}-") and len(pod.metadata.name) <= 63
        assert pod.metadata.labels["app"] == "web"
    assert done.status.updated_replicas == 3 and done.status.observed_generation == 1
    assert {c.type: c.reason for c in done.status.conditions} == {
        "Available": "MinimumReplicasAvailable",
        "Progressing": "NewReplicaSetAvailable",
    }
    assert done.metadata.annotations[REVISION_ANNOTATION] == "1"
    revisions = list(plane.workloads.revisions.objects.values())
    assert [(r.revision, r.metadata.labels[HASH_LABEL]) for r in revisions] == [(1, hash_)]


async def test_rolling_update_keeps_availability_and_surge(plane: Plane) -> None:
    """Every pod change during a rollout keeps >= replicas - maxUnavailable ready pods and
    <= replicas + maxSurge pods; the rollout ends with only new pods."""
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}}
    await plane.put(deployment(replicas=10, strategy=strategy))
    await wait_until(
        lambda: (d := plane.deployment("web")) and d.status.available_replicas == 10, within=10
    )
    low = high = 10
    violations: list[str] = []

    def check() -> None:
        nonlocal low, high
        live = active(plane.pods())
        ready = sum(1 for p in live if is_ready(p))
        low, high = min(low, ready), max(high, len(live))
        if ready < 8 or len(live) > 13:
            violations.append(f"{ready} ready of {len(live)}")

    plane.checks.append(check)
    await plane.put(deployment(replicas=10, image="nginx:2", strategy=strategy))
    final = await wait_until(
        lambda: (
            (d := plane.deployment("web"))
            and d.metadata.annotations.get(REVISION_ANNOTATION) == "2"
            and d.status.updated_replicas == d.status.available_replicas == d.status.replicas == 10
            and len(plane.pods()) == 10
            and d
        ),
        within=10,
    )
    assert not violations, violations
    assert low == 8 and high == 13  # the budget was used, not merely respected
    assert {p.spec.containers[0].image for p in plane.pods()} == {"nginx:2"}
    assert final.status.observed_generation == 2


async def test_recreate_removes_old_pods_before_new_ones(plane: Plane) -> None:
    """Recreate: no new pod exists while an old one does."""
    await plane.put(deployment(replicas=4, strategy={"type": "Recreate"}))
    await wait_until(
        lambda: len(plane.pods()) == 4 and all(is_ready(p) for p in plane.pods()), within=10
    )
    old_hash = plane.pods()[0].metadata.labels[HASH_LABEL]
    mixed: list[int] = []

    def check() -> None:
        hashes = {p.metadata.labels[HASH_LABEL] for p in plane.pods()}
        if len(hashes) > 1:
            mixed.append(len(hashes))

    plane.checks.append(check)
    await plane.put(deployment(replicas=4, image="nginx:2", strategy={"type": "Recreate"}))
    await wait_until(
        lambda: (
            len(plane.pods()) == 4
            and all(p.metadata.labels[HASH_LABEL] != old_hash and is_ready(p) for p in plane.pods())
        ),
        within=10,
    )
    assert not mixed


async def test_lost_pods_are_replaced_and_scaling_prefers_unready(plane: Plane) -> None:
    """A deleted pod is replaced; scaling down removes pods that are not ready first."""
    await plane.put(deployment(replicas=3))
    await wait_until(
        lambda: len(plane.pods()) == 3 and all(is_ready(p) for p in plane.pods()), within=10
    )
    victim = plane.pods()[0]
    await plane.store.delete(PODS.key("default", victim.metadata.name))
    await wait_until(
        lambda: (
            len(plane.pods()) == 3
            and victim.metadata.name not in {p.metadata.name for p in plane.pods()}
            and all(is_ready(p) for p in plane.pods())
        ),
        within=10,
    )
    plane.outcome = lambda pod: "stay"  # new pods never become ready
    await plane.put(deployment(replicas=5))
    await wait_until(lambda: len(plane.pods()) == 5, within=10)
    await plane.put(deployment(replicas=3))
    await wait_until(lambda: len(active(plane.pods())) == 3, within=10)
    assert all(is_ready(p) for p in active(plane.pods()))


async def test_progress_deadline_exceeded(plane: Plane) -> None:
    """A rollout whose pods never become ready reports Progressing=False."""
    await plane.put(deployment(replicas=2, progressDeadlineSeconds=1))
    await wait_until(
        lambda: (d := plane.deployment("web")) and d.status.available_replicas == 2, within=10
    )
    plane.outcome = lambda pod: "stay"
    await plane.put(deployment(replicas=2, image="broken", progressDeadlineSeconds=1))

    def stuck() -> Any:
        d = plane.deployment("web")
        cond = (
            next((c for c in d.status.conditions if c.type == "Progressing"), None) if d else None
        )
        return cond is not None and cond.status == "False" and cond.reason

    assert await wait_until(stuck, within=6) == "ProgressDeadlineExceeded"
    # The old pods keep serving: maxUnavailable of 2 replicas (25%) rounds down to 0.
    assert sum(1 for p in active(plane.pods()) if is_ready(p)) == 2


async def test_min_ready_seconds_delays_availability(plane: Plane) -> None:
    """A pod counts as available only after minReadySeconds of Ready."""
    await plane.put(deployment(replicas=1, minReadySeconds=2))
    await wait_until(lambda: plane.pods() and is_ready(plane.pods()[0]), within=10)
    d = plane.deployment("web")
    assert d is not None and d.status.available_replicas == 0
    await wait_until(
        lambda: (d := plane.deployment("web")) and d.status.available_replicas == 1, within=5
    )


async def test_history_limit_and_reuse_of_a_revision(plane: Plane) -> None:
    """Old revisions beyond revisionHistoryLimit go; going back to a template renumbers it."""
    for image in ("a", "b", "c"):
        await plane.put(deployment(replicas=1, image=image, revisionHistoryLimit=1))
        await wait_until(
            lambda i=image: (
                all(p.spec.containers[0].image == i for p in plane.pods())  # type: ignore[misc]
                and len(plane.pods()) == 1
            ),
            within=10,
        )
    await wait_until(lambda: len(plane.workloads.revisions.objects) == 2, within=10)
    numbers = sorted(r.revision for r in plane.workloads.revisions.objects.values())
    assert numbers == [2, 3]
    await plane.put(deployment(replicas=1, image="b", revisionHistoryLimit=1))  # an undo
    await wait_until(
        lambda: (
            (d := plane.deployment("web")) and d.metadata.annotations[REVISION_ANNOTATION] == "4"
        ),
        within=10,
    )
    by_image = {
        r.data["spec"]["template"]["spec"]["containers"][0]["image"]: r.revision
        for r in plane.workloads.revisions.objects.values()
    }
    assert by_image == {"b": 4, "c": 3}


async def test_deleting_an_owner_collects_its_pods_and_revisions(plane: Plane) -> None:
    """Background deletion: the GC removes what the Deployment owned; others are untouched."""
    await plane.put(deployment("web", replicas=2))
    await plane.put(deployment("api", replicas=1))
    await wait_until(lambda: len(plane.pods()) == 3, within=10)
    await plane.store.delete(DEPLOYMENTS.key("default", "web"))
    await wait_until(lambda: len(plane.pods()) == 1, within=10)
    assert plane.pods()[0].metadata.labels["app"] == "api"
    await wait_until(lambda: len(plane.workloads.revisions.objects) == 1, within=10)


async def test_job_retries_failures_then_completes(
    plane: Plane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two failed pods, then success: Complete, with the failures counted and backoff honoured."""
    monkeypatch.setattr(job_controller, "BACKOFF_SECONDS", 0.1)
    runs: list[str] = []

    def outcome(pod: Pod) -> str:
        runs.append(pod.metadata.name)
        return "fail" if len(runs) <= 2 else "succeed"

    plane.outcome = outcome
    await plane.put(job(backoffLimit=3), JOBS)
    done = await wait_until(
        lambda: (
            (j := plane.job("batch"))
            and any(c.type == "Complete" for c in j.status.conditions)
            and j
        ),
        within=10,
    )
    assert (done.status.succeeded, done.status.failed, done.status.active) == (1, 2, 0)
    assert done.status.completion_time is not None
    pod = plane.pods()[0]
    assert pod.metadata.labels["job-name"] == "batch"
    assert pod.metadata.labels["controller-uid"] == "uid-batch"


async def test_job_completions_parallelism_and_backoff_limit(
    plane: Plane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """completions 4 with parallelism 2 runs at most 2 at once; too many failures fail it."""
    monkeypatch.setattr(job_controller, "BACKOFF_SECONDS", 0.05)
    most = 0

    def check() -> None:
        nonlocal most
        running = [p for p in plane.pods() if p.status.phase in ("Pending", "Running")]
        most = max(most, len([p for p in running if p.metadata.labels.get("job-name") == "four"]))

    plane.checks.append(check)
    plane.outcome = lambda pod: "succeed" if pod.metadata.labels["flaky"] == "four" else "fail"
    await plane.put(job("four", completions=4, parallelism=2), JOBS)
    await plane.put(job("doomed", backoffLimit=1), JOBS)
    four = await wait_until(
        lambda: (
            (j := plane.job("four"))
            and any(c.type == "Complete" for c in j.status.conditions)
            and j
        ),
        within=10,
    )
    assert four.status.succeeded == 4 and most == 2
    doomed = await wait_until(
        lambda: (
            (j := plane.job("doomed"))
            and any(c.type == "Failed" for c in j.status.conditions)
            and j
        ),
        within=10,
    )
    failed = next(c for c in doomed.status.conditions if c.type == "Failed")
    assert failed.reason == "BackoffLimitExceeded" and doomed.status.failed == 2


async def test_job_deadline_and_ttl(plane: Plane) -> None:
    """activeDeadlineSeconds fails a Job that runs too long (its pods stopped); a finished
    Job with ttlSecondsAfterFinished is deleted with its pods."""
    plane.outcome = lambda pod: "stay" if pod.metadata.labels["flaky"] == "slow" else "succeed"
    await plane.put(job("slow", activeDeadlineSeconds=1), JOBS)
    await plane.put(job("brief", ttlSecondsAfterFinished=1), JOBS)
    slow = await wait_until(
        lambda: (
            (j := plane.job("slow")) and any(c.type == "Failed" for c in j.status.conditions) and j
        ),
        within=6,
    )
    assert (
        next(c for c in slow.status.conditions if c.type == "Failed").reason == "DeadlineExceeded"
    )
    await wait_until(lambda: plane.job("brief") is None, within=6)
    await wait_until(
        lambda: not [p for p in plane.pods() if p.metadata.labels.get("job-name") == "brief"],
        within=10,
    )
    await wait_until(
        lambda: not active([p for p in plane.pods() if p.metadata.labels["job-name"] == "slow"]),
        within=10,
    )


async def test_deleting_a_namespace_empties_it(plane: Plane) -> None:
    """A Terminating namespace loses its Deployments, Jobs and pods, then itself."""
    ns = new_namespace("team")
    await plane.store.put(NAMESPACES.key(None, "team"), encode(ns), obj=ns, expect=0)
    d = deployment(replicas=2)
    d.metadata.namespace = "team"
    await plane.put(d)
    await wait_until(lambda: len(plane.pods("team")) == 2, within=10)
    kv = await plane.store.get(NAMESPACES.key(None, "team"))
    assert kv is not None
    marked = decode(kv, Namespace).model_copy(deep=True)
    marked.status.phase = "Terminating"
    await plane.store.put(kv.key, encode(marked), obj=marked, expect=kv.mod_revision)
    await wait_until(
        lambda: plane.workloads.namespaces.get(NAMESPACES.key(None, "team")) is None, within=6
    )
    assert not plane.pods("team") and plane.deployment("web", "team") is None
    assert not [
        k for k in plane.workloads.revisions.objects if k.startswith(REVISIONS.prefix + "team/")
    ]


async def test_namespaces_exist_for_what_is_stored(plane: Plane) -> None:
    """At start, `default` and every namespace that holds objects get a Namespace."""
    pod = Pod.model_validate(
        {
            "metadata": {"name": "old", "namespace": "legacy"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }
    )
    await plane.store.put(PODS.key("legacy", "old"), encode(pod), obj=pod)
    assert await ensure_namespaces(plane.store) == ["legacy"]
    assert await plane.store.get(NAMESPACES.key(None, "default")) is not None


def test_surge_and_unavailable_resolve_like_kubernetes() -> None:
    """25% of 10 is 3 (surge, rounded up) and 2 (unavailable, rounded down); never both 0."""
    assert surge_and_unavailable(deployment(replicas=10)) == (3, 2)
    assert surge_and_unavailable(deployment(replicas=1)) == (1, 0)
    zero = {"rollingUpdate": {"maxSurge": "0%", "maxUnavailable": "10%"}}
    assert surge_and_unavailable(deployment(replicas=3, strategy=zero)) == (0, 1)
    assert surge_and_unavailable(deployment(replicas=3, strategy={"type": "Recreate"})) == (0, 3)


async def test_resumed_job_restarts_its_deadline(plane: Plane) -> None:
    """A Job suspended for longer than activeDeadlineSeconds runs again when resumed: its
    startTime is reset, so the deadline counts from the resume, as in Kubernetes."""
    plane.outcome = lambda pod: "stay"
    await plane.put(job("pausable", activeDeadlineSeconds=60), JOBS)
    await wait_until(lambda: (j := plane.job("pausable")) and j.status.active == 1, within=10)
    await plane.put(job("pausable", activeDeadlineSeconds=60, suspend=True), JOBS)
    await wait_until(
        lambda: (
            (j := plane.job("pausable"))
            and j.status.active == 0
            and any(c.type == "Suspended" for c in j.status.conditions)
        ),
        within=10,
    )
    # An hour goes by while it is suspended: its startTime is an hour old.
    key = JOBS.key("default", "pausable")
    kv = await plane.store.get(key)
    assert kv is not None
    aged = decode(kv, Job).model_copy(deep=True)
    assert aged.status.start_time is not None
    aged.status.start_time -= timedelta(hours=1)
    await plane.store.put(key, encode(aged), obj=aged, expect=kv.mod_revision)
    resumed_at = now()
    await plane.put(job("pausable", activeDeadlineSeconds=60), JOBS)
    resumed = await wait_until(
        lambda: (j := plane.job("pausable")) and (j.status.active == 1 or finished(j)) and j,
        within=10,
    )
    assert not finished(resumed), resumed.status.conditions
    assert resumed.status.start_time is not None and resumed.status.start_time >= resumed_at


def finished(j: Job) -> bool:
    return any(c.type in ("Complete", "Failed") and c.status == "True" for c in j.status.conditions)


async def test_deleting_a_namespace_deletes_objects_written_meanwhile(plane: Plane) -> None:
    """A Deployment that changes while its namespace is being deleted (a person or a
    pipeline editing it; its controller writing status) is still deleted before the
    namespace: a delete that conflicted is tried again, not forgotten."""
    ns = new_namespace("busy")
    await plane.store.put(NAMESPACES.key(None, "busy"), encode(ns), obj=ns, expect=0)
    names = [f"web{i}" for i in range(10)]
    for name in names:
        d = deployment(name, replicas=0)
        d.metadata.namespace = "busy"
        await plane.put(d)
    await wait_until(lambda: all(plane.deployment(n, "busy") for n in names), within=10)

    async def edit(name: str) -> None:
        """Relabel the Deployment over and over, as a client would, until it is gone."""
        key = DEPLOYMENTS.key("busy", name)
        for i in range(100_000):
            kv = await plane.store.get(key)
            if kv is None:
                return
            d = decode(kv, Deployment).model_copy(deep=True)
            d.metadata.labels["edit"] = str(i)
            with contextlib.suppress(Conflict, NotFound):
                await plane.store.put(key, encode(d), obj=d, expect=kv.mod_revision)
            await asyncio.sleep(0.005)  # a client's pace, not a flood the watch cannot follow

    editors = [asyncio.create_task(edit(name)) for name in names]
    try:
        kv = await plane.store.get(NAMESPACES.key(None, "busy"))
        assert kv is not None
        marked = decode(kv, Namespace).model_copy(deep=True)
        marked.status.phase = "Terminating"
        await plane.store.put(kv.key, encode(marked), obj=marked, expect=kv.mod_revision)
        await wait_until(
            lambda: plane.workloads.namespaces.get(NAMESPACES.key(None, "busy")) is None,
            within=10,
        )
        left, _ = await plane.store.list(DEPLOYMENTS.namespace_prefix("busy"))
        assert not left, [kv.key for kv in left]
    finally:
        for task in editors:
            task.cancel()
        await asyncio.gather(*editors, return_exceptions=True)


async def test_recreate_is_available_only_with_every_replica(plane: Plane) -> None:
    """Recreate tolerates no unavailable pod in its Available condition (Kubernetes'
    MaxUnavailable is 0 for it): pods that never become ready leave it False."""
    plane.outcome = lambda pod: "stay"
    await plane.put(deployment(replicas=2, strategy={"type": "Recreate"}))
    d = await wait_until(
        lambda: (
            (d := plane.deployment("web"))
            and d.status.replicas == 2
            and any(c.type == "Available" for c in d.status.conditions)
            and d
        ),
        within=10,
    )
    available = next(c for c in d.status.conditions if c.type == "Available")
    assert (available.status, available.reason) == ("False", "MinimumReplicasUnavailable")
    assert d.status.available_replicas == 0 and d.status.unavailable_replicas == 2


async def test_deployment_adopts_only_pods_a_deployment_made(plane: Plane) -> None:
    """An unowned pod with the selector's labels and a `pod-template-hash` (one a
    Deployment made, orphaned) is adopted and counted; a bare pod with the same labels is
    not, nor one in another namespace."""

    def bare(name: str, namespace: str, labels: dict[str, str]) -> Pod:
        pod = Pod.model_validate(
            {
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "spec": {"containers": [{"name": "main", "image": "nginx:1"}]},
            }
        )
        pod.metadata.uid = f"uid-{name}"
        return pod

    ns = new_namespace("other")
    await plane.store.put(NAMESPACES.key(None, "other"), encode(ns), obj=ns, expect=0)
    made = {"app": "web", HASH_LABEL: "somehash"}
    for pod in (
        bare("orphan", "default", made),
        bare("handmade", "default", {"app": "web"}),
        bare("elsewhere", "other", made),
    ):
        key = PODS.key(pod.metadata.namespace, pod.metadata.name)
        await plane.store.put(key, encode(pod), obj=pod, expect=0)
    await plane.put(deployment(replicas=2))
    d = await wait_until(
        lambda: (d := plane.deployment("web")) and d.status.available_replicas == 2 and d,
        within=10,
    )
    owned = {
        p.metadata.name: [r.uid for r in p.metadata.owner_references or ()]
        for p in plane.pods("default") + plane.pods("other")
        if p.metadata.deletion_timestamp is None
    }
    assert owned.pop("handmade") == [] and owned.pop("elsewhere") == []
    assert "orphan" not in owned  # adopted as an old pod, then replaced by the rollout
    assert list(owned.values()) == [[d.metadata.uid], [d.metadata.uid]]


async def test_an_owner_reference_from_another_namespace_is_ignored(plane: Plane) -> None:
    """A pod copied into another namespace with its ownerReferences (a manifest exported
    and applied elsewhere) is not one of the Deployment's pods: owners are namespace-local
    in Kubernetes. The Deployment neither counts it nor deletes it."""
    await plane.put(deployment(replicas=2))
    await wait_until(
        lambda: (d := plane.deployment("web")) and d.status.available_replicas == 2, within=10
    )
    ns = new_namespace("other")
    await plane.store.put(NAMESPACES.key(None, "other"), encode(ns), obj=ns, expect=0)
    copy = plane.pods()[0].model_copy(deep=True)
    copy.metadata.namespace = "other"
    copy.metadata.uid = "uid-copy"
    copy.status = PodStatus()
    await plane.store.put(PODS.key("other", copy.metadata.name), encode(copy), obj=copy)
    await wait_until(lambda: plane.pods("other") and is_ready(plane.pods("other")[0]), within=10)
    await plane.put(deployment(replicas=2, minReadySeconds=1))  # a pass after the copy ran
    d = await wait_until(
        lambda: (
            (d := plane.deployment("web"))
            and d.status.observed_generation == 2
            and d.status.available_replicas == 2
            and d
        ),
        within=10,
    )
    assert d.status.replicas == 2
    assert len(active(plane.pods())) == 2 and len(active(plane.pods("other"))) == 1


# -- Orphan deletes: what the collector frees, and what it does when that is contested ------


async def edit(plane: Plane, key: str, model: type[M], change: Callable[[M], None]) -> None:
    """Change the stored object at `key` as a client would: read it, `change` a copy, write
    it guarded by its revision, and look again after a conflict (a status write queued
    meanwhile)."""
    for _attempt in range(50):
        kv = await plane.store.get(key)
        assert kv is not None, key
        obj = mutable_copy(decode(kv, model))
        change(obj)
        try:
            await plane.store.put(key, encode(obj), obj=obj, expect=kv.mod_revision)
            return
        except Conflict:
            await plane.store.settled(key)
    raise AssertionError("kept conflicting")


async def mark_for_deletion(plane: Plane, name: str, finalizer: str) -> None:
    """Mark the Deployment as the API's DELETE with propagationPolicy Orphan (`orphan`) or
    Foreground (`foregroundDeletion`) marks it: a deletionTimestamp, and that finalizer."""

    def mark(d: Deployment) -> None:
        d.metadata.deletion_timestamp = d.metadata.deletion_timestamp or now()
        d.metadata.finalizers = [finalizer]

    await edit(plane, DEPLOYMENTS.key("default", name), Deployment, mark)


def removed_while_named(plane: Plane) -> list[str]:
    """The dependents (pods, revisions) that still named a Deployment when it left the
    store: read from the one watch, so the indexes are as of the removal's revision."""
    named: list[str] = []

    def on_deployment(key: str, old: Deployment | None, new: Deployment | None) -> None:
        if old is not None and new is None:
            uid = old.metadata.uid
            named.extend(plane.workloads.pod_owners.of(uid))
            named.extend(plane.workloads.revision_owners.of(uid))

    plane.workloads.deployments.handlers.append(on_deployment)
    return named


def blocking_pod(name: str, owner_uid: str) -> Pod:
    """A pod that names the Deployment web as an owner whose deletion it blocks (not as
    its controller), held by a finalizer of its own once deleted."""
    pod = Pod.model_validate(
        {
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]},
        }
    )
    pod.metadata.finalizers = ["example.com/hold"]
    pod.metadata.owner_references = [
        OwnerReference(
            api_version="apps/v1",
            kind="Deployment",
            name="web",
            uid=owner_uid,
            block_owner_deletion=True,
        )
    ]
    return pod


def revisions_of(plane: Plane, uid: str) -> list[ControllerRevision]:
    cache = plane.workloads.revisions
    return [r for k in plane.workloads.revision_owners.of(uid) if (r := cache.get(k))]


def owners(obj: Pod | ControllerRevision) -> list[str]:
    return [r.uid for r in obj.metadata.owner_references or ()]


async def available(plane: Plane, name: str, replicas: int, generation: int = 1) -> Deployment:
    found: Deployment = await wait_until(
        lambda: (
            (d := plane.deployment(name))
            and d.status.observed_generation == generation
            and d.status.available_replicas == d.status.replicas == replicas
            and d
        ),
        within=10,
    )
    return found


async def test_an_orphan_delete_frees_the_revisions_which_a_matching_deployment_adopts(
    plane: Plane,
) -> None:
    """An Orphan delete frees the Deployment's revisions with its pods. A Deployment
    adopts an orphaned revision whose pods' labels (its template's, and its hash: a
    ReplicaSet's labels) its selector matches, as Kubernetes adopts orphaned ReplicaSets,
    and only such: so the same one created again, even with a narrower selector than the
    revision's own labels (the old selector's) match, takes its history back instead of
    waiting for the name of its revision to come free. Another leaves them be."""
    old = deployment(replicas=1)
    old.spec.template.metadata.labels["tier"] = "front"
    await plane.put(old)
    await plane.put(deployment("api", replicas=1))
    await available(plane, "web", 1)
    await available(plane, "api", 1)
    [rev] = revisions_of(plane, "uid-web")
    [pod] = [p for p in plane.pods() if p.metadata.labels["app"] == "web"]
    named = removed_while_named(plane)
    await mark_for_deletion(plane, "web", ORPHAN)
    await wait_until(lambda: plane.deployment("web") is None, within=10)
    assert named == []  # freed, every one, before it went
    revisions = plane.workloads.revisions.objects
    assert [owners(r) for r in revisions.values() if r.metadata.name == rev.metadata.name] == [[]]
    # A pass of the other Deployment since: its selector does not match them.
    await plane.put(deployment("api", replicas=2))
    await available(plane, "api", 2, generation=2)
    assert owners(revisions[REVISIONS.key("default", rev.metadata.name)]) == []
    assert owners(plane.cluster.pods[PODS.key("default", pod.metadata.name)]) == []

    again = deployment(replicas=1)
    again.metadata.uid = "uid-web-again"
    again.spec.selector.match_labels["tier"] = "front"
    again.spec.template.metadata.labels["tier"] = "front"
    assert not again.spec.selector.matches(rev.metadata.labels)  # the revision's own: no
    await plane.put(again)
    d = await available(plane, "web", 1)
    assert d.metadata.annotations[REVISION_ANNOTATION] == "1"
    [adopted] = revisions_of(plane, "uid-web-again")
    assert adopted.metadata.uid == rev.metadata.uid and adopted.revision == 1
    [mine] = [p for p in plane.pods() if p.metadata.labels["app"] == "web"]
    assert mine.metadata.name == pod.metadata.name and owners(mine) == ["uid-web-again"]
    assert [owners(r) for r in revisions_of(plane, "uid-api")] == [["uid-api"]]


async def test_an_orphaned_revision_is_adopted_under_its_deployments_name_only(
    plane: Plane,
) -> None:
    """A Deployment of another name whose selector matches an orphaned revision takes
    the orphaned pod (as Kubernetes' would), not the revision: it records its own. The
    Deployment of the revision's name, created again, adopts it. Adopted across names,
    the revision held the name the re-created one records its template under, and that
    one never got past it."""
    await plane.put(deployment(replicas=1))
    await available(plane, "web", 1)
    [rev] = revisions_of(plane, "uid-web")
    await mark_for_deletion(plane, "web", ORPHAN)
    await wait_until(lambda: plane.deployment("web") is None, within=10)
    twin = deployment("twin", replicas=1)
    twin.spec.selector.match_labels["app"] = "web"
    twin.spec.template.metadata.labels["app"] = "web"
    await plane.put(twin)
    await available(plane, "twin", 1)
    [own] = revisions_of(plane, "uid-twin")
    assert own.metadata.name.startswith("twin-") and own.revision == 1
    freed = plane.workloads.revisions.objects[REVISIONS.key("default", rev.metadata.name)]
    assert owners(freed) == []

    again = deployment(replicas=1)
    again.metadata.uid = "uid-web-again"
    await plane.put(again)
    await available(plane, "web", 1)
    [adopted] = revisions_of(plane, "uid-web-again")
    assert adopted.metadata.uid == rev.metadata.uid and adopted.revision == 1


async def test_an_orphan_delete_retries_a_release_that_keeps_conflicting(
    plane: Plane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each time the collector would free the pod, someone else writes it first, so its
    guarded write conflicts on every try: the collector looks again later (RETRY_SECONDS),
    the Deployment stays, marked, while the pod names it, and the pod is never deleted.
    Once the writes stop, the pod is freed, and only then the Deployment goes."""
    await plane.put(deployment(replicas=1))
    await available(plane, "web", 1)
    [pod] = plane.pods()
    pod_key = PODS.key("default", pod.metadata.name)
    lost: list[str] = []

    def check() -> None:
        now_pod = plane.cluster.pods.get(pod_key)
        if now_pod is None or now_pod.metadata.deletion_timestamp is not None:
            lost.append(pod_key)

    plane.checks.append(check)
    named = removed_while_named(plane)
    real_put = plane.store.put
    touches = 0
    interfering = True

    async def put(key: str, value: bytes, *, obj: Any = None, expect: int | None = None) -> KV:
        nonlocal touches
        freeing = isinstance(obj, Pod) and key == pod_key and "uid-web" not in owners(obj)
        if interfering and freeing:
            # A real write of the pod first, as its agent's status report would be: the
            # collector's write, made on the version before, then conflicts.
            latest = plane.store.latest(key)
            assert latest is not None
            touched = mutable_copy(decode(latest, Pod))
            touched.metadata.annotations["example.com/touched"] = str(touches)
            await real_put(key, encode(touched), obj=touched)
            touches += 1
        return await real_put(key, value, obj=obj, expect=expect)

    monkeypatch.setattr(plane.store, "put", put)
    results: list[float | None] = []
    real_reconcile = plane.workloads.gc.reconcile

    async def reconcile(key: str) -> float | None:
        result = await real_reconcile(key)
        if key == "uid-web":
            results.append(result)
        return result

    monkeypatch.setattr(plane.workloads.gc, "reconcile", reconcile)
    await mark_for_deletion(plane, "web", ORPHAN)
    # Two passes at least (five tries each), each one answering "later".
    await wait_until(lambda: touches >= 10 and len(results) >= 2, within=10)
    assert set(results) == {gc_controller.RETRY_SECONDS}, results
    stored = await plane.store.get(DEPLOYMENTS.key("default", "web"))
    assert stored is not None and decode(stored, Deployment).metadata.finalizers == [ORPHAN]
    assert owners(plane.cluster.pods[pod_key]) == ["uid-web"]
    assert revisions_of(plane, "uid-web") == []  # freed: its write met no other

    interfering = False
    await wait_until(lambda: plane.deployment("web") is None, within=10)
    assert named == [] and lost == []
    freed = plane.cluster.pods[pod_key]
    assert owners(freed) == [] and freed.metadata.deletion_timestamp is None


@pytest.mark.parametrize("change", ["foreground", "recreated", "recreated-orphan"])
async def test_an_owner_changed_after_its_dependents_were_freed_is_not_deleted_as_orphaning(
    plane: Plane, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """Marked Orphan, its pod and revision freed, and then, before the collector deletes
    it, the Deployment is re-marked Foreground (and a pod that blocks its deletion, held by
    a finalizer of its own, names it), or deleted and created again (a new uid; also
    marked Orphan at once, with a pod not yet freed): the collector does not delete what
    is stored now under the old owner's Orphan policy. The re-marked one goes as a
    Foreground delete does, once the pod that blocks it has gone; the new one stays, and
    adopts the freed pod and revision; the new one marked Orphan goes once its own pod is
    freed."""
    await plane.put(deployment(replicas=1))
    await available(plane, "web", 1)
    [pod] = plane.pods()
    [rev] = revisions_of(plane, "uid-web")
    key = DEPLOYMENTS.key("default", "web")
    held_key = PODS.key("default", "held")
    named = removed_while_named(plane)
    changed: list[str] = []
    old_pass_done = asyncio.Event()
    real_remove = plane.workloads.gc._remove_owner
    real_release = gc_controller.release

    async def remove_owner(owner_key: str, uid: str, policy: str) -> None:
        if policy == "Orphan" and not changed:
            changed.append(change)
            assert [owners(p) for p in plane.pods()] == [[]]  # freed
            if change == "foreground":
                await mark_for_deletion(plane, "web", FOREGROUND_DELETION)
                held = blocking_pod("held", uid)
                await plane.store.put(held_key, encode(held), obj=held, expect=0)
            else:
                await plane.store.delete(owner_key)  # a Background DELETE
                again = deployment(replicas=1)
                again.metadata.uid = "uid-web-again"
                if change == "recreated":
                    await plane.put(again)
                else:  # marked, with a pod of its own: both in one write, as one change
                    again.metadata.creation_timestamp = now()
                    again.metadata.deletion_timestamp = now()
                    again.metadata.finalizers = [ORPHAN]
                    own = blocking_pod("own", "uid-web-again")
                    own.metadata.finalizers = None
                    await plane.store.txn(
                        [
                            Op("put", owner_key, encode(again), again, expect=0),
                            Op("put", PODS.key("default", "own"), encode(own), own, expect=0),
                        ]
                    )
            await real_remove(owner_key, uid, policy)
            old_pass_done.set()
            return
        await real_remove(owner_key, uid, policy)

    async def release(store: Any, dependent: str, owner_uid: str) -> bool:
        if owner_uid == "uid-web-again":  # the new owner's collection: after the old pass
            await old_pass_done.wait()
        return await real_release(store, dependent, owner_uid)

    monkeypatch.setattr(plane.workloads.gc, "_remove_owner", remove_owner)
    monkeypatch.setattr(gc_controller, "release", release)
    await mark_for_deletion(plane, "web", ORPHAN)
    await wait_until(lambda: changed, within=10)
    if change == "foreground":
        # The pod that blocks it is deleted (held by its finalizer), and the owner waits.
        await wait_until(
            lambda: (p := plane.cluster.pods.get(held_key)) and p.metadata.deletion_timestamp,
            within=10,
        )
        stored = await plane.store.get(key)
        assert stored is not None
        assert decode(stored, Deployment).metadata.finalizers == [FOREGROUND_DELETION]
        await plane.store.delete(held_key)  # released and gone, as the node lifecycle does
        await wait_until(lambda: plane.deployment("web") is None, within=10)
    elif change == "recreated":
        d = await available(plane, "web", 1)
        assert d.metadata.uid == "uid-web-again"
        assert [r.metadata.uid for r in revisions_of(plane, "uid-web-again")] == [rev.metadata.uid]
        stored = await plane.store.get(key)
        assert stored is not None and decode(stored, Deployment).metadata.uid == "uid-web-again"
    else:
        await wait_until(lambda: plane.deployment("web") is None, within=10)
        own_pod = plane.cluster.pods[PODS.key("default", "own")]
        assert owners(own_pod) == [] and own_pod.metadata.deletion_timestamp is None
    assert named == []
    kept = plane.cluster.pods[PODS.key("default", pod.metadata.name)]
    assert kept.metadata.deletion_timestamp is None
    assert owners(kept) == (["uid-web-again"] if change == "recreated" else [])


# -- Kubernetes semantics, checked against kube-controller-manager's ---------------------


async def finish_pod(plane: Plane, pod: Pod, phase: str) -> None:
    """The pod's containers ended: Succeeded (exit 0) or Failed (exit 1), as an agent says."""
    await report(plane, pod, phase)


async def report(plane: Plane, pod: Pod, phase: str, restarts: int = 0) -> None:
    """The pod's status as an agent reports it: Running (Ready), or ended Succeeded (exit 0)
    or Failed (exit 1); its containers restarted `restarts` times each."""
    running = phase == "Running"

    def reported(current: Pod) -> None:
        state = ContainerState()
        if not running:
            code = 0 if phase == "Succeeded" else 1
            state = ContainerState(
                terminated=ContainerStateTerminated(exit_code=code, finished_at=now())
            )
        ready = "True" if running else "False"
        current.status = PodStatus(
            phase=phase,
            conditions=[PodCondition(type="Ready", status=ready, last_transition_time=now())],
            container_statuses=[
                ContainerStatus(name=c.name, ready=running, state=state, restart_count=restarts)
                for c in current.spec.containers
            ],
        )

    await edit(plane, PODS.key("default", pod.metadata.name), Pod, reported)


def pods_of_job(plane: Plane, name: str) -> list[Pod]:
    return [p for p in plane.pods() if p.metadata.labels.get("job-name") == name]


async def test_a_work_queue_job_lets_its_other_workers_finish_after_a_success(
    plane: Plane,
) -> None:
    """Without `completions`, once one pod has succeeded Kubernetes starts no new pod but
    leaves those still running to finish their share of the queue (wantActive = active);
    the Job is Complete once none is active. The workers are not stopped."""
    made: list[str] = []

    def outcome(pod: Pod) -> str:
        made.append(pod.metadata.name)
        return "succeed" if len(made) == 1 else "ready"

    plane.outcome = outcome
    await plane.put(job("queue", parallelism=3), JOBS)
    await wait_until(lambda: (j := plane.job("queue")) and j.status.succeeded == 1, within=10)
    await asyncio.sleep(0.5)
    workers = [p for p in pods_of_job(plane, "queue") if p.status.phase == "Running"]
    assert len(workers) == 2 and all(p.metadata.deletion_timestamp is None for p in workers)
    assert len(pods_of_job(plane, "queue")) == 3  # no new pod after the success
    queue = plane.job("queue")
    assert queue is not None and not finished(queue) and queue.status.active == 2
    for pod in workers:
        await finish_pod(plane, pod, "Succeeded")
    done = await wait_until(lambda: (j := plane.job("queue")) and finished(j) and j, within=10)
    assert [c.type for c in done.status.conditions if c.status == "True"] == ["Complete"]
    assert (done.status.succeeded, done.status.failed) == (3, 0)


def pending_pod(plane: Plane, job_name: str, count: int) -> Pod | None:
    """The Job's pod not started yet, once it has made `count` pods."""
    pods = pods_of_job(plane, job_name)
    if len(pods) != count:
        return None
    return next((p for p in pods if p.status.phase == "Pending"), None)


async def test_on_failure_restarts_count_against_the_backoff_limit_as_in_kubernetes(
    plane: Plane,
) -> None:
    """restartPolicy OnFailure: Kubernetes fails the Job once the restarts of its active
    (Pending or Running) pods reach backoffLimit (pastBackoffLimitOnFailure: >=, and > 0
    for a limit of 0). The restarts of pods that went on to succeed are not counted: a
    Job whose every pod restarts once before it succeeds completes."""
    plane.outcome = lambda pod: "stay"
    await plane.put(job("retrying", "OnFailure", completions=4, backoffLimit=2), JOBS)
    for n in range(1, 5):
        pod = await wait_until(functools.partial(pending_pod, plane, "retrying", n), within=10)
        await report(plane, pod, "Running", restarts=1)
        await report(plane, pod, "Succeeded", restarts=1)
    done = await wait_until(lambda: (j := plane.job("retrying")) and finished(j) and j, within=10)
    assert [c.type for c in done.status.conditions if c.status == "True"] == ["Complete"]
    assert (done.status.succeeded, done.status.failed) == (4, 0)

    await plane.put(job("crashing", "OnFailure", backoffLimit=2), JOBS)
    pod = await wait_until(lambda: next(iter(pods_of_job(plane, "crashing")), None), within=10)
    await report(plane, pod, "Running", restarts=1)
    await asyncio.sleep(0.3)
    crashing = plane.job("crashing")
    assert crashing is not None and not finished(crashing)
    await report(plane, pod, "Running", restarts=2)
    failed = await wait_until(lambda: (j := plane.job("crashing")) and finished(j) and j, within=10)
    reasons = [(c.type, c.reason) for c in failed.status.conditions if c.status == "True"]
    assert reasons == [("Failed", "BackoffLimitExceeded")]


async def relabel(plane: Plane, pod: Pod, labels: dict[str, str]) -> None:
    """`kubectl label pod --overwrite`: the pod's labels become `labels`."""

    def label(p: Pod) -> None:
        p.metadata.labels = labels

    await edit(plane, PODS.key("default", pod.metadata.name), Pod, label)


async def test_a_pod_relabelled_out_of_the_selector_is_released_and_replaced(
    plane: Plane,
) -> None:
    """A pod of a Deployment whose labels its selector no longer matches (taken out for
    debugging, `kubectl label pod P app=debug --overwrite`) is released, as a ReplicaSet
    releases it: its ownerReference removed, it keeps running, owned by no one, and a
    replacement is made; deleting the Deployment leaves it."""
    await plane.put(deployment(replicas=2))
    d = await available(plane, "web", 2)
    taken = plane.pods()[0]
    await relabel(plane, taken, {**taken.metadata.labels, "app": "debug"})
    await wait_until(
        lambda: (
            (p := plane.cluster.pods.get(PODS.key("default", taken.metadata.name)))
            and not p.metadata.owner_references
        ),
        within=10,
    )
    await wait_until(
        lambda: len([p for p in active(plane.pods()) if owners(p) == [d.metadata.uid]]) == 2,
        within=10,
    )
    d = await available(plane, "web", 2)
    assert d.status.replicas == 2 and len(active(plane.pods())) == 3
    await plane.store.delete(DEPLOYMENTS.key("default", "web"))
    await wait_until(lambda: [p.metadata.name for p in plane.pods()] == [taken.metadata.name])
    await asyncio.sleep(0.3)
    assert [p.metadata.name for p in active(plane.pods())] == [taken.metadata.name]


async def name_as_owner(plane: Plane, pod: Pod, owner: Deployment) -> None:
    """Add `owner` to the pod's ownerReferences (not as its controller)."""
    ref = OwnerReference(
        api_version="apps/v1",
        kind="Deployment",
        name=owner.metadata.name,
        uid=owner.metadata.uid or "",
        block_owner_deletion=True,
    )

    def name(p: Pod) -> None:
        p.metadata.owner_references = [*(p.metadata.owner_references or ()), ref]

    await edit(plane, PODS.key("default", pod.metadata.name), Pod, name)


async def test_a_dependent_with_another_live_owner_is_freed_not_collected(
    plane: Plane,
) -> None:
    """Kubernetes' garbage collector deletes a dependent only once none of its owners is
    left: one that still has a live owner (not itself being deleted in the foreground)
    is freed of the deleted owner's reference instead, in a Background delete as in a
    Foreground one (whose owner then goes)."""
    plane.outcome = lambda pod: "stay"
    await plane.put(job("batch", parallelism=2, completions=2), JOBS)
    pods = await wait_until(lambda: len(p := pods_of_job(plane, "batch")) == 2 and p, within=10)
    await plane.put(deployment("web", replicas=0))
    await plane.put(deployment("api", replicas=0))
    web, api = await available(plane, "web", 0), await available(plane, "api", 0)
    await name_as_owner(plane, pods[0], web)
    await name_as_owner(plane, pods[1], api)
    await wait_until(
        lambda: all(len(owners(plane.cluster.pods[pod_store_key(p)])) == 2 for p in pods),
        within=10,
    )
    await plane.store.delete(DEPLOYMENTS.key("default", "web"))
    await mark_for_deletion(plane, "api", FOREGROUND_DELETION)
    await wait_until(lambda: plane.deployment("api") is None, within=10)
    await wait_until(
        lambda: all(owners(plane.cluster.pods[pod_store_key(p)]) == ["uid-batch"] for p in pods),
        within=10,
    )
    await asyncio.sleep(0.3)
    assert sorted(p.metadata.name for p in active(plane.pods())) == sorted(
        p.metadata.name for p in pods
    )
    batch = plane.job("batch")
    assert batch is not None and batch.status.failed == 0 and batch.status.active == 2


def observed(plane: Plane, name: str, generation: int) -> Deployment | None:
    """The Deployment once its controller has seen `generation` of it."""
    d = plane.deployment(name)
    return d if d is not None and d.status.observed_generation == generation else None


async def test_a_paused_deployment_records_no_revision_until_it_is_resumed(
    plane: Plane,
) -> None:
    """Edits of a paused Deployment's template start no rollout, so, as in Kubernetes
    (which makes no ReplicaSet for them until the resume), they record no revision:
    `rollout history` and the revision annotation stay as they were, and several edits
    made while paused become one revision when it is resumed."""
    await plane.put(deployment(replicas=2))
    await available(plane, "web", 2)
    await plane.put(deployment(replicas=2, paused=True))
    for generation, image in ((3, "nginx:2"), (4, "nginx:3")):
        await plane.put(deployment(replicas=2, image=image, paused=True))
        await wait_until(functools.partial(observed, plane, "web", generation), within=10)
    await asyncio.sleep(0.3)
    paused = plane.deployment("web")
    assert paused is not None and paused.metadata.annotations[REVISION_ANNOTATION] == "1"
    assert [r.revision for r in revisions_of(plane, "uid-web")] == [1]
    await plane.put(deployment(replicas=2, image="nginx:3"))
    d = await available(plane, "web", 2, generation=5)
    await wait_until(lambda: len(plane.pods()) == 2, within=10)
    assert d.metadata.annotations[REVISION_ANNOTATION] == "2"
    images = {
        r.revision: r.data["spec"]["template"]["spec"]["containers"][0]["image"]
        for r in revisions_of(plane, "uid-web")
    }
    assert images == {1: "nginx:1", 2: "nginx:3"}


async def test_unavailable_replicas_count_the_surge_as_kubernetes_does(plane: Plane) -> None:
    """status.unavailableReplicas is Kubernetes' total replicas (the pods its ReplicaSets
    want: at least spec.replicas, more while it surges) less the available ones: in a
    stuck rollout of 10 with maxSurge 3 and maxUnavailable 2 (5 new pods never ready, 8
    old ones left, as Kubernetes leaves it) it is 13 - 8 = 5, not 10 - 8, as `kubectl
    describe` shows it ("13 total | 8 available | 5 unavailable")."""
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}}
    await plane.put(deployment(replicas=10, strategy=strategy))
    await available(plane, "web", 10)
    plane.outcome = lambda pod: "stay"
    await plane.put(deployment(replicas=10, image="nginx:2", strategy=strategy))
    d = await wait_until(
        lambda: (
            (d := plane.deployment("web"))
            and d.status.observed_generation == 2
            and (d.status.replicas, d.status.updated_replicas) == (13, 5)
            and d.status.available_replicas == 8
            and d
        ),
        within=10,
    )
    assert d.status.unavailable_replicas == 5


async def test_a_pass_that_keeps_conflicting_backs_off(plane: Plane) -> None:
    """A Deployment rewritten past what this corral decodes (as after a downgrade): its
    controller still holds the last version it read, so every status write it tries
    conflicts. The retries back off (as client-go's rate limiter), not a pass every
    50 ms forever."""
    await plane.put(deployment(replicas=1))
    key = DEPLOYMENTS.key("default", "web")
    await wait_until(lambda: plane.pods(), within=5)
    kv = await plane.store.get(key)
    assert kv is not None
    raw = json.loads(kv.value)
    raw["spec"]["replicas"] = 2**40  # past int32: refused by the model
    await plane.store.put(key, json.dumps(raw).encode(), expect=kv.mod_revision)
    controller = plane.workloads.deployment
    passes = 0
    reconcile = controller.reconcile

    async def counted(k: str) -> float | None:
        nonlocal passes
        if k == key:
            passes += 1
        return await reconcile(k)

    controller.reconcile = counted  # type: ignore[method-assign,assignment]
    controller.queue.add(key)
    await asyncio.sleep(2.0)
    assert 3 <= passes <= 8, passes  # 0.05 s, 0.1, 0.2 ... apart; 40 at a steady 0.05 s


# -- scaling in the middle of a rollout, as Kubernetes' proportional scaling -----------------


def broken(pod: Pod) -> str:
    """The fake kubelet's outcome: pods of the image "broken" never become ready."""
    return "stay" if pod.spec.containers[0].image == "broken" else "ready"


def by_image(plane: Plane) -> dict[str, int]:
    """The Deployment's active pods, counted by image (one image per template here)."""
    counts: dict[str, int] = {}
    for pod in active(plane.pods()):
        image = pod.spec.containers[0].image
        counts[image] = counts.get(image, 0) + 1
    return counts


def is_available(d: Deployment) -> bool:
    return any(c.type == "Available" and c.status == "True" for c in d.status.conditions)


async def settled(plane: Plane, counts: dict[str, int], available: int) -> Deployment:
    """The Deployment once its pods are `counts` by image, `available` of them available
    and Available, and still so a moment later (no later pass undoes it)."""

    def reached() -> Deployment | None:
        d = plane.deployment("web")
        if d is None or by_image(plane) != counts or d.status.available_replicas != available:
            return None
        return d if is_available(d) and d.status.replicas == sum(counts.values()) else None

    await wait_until(reached, within=10)
    await asyncio.sleep(0.3)
    found = reached()
    assert found is not None, (by_image(plane), plane.deployment("web"))
    return found


async def stuck_rollout(plane: Plane) -> None:
    """10 replicas (maxSurge 25% = 3, maxUnavailable 25% = 2) rolled to a template that
    never becomes ready: it stops, as Kubernetes' does, at 5 new pods and 8 old ones."""
    plane.outcome = broken
    await plane.put(deployment(replicas=10))
    await available(plane, "web", 10)
    await plane.put(deployment(replicas=10, image="broken"))
    await settled(plane, {"nginx:1": 8, "broken": 5}, available=8)


async def test_scaling_in_a_rollout_is_proportional_as_in_kubernetes(plane: Plane) -> None:
    """Scaled in the middle of a stuck rollout (8 old pods, 5 new; both templates sized
    for 10 replicas, 13 with the surge), the Deployment shares the change between its
    templates as Kubernetes shares it between its ReplicaSets, and stays Available:

    up to 20: maxSurge 25% of 20 = 5, so 25 allowed, 12 to add, largest first:
      old: round(8 * 25 / 13) - 8 = round(15.38) - 8 = 7  -> 15
      new: round(5 * 25 / 13) - 5 = round(9.62) - 5 = 5   -> 10 (the 5 left; none over)
      15 old available >= 20 - maxUnavailable 5: Available (all 12 to the new template,
      as before, left 8 available of 25: not);
    down to 10: 10 + 3 allowed, 25 - 13 = 12 to remove, largest first:
      old: round(15 * 13 / 25) - 15 = round(7.8) - 15 = -7  -> 8
      new: round(10 * 13 / 25) - 10 = round(5.2) - 10 = -5  -> 5
      back to 8 old and 5 new, 8 available >= 10 - 2."""
    await stuck_rollout(plane)
    await plane.put(deployment(replicas=20, image="broken"))
    d = await settled(plane, {"nginx:1": 15, "broken": 10}, available=15)
    sized = {r.metadata.annotations[DESIRED_REPLICAS] for r in revisions_of(plane, "uid-web")}
    assert sized == {"20"}
    assert d.status.updated_replicas == 10 and d.metadata.annotations[REVISION_ANNOTATION] == "2"
    await plane.put(deployment(replicas=10, image="broken"))
    await settled(plane, {"nginx:1": 8, "broken": 5}, available=8)
    maxima = {r.metadata.annotations[MAX_REPLICAS] for r in revisions_of(plane, "uid-web")}
    assert maxima == {"13"}


async def test_a_proportional_scale_survives_a_restart(tmp_path: Path) -> None:
    """The sizes a scale gave each template are what its pods are, and what they were sized
    for is on the revisions: after a restart of the scheduler the next pass neither undoes
    the 15 old and 10 new pods of a scale to 20 (see the test above) nor takes the next
    scale for a rollout step. Scaled down to 10 by the restarted controller, they go
    back to 8 and 5: a controller that had lost the record would instead leave the 10 new
    pods and remove old ones down to its availability floor (8 old and 10 new, 18 pods
    past the 13 allowed)."""
    async with running_plane(tmp_path) as plane:
        await stuck_rollout(plane)
        await plane.put(deployment(replicas=20, image="broken"))
        await settled(plane, {"nginx:1": 15, "broken": 10}, available=15)
        await asyncio.sleep(0.2)  # the fake kubelet's last looks at its pods
    async with running_plane(tmp_path) as plane:
        plane.outcome = broken
        await settled(plane, {"nginx:1": 15, "broken": 10}, available=15)
        await plane.put(deployment(replicas=10, image="broken"))
        await settled(plane, {"nginx:1": 8, "broken": 5}, available=8)


async def test_a_paused_deployment_is_scaled_as_in_kubernetes(plane: Plane) -> None:
    """Kubernetes scales a paused Deployment (only its rollout is paused): one paused
    after a template edit still has only pods of the earlier template, and those are
    what a scale adds to; no revision is recorded for the edit until the resume."""
    await plane.put(deployment(replicas=2))
    await available(plane, "web", 2)
    await plane.put(deployment(replicas=2, image="nginx:2", paused=True))
    await wait_until(functools.partial(observed, plane, "web", 2), within=10)
    await plane.put(deployment(replicas=4, image="nginx:2", paused=True))
    await wait_until(lambda: by_image(plane) == {"nginx:1": 4}, within=10)
    await available(plane, "web", 4, generation=3)
    assert [r.revision for r in revisions_of(plane, "uid-web")] == [1]
    await plane.put(deployment(replicas=4, image="nginx:2"))
    await wait_until(lambda: by_image(plane) == {"nginx:2": 4}, within=10)


def test_proportional_shares_as_kubernetes_documents() -> None:
    """Kubernetes' documented example (Deployments, "Proportional scaling"): 10 replicas,
    maxSurge 3, a stuck rollout of 8 old and 5 new pods, scaled to 15: 18 allowed, 5 to
    add; old round(8 * 18 / 13) - 8 = 3, new round(5 * 18 / 13) - 5 = 2. Ties go to the
    newer when adding, to the older when removing; a scale to 0 removes everything."""
    old = Group("old", 8)
    new = Group("new", 5)
    for g in (old, new):
        g.revision = ControllerRevision.model_validate(
            {"metadata": {"name": g.hash, "annotations": {MAX_REPLICAS: "13"}}, "revision": 1}
        )
    assert proportional([old, new], 18, 13) == {"old": 11, "new": 7}
    assert proportional([old, new], 13, 13) == {"old": 8, "new": 5}
    assert proportional([old, new], 0, 13) == {"old": 0, "new": 0}
    # Two of one size, no record (status.replicas 4 instead): the leftover of rounding
    # goes to the newer when adding, the older when removing.
    first = Group(
        "first",
        2,
        ControllerRevision.model_validate(
            {"metadata": {"name": "a", "creationTimestamp": "2024-01-01T00:00:00Z"}, "revision": 1}
        ),
    )
    second = Group(
        "second",
        2,
        ControllerRevision.model_validate(
            {"metadata": {"name": "b", "creationTimestamp": "2024-01-02T00:00:00Z"}, "revision": 2}
        ),
    )
    assert proportional([first, second], 5, 4) == {"first": 2, "second": 3}
    assert proportional([first, second], 3, 4) == {"first": 1, "second": 2}


async def test_a_recreate_paused_while_its_old_pods_stop_starts_no_new_pod(plane: Plane) -> None:
    """Recreate runs no pod of the new template while one of the old is still there, paused
    or not: a Deployment paused while its old pods are terminating (a finalizer holds them
    here, as a slow agent would) is scaled, but has no pod of either template to scale,
    and must not make all `replicas` of the new template next to the old ones."""

    def held(image: str, paused: bool = False) -> Deployment:
        d = deployment(replicas=2, image=image, strategy={"type": "Recreate"}, paused=paused)
        d.spec.template.metadata.finalizers = ["example.com/hold"]
        return d

    await plane.put(held("nginx:1"))
    await available(plane, "web", 2)
    await plane.put(held("nginx:2"))
    await wait_until(lambda: len(plane.pods()) == 2 and not active(plane.pods()), within=10)
    await plane.put(held("nginx:2", paused=True))
    await wait_until(functools.partial(observed, plane, "web", 3), within=10)
    await asyncio.sleep(0.3)
    assert {p.spec.containers[0].image for p in active(plane.pods())} == set()


# -- a busy cluster, lost old pods, long names, undo -----------------------------------------


async def keep_reporting(plane: Plane, keys: list[str], stop: asyncio.Event) -> None:
    """Status reports for the pods at `keys`, each written as soon as the one before is
    committed, on top of the store's latest version, as the hub writes an agent's reports:
    so a status write of each pod is nearly always still being committed."""

    async def one(key: str) -> None:
        count = 0
        while not stop.is_set():
            kv = plane.store.latest(key)
            if kv is None:
                return
            pod = decode(kv, Pod)
            count += 1
            status = pod.status.model_copy(update={"message": f"report {count}"})
            updated = pod.model_copy(update={"status": status})
            with contextlib.suppress(Conflict, NotFound):
                await plane.store.put(key, encode(updated), obj=updated, expect=kv.mod_revision)

    await asyncio.gather(*(one(k) for k in keys))


async def test_a_scale_goes_through_while_status_writes_are_in_flight(plane: Plane) -> None:
    """Scaled down while every pod's status is being written all the time: the deletions
    of the scale's transaction are guarded by the versions the controller has seen, which
    a write in flight has already replaced. The controller makes them again from the
    latest versions and the scale goes through at once; before, each pass conflicted and
    was retried later and later (0.05 s, 0.1, 0.2 ...), the rollout waiting meanwhile."""
    await plane.put(deployment(replicas=8))
    await available(plane, "web", 8)
    keys = [pod_store_key(p) for p in active(plane.pods())]
    stop = asyncio.Event()
    reporting = asyncio.create_task(keep_reporting(plane, keys, stop))
    try:
        await plane.put(deployment(replicas=2))
        await wait_until(lambda: len(active(plane.pods())) == 2, within=1.5)
        await available(plane, "web", 2, generation=2)
        assert not reporting.done()  # the reports went on all along
    finally:
        stop.set()
        await reporting


async def test_a_lost_old_pod_is_replaced_from_its_own_template(plane: Plane) -> None:
    """In the middle of a stuck rollout (8 old pods available, 5 new that never become
    ready), an old pod deleted and another failed (as after NodeLost) are replaced by pods
    of the old template, as the old ReplicaSet replaces them in Kubernetes (its replicas
    stay 8 until the rollout scales it down): the Deployment is Available again. Before,
    their places went to the new template (8 + 5 allowed, so 2 more new pods that never
    become ready) and the Deployment stayed at 6 available of a minimum of 8."""
    await stuck_rollout(plane)
    old = [p for p in active(plane.pods()) if p.spec.containers[0].image == "nginx:1"]
    await plane.store.delete(pod_store_key(old[0]))
    await finish_pod(plane, old[1], "Failed")
    await settled(plane, {"nginx:1": 8, "broken": 5}, available=8)
    replicas = {
        r.data["spec"]["template"]["spec"]["containers"][0]["image"]: r.metadata.annotations[
            "corral.dev/replicas"
        ]
        for r in revisions_of(plane, "uid-web")
    }
    assert replicas == {"nginx:1": "8", "broken": "5"}


def named(name: str) -> Deployment:
    """A Deployment called `name` whose template does not name it (so that two of them
    have one template, and one hash)."""
    d = deployment(replicas=1)
    d.metadata.name = name
    return d


async def test_deployments_with_long_names_alike_get_revisions_of_their_own(
    plane: Plane,
) -> None:
    """Two Deployments of one template whose 249-character names differ only past what a
    revision name keeps of them (253 characters in all with the hash): the second finds
    the name taken and bumps its status.collisionCount, which changes its hash, as
    Kubernetes resolves a ReplicaSet name collision; both then roll out. Before, the
    second waited for the name to be free, for ever."""
    prefix = "a" * 245
    names = [f"{prefix}-one", f"{prefix}-two"]
    for name in names:
        await plane.put(named(name))
    for name in names:
        await available(plane, name, 1)
    deployments = [plane.deployment(name) for name in names]
    assert sorted(d.status.collision_count or 0 for d in deployments if d is not None) == [0, 1]
    revisions = list(plane.workloads.revisions.objects.values())
    assert len(revisions) == 2
    assert all(len(r.metadata.name) <= 253 for r in revisions)
    owners_by_name = {r.metadata.name: owners(r) for r in revisions}
    assert sorted(u for o in owners_by_name.values() for u in o) == [f"uid-{n}" for n in names]
    for d in deployments:
        assert d is not None
        hashes = {p.metadata.labels[HASH_LABEL] for p in active(plane.pods()) if owned_by(p, d)}
        assert len(hashes) == 1


def owned_by(pod: Pod, d: Deployment) -> bool:
    return any(r.uid == d.metadata.uid for r in pod.metadata.owner_references or ())


def only_image(plane: Plane, image: str) -> bool:
    return by_image(plane) == {image: 1}


def all_past(stamps: list[datetime | None]) -> bool:
    return all(t is not None and now() > t for t in stamps)


async def test_with_no_pods_the_newest_template_is_the_last_created(plane: Plane) -> None:
    """Kubernetes' FindActiveOrLatest: a paused Deployment (its template edited, so with no
    revision of its own) scaled up from 0 scales the newest template, by creation, as the
    newest ReplicaSet; not the one with the highest revision number, which after an undo
    is an older template. Templates a, b, then a again (revision 3): b is the newest."""
    for generation, image in enumerate(("a", "b", "a"), start=1):
        await plane.put(deployment(replicas=1, image=image))
        await available(plane, "web", 1, generation=generation)
        await wait_until(functools.partial(only_image, plane, image), within=10)
        # Creation times are kept to the second: b's revision is made in a later one.
        stamps = [r.metadata.creation_timestamp for r in revisions_of(plane, "uid-web")]
        await wait_until(functools.partial(all_past, stamps), within=2)
    await plane.put(deployment(replicas=0, image="c", paused=True))
    await wait_until(lambda: not active(plane.pods()), within=10)
    await plane.put(deployment(replicas=2, image="c", paused=True))
    await wait_until(lambda: by_image(plane) == {"b": 2}, within=10)


# -- a Job's backoff, as Kubernetes' backoff record ------------------------------------------


async def test_deleting_a_jobs_failed_pods_does_not_reset_its_backoff(
    plane: Plane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three failures in a row: the replacement waits 4 x 0.5 s after the third. Deleting
    the failed pods meanwhile (they are counted in status.failed already) changes nothing,
    as in Kubernetes, whose backoff record counts failures since the last success. Before,
    the backoff counted the failed pods still there, so deleting them started the
    replacement at once. (Pod times are kept to the second, so the wait seen here may be
    up to a second short of 2 s.)"""
    monkeypatch.setattr(job_controller, "BACKOFF_SECONDS", 0.5)
    plane.outcome = lambda pod: "fail"
    await plane.put(job("flaky", backoffLimit=10), JOBS)
    await wait_until(
        lambda: (j := plane.job("flaky")) and j.status.failed == 3 and j.status.active == 0,
        within=10,
    )
    loop = asyncio.get_running_loop()
    third_counted = loop.time()
    failed = pods_of_job(plane, "flaky")
    assert len(failed) == 3 and all(p.status.phase == "Failed" for p in failed)
    for pod in failed:
        await plane.store.delete(pod_store_key(pod))
    await wait_until(lambda: pods_of_job(plane, "flaky"), within=5)
    assert loop.time() - third_counted >= 0.7


async def test_pods_a_job_stops_itself_do_not_hold_back_new_ones(
    plane: Plane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parallelism lowered from 3 to 1: the Job deletes two of its pods, which a finalizer
    of their template holds, stopped and Failed, as the scheduler keeps such a pod. They
    are not failures of the Job (not counted in status.failed), and, as in Kubernetes,
    they do not count towards its backoff either: raised to 3 again, it starts two pods
    at once. Before, the backoff counted every Failed pod still there (30 s x 2 here)."""
    monkeypatch.setattr(job_controller, "BACKOFF_SECONDS", 30.0)
    plane.outcome = lambda pod: "stay"
    held = job("wide", parallelism=3, completions=10)
    held.spec.template.metadata.finalizers = ["example.com/hold"]
    await plane.put(held, JOBS)
    await wait_until(lambda: len(pods_of_job(plane, "wide")) == 3, within=10)
    narrow = held.model_copy(deep=True)
    narrow.spec.parallelism = 1
    await plane.put(narrow, JOBS)
    await wait_until(
        lambda: len([p for p in pods_of_job(plane, "wide") if p.metadata.deletion_timestamp]) == 2,
        within=10,
    )
    for pod in pods_of_job(plane, "wide"):
        if pod.metadata.deletion_timestamp is not None:  # stopped: as its agent confirms it
            kv = await plane.store.get(pod_store_key(pod))
            assert kv is not None
            await remove_stopped(plane.store, pod_store_key(pod), kv, decode(kv, Pod))
    await wait_until(
        lambda: len([p for p in pods_of_job(plane, "wide") if p.status.phase == "Failed"]) == 2,
        within=10,
    )
    await plane.put(held, JOBS)
    await wait_until(lambda: len(active(pods_of_job(plane, "wide"))) == 3, within=5)
    wide = plane.job("wide")
    assert wide is not None and wide.status.failed == 0


async def test_a_job_created_again_under_its_name_starts_without_backoff(
    plane: Plane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Job whose pod failed (a replacement 30 s away), deleted and created again under
    its name (`kubectl delete` then `apply`, or `replace --force`): the new Job is another
    Job and starts its pod at once, as it does under any other name. Before, the backoff
    record was kept by name and dropped only by a pass that found no Job there, which
    the deletion never queued: the new Job waited out the old one's 30 s, and a later
    failure of it backed off from the old one's count."""
    monkeypatch.setattr(job_controller, "BACKOFF_SECONDS", 30.0)
    plane.outcome = lambda pod: "fail"
    await plane.put(job("flaky", backoffLimit=10), JOBS)
    await wait_until(
        lambda: (j := plane.job("flaky")) and j.status.failed == 1 and j.status.active == 0,
        within=10,
    )
    plane.outcome = lambda pod: "stay"
    await plane.store.delete(JOBS.key("default", "flaky"))
    again = job("flaky", backoffLimit=10)
    again.metadata.uid = "uid-flaky-again"
    await plane.put(again, JOBS)
    await wait_until(
        lambda: [p for p in pods_of_job(plane, "flaky") if owners(p) == ["uid-flaky-again"]],
        within=5,
    )


async def test_a_recreate_sizes_an_old_template_without_pods_to_zero(plane: Plane) -> None:
    """Recreate, its pods deleted by a user in the same moment as its template is edited
    (one transaction here, so that no pass comes between): the old template has no pod
    left to delete, and is still sized to 0, as Kubernetes scales every old ReplicaSet to
    0 for a Recreate. Before, its revision kept REPLICAS 3: it was kept past
    revisionHistoryLimit 0, and a later change to RollingUpdate made up its 3 pods again
    (to be scaled down at once by the rollout)."""
    recreate = {"type": "Recreate"}
    await plane.put(deployment(replicas=3, strategy=recreate, revisionHistoryLimit=0))
    await available(plane, "web", 3)
    key = DEPLOYMENTS.key("default", "web")
    kv = await plane.store.get(key)
    assert kv is not None
    edited = mutable_copy(decode(kv, Deployment))
    edited.spec.template.spec.containers[0].image = "nginx:2"
    edited.metadata.generation = 2
    deleted = [Op("delete", pod_store_key(p)) for p in active(plane.pods())]
    await plane.store.txn(
        [*deleted, Op("put", key, encode(edited), edited, expect=kv.mod_revision)]
    )
    await available(plane, "web", 3, generation=2)
    await wait_until(lambda: len(revisions_of(plane, "uid-web")) == 1, within=5)
    old_pods: list[dict[str, int]] = []
    plane.checks.append(
        lambda: old_pods.append(by_image(plane)) if "nginx:1" in by_image(plane) else None
    )
    await plane.put(deployment(replicas=3, image="nginx:2", revisionHistoryLimit=0))
    await available(plane, "web", 3, generation=3)
    await asyncio.sleep(0.3)
    assert by_image(plane) == {"nginx:2": 3} and not old_pods, old_pods
