"""The pod supervisor: makes what runs match the desired set, and keeps it running.

One `PodWorker` per pod incarnation (uid), one task per container:

    ContainerCreating ──start ok──> running ──exit──> restart policy (agent/restart.py)
          ^    │                                           │ restart now / after backoff
          │    └─pull or start failed─────────────┐        │   (waiting: CrashLoopBackOff)
          │      (ErrImagePull, ImagePullBackOff) │        │
          └────────────── backoff ────────────────┘<───────┘
                                                           │ no restart
                                                           v
                                                      terminated

While a container runs, its probes (agent/probes.py) run too: a failed liveness or
startup probe stops it (then the restart policy applies, as for any exit); the
readiness probe decides its `ready`, and the pod's Ready condition follows.

A pod update that changes a container's image reaches the worker as an upsert of a
pod it runs (`PodWorker.update`): the container is stopped within the pod's grace
period and started with the new image (restartCount + 1), as the kubelet restarts a
container whose definition changed.

The supervisor works with or without the scheduler: restart policies keep
working while the link is down. What it runs survives the agent: on start it
re-adopts every pod the runtime finds (`recover`), including the exits that
happened while no agent ran, and restart counts are kept in the state directory.
A pod whose containers have all ended for good (its restart policy runs them no more)
stays, finished, with its containers' records and logs, until the scheduler removes it
from the desired set (the pod was deleted); a container's end for good is saved with
its restart count, so no later agent starts it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.probes import ContainerProbes, Kind, Prober
from agent.restart import Decision, RestartBackoff
from agent.runtime.base import (
    START_ERROR,
    ContainerExit,
    ContainerInfo,
    PodInfo,
    Runtime,
    RuntimeFailure,
)
from agent.runtime.pulls import ERR_IMAGE_PULL, IMAGE_PULL_BACKOFF
from common.models import (
    ContainerState,
    ContainerStateRunning,
    ContainerStateTerminated,
    ContainerStateWaiting,
    ContainerStatus,
    Pod,
    PodCondition,
    PodStatus,
    now,
)

_LOGGER = logging.getLogger(__name__)

START_ERROR_WAIT = 5.0  # for the exit record of a failed start (there, or none at all)
# A pod whose stop failed is stopped again after 1, 2, 4 ... up to this many seconds.
STOP_RETRY_CAP = 30.0
# How long an agent's shutdown waits for the pods it is stopping (a deletion in flight, or
# every pod with stop_pods_on_exit) before it exits: below its unit's TimeoutStopSec (30 s),
# so that a pod with a longer grace period, or a process that ignores SIGTERM, does not
# have systemd SIGKILL the agent (a failed stop, an audit found it at 29.7 s).
STOP_DRAIN_SECONDS = 20.0
# With stop_pods_on_exit, each pod's grace is cut to leave this much of the drain for the
# SIGKILL and the clean-up that follow it.
STOP_KILL_MARGIN = 5.0
# A running container whose wait fails is waited for again this many times (after 1, 2,
# 4, 8, 8 s: a container runtime restarting) before it is taken as lost.
WAIT_RETRIES = 5
WAIT_RETRY_CAP = 8.0

EventSink = Callable[[Pod, str, str, str], None]  # pod, reason, message, Normal|Warning


@dataclass(slots=True)
class ContainerRecord:
    name: str
    image: str
    state: ContainerState
    last_state: ContainerState
    restart_count: int = 0
    ever_started: bool = False
    finished: bool = False  # terminated and will not restart
    probes: ContainerProbes | None = None  # while it runs, if it has any
    # The last run's, as the runtime reported them; kept while it waits to restart, as
    # the kubelet keeps them (the status then still describes that run's end).
    container_id: str | None = None
    image_id: str = ""
    # The image the last run was started with (or the adopted run's): when the pod's spec
    # names another (a pod update), the container is restarted with it.
    run_image: str = ""
    # The stop of a run whose image changed (`PodWorker.update`), until its exit is seen.
    replacing: asyncio.Task[None] | None = None
    # Set by an update of its image: a wait between starts (backoff) ends at once.
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def status(self) -> ContainerStatus:
        # As in Kubernetes: started once the startup probe passed (if any), ready once
        # started and the readiness probe passes (if any).
        running = self.state.running is not None
        started = running and (self.probes is None or self.probes.started)
        ready = started and (self.probes is None or self.probes.ready)
        return ContainerStatus(
            name=self.name,
            image=self.image,
            state=self.state,
            last_state=self.last_state,
            restart_count=self.restart_count,
            image_id=self.image_id,
            container_id=self.container_id,
            ready=ready,
            started=started,
        )

    def ran(self, info: ContainerInfo) -> None:
        """A run started, or was found (adopted, or its start failed): its ids are now
        the status's. A failed start has none (it never ran): the last run's would name
        a container that is not the one its state describes."""
        self.container_id, self.image_id = info.container_id, info.image_id


def _terminated(exit: ContainerExit, container_id: str | None) -> ContainerState:
    return ContainerState(
        terminated=ContainerStateTerminated(
            exit_code=exit.exit_code,
            signal=exit.signal,
            reason=exit.reason,
            message=exit.message,
            started_at=exit.started_at,
            finished_at=exit.finished_at,
            container_id=container_id,
        )
    )


def _is_exit(state: ContainerState, exit: ContainerExit) -> bool:
    """Whether `state` (a saved lastState) records this very exit."""
    done = state.terminated
    return (
        done is not None
        and done.finished_at == exit.finished_at
        and done.exit_code == exit.exit_code
    )


class PodWorker:
    """Runs one pod incarnation's containers until stopped."""

    def __init__(
        self,
        pod: Pod,
        runtime: Runtime,
        on_change: Callable[[str], None],
        persist_path: Path,
        adopted: PodInfo | None = None,
    ) -> None:
        self.pod = pod
        self.uid = pod.metadata.uid or ""
        self._runtime = runtime
        self._on_change = on_change
        self._persist_path = persist_path
        self._adopted = adopted
        self.start_time: datetime | None = None
        self.containers = {
            c.name: ContainerRecord(
                c.name,
                c.image,
                ContainerState(waiting=ContainerStateWaiting(reason="ContainerCreating")),
                ContainerState(),
                run_image=c.image,
            )
            for c in pod.spec.containers
        }
        self._tasks: list[asyncio.Task[None]] = []
        self.stopping = False
        self.on_event: EventSink = lambda pod, reason, message, kind: None
        self._ready: tuple[bool, datetime] | None = None  # the Ready condition, since when

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        # The saved restart counts and (a new pod) the sandbox side by side: two thread
        # hops at once, not one after the other.
        saved, failure = await asyncio.gather(
            asyncio.to_thread(_read_json, self._persist_path), self._create_pod()
        )
        if saved is None:
            self._carry_over(self.pod.status.container_statuses)
        elif self._adopted is not None:
            self._recall_images(saved)
        for name, data in (saved or {}).get("containers", {}).items():
            record = self.containers.get(name)
            if record is not None:
                record.restart_count = int(data.get("restartCount", 0))
                if data.get("lastState"):
                    record.last_state = ContainerState.model_validate(data["lastState"])
                if data.get("finished"):
                    # Ended for good under its restart policy before this agent: it stays
                    # ended, even if the runtime kept no record of it (a failed start).
                    record.state = ContainerState.model_validate(data["finished"])
                    record.finished = record.ever_started = True
                    record.image_id = str(data.get("imageID") or "")
                    if record.state.terminated is not None:
                        record.container_id = record.state.terminated.container_id
        self.start_time = now()
        if failure is not None:
            for record in self.containers.values():
                if record.finished:
                    continue
                record.state = ContainerState(
                    waiting=ContainerStateWaiting(reason=failure.reason, message=str(failure))
                )
            self._changed()
            # The containers' loops retry creation with backoff.
        for container in self.pod.spec.containers:
            if self.containers[container.name].finished:
                continue
            info = self._adopted.containers.get(container.name) if self._adopted else None
            task = asyncio.create_task(
                self._run_container(container.name, info),
                name=f"pod-{self.uid}-{container.name}",
            )
            task.add_done_callback(functools.partial(self._container_ended, container.name))
            self._tasks.append(task)

    def _recall_images(self, saved: dict[str, Any]) -> None:
        """An adopted pod's images as its last update left them, and those its runs were
        started with, from the saved record: the runtime keeps the pod as it was created
        (native's pod.json), so an agent started after an update would otherwise take the
        old images for the wanted ones, or restart a container already on the new one."""
        images = saved.get("images")
        if isinstance(images, dict) and images:
            self.pod = _with_images(self.pod, {k: str(v) for k, v in images.items()})
        for name, data in saved.get("containers", {}).items():
            record = self.containers.get(name)
            if record is not None and data.get("image"):
                record.run_image = record.image = str(data["image"])

    async def update(self, pod: Pod) -> None:
        """The scheduler's pod again, its containers' images changed (a pod update, the
        only spec change Kubernetes allows that reaches a node): each running container
        whose image changed is stopped within the pod's grace period and started again
        with the new image, whatever the restart policy, as the kubelet does when a
        container's definition changes (restartCount + 1). One waiting to start or to
        restart starts with it at once (a new image, a new backoff); one that ended for
        good stays ended. Any other difference is not acted on (the API refuses it)."""
        if self.stopping:
            return
        images = {
            c.name: c.image
            for c in pod.spec.containers
            if c.name in self.containers and c.image != self._image(c.name)
        }
        if not images:
            return
        self.pod = _with_images(self.pod, images)
        await self._persist()  # the new images, for an agent started before they run
        for name in images:
            record = self.containers[name]
            if record.finished:
                continue
            if record.state.running is not None:
                self._replace(name)
            else:
                record.wake.set()

    def _image(self, name: str) -> str:
        """The image the pod's spec gives container `name` now."""
        return next(c.image for c in self.pod.spec.containers if c.name == name)

    def _replace(self, name: str) -> None:
        """Stop the running container `name`, whose image changed, within the pod's grace
        period; its task sees the exit and starts it again with the new image."""
        record = self.containers[name]
        if record.replacing is not None:
            return  # already being stopped: the restart takes the newest image
        self._event("Killing", f"Container {name} definition changed, will be restarted")
        grace = float(self.pod.spec.termination_grace_period_seconds)

        async def stop() -> None:
            try:
                await self._runtime.stop_container(self.uid, name, grace)
            except RuntimeFailure as exc:
                _LOGGER.warning("pod %s: stopping container %s: %s", self.pod.key, name, exc)

        record.replacing = asyncio.create_task(stop(), name=f"replace-{self.uid}-{name}")

    async def _pause(self, record: ContainerRecord, delay: float) -> None:
        """Wait `delay` seconds between starts, less if the container's image changes."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(record.wake.wait(), delay)

    def _carry_over(self, statuses: list[ContainerStatus]) -> None:
        """Restart counts and last states from the pod's status as the scheduler sent it,
        for an incarnation this node has counted no exit of yet: a replacement of a pod
        whose node was lost (scheduler/eviction.py) carries its predecessor's restarts
        plus one and that end (`NodeLost`). The first status from here wiped both: the
        restarts went back to 0, and a Job's failures under OnFailure, which count them,
        went down."""
        for status in statuses:
            record = self.containers.get(status.name)
            if record is not None:
                record.restart_count = status.restart_count
                record.last_state = status.last_state

    async def _create_pod(self) -> RuntimeFailure | None:
        """The sandbox of a new (not adopted) pod; the failure, if it failed."""
        if self._adopted is not None:
            return None
        try:
            await self._runtime.create_pod(self.pod)
        except RuntimeFailure as exc:
            return exc
        return None

    async def stop(self, grace: float | None = None) -> None:
        """Stop every container (SIGTERM, grace, SIGKILL) and remove the pod's sandbox."""
        self.stopping = True
        grace = float(self.pod.spec.termination_grace_period_seconds if grace is None else grace)
        for name, record in self.containers.items():
            if record.state.running is not None:
                self._event("Killing", f"Stopping container {name}")
        replacing = [r.replacing for r in self.containers.values() if r.replacing is not None]
        for task in [*self._tasks, *replacing]:  # a replacement's stop gives way to this one
            task.cancel()
        await asyncio.gather(*self._tasks, *replacing, return_exceptions=True)
        await asyncio.gather(
            *(
                self._runtime.stop_container(self.uid, name, grace)
                for name, record in self.containers.items()
                if record.ever_started or self._adopted is not None
            ),
            return_exceptions=True,
        )
        await self._runtime.remove_pod(self.uid)
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.unlink, self._persist_path)

    def detach(self) -> list[asyncio.Task[None]]:
        """Stop supervising without touching the containers (agent shutdown): the
        containers' tasks, cancelled, for the caller to wait for. A container being
        stopped for its new image may go on with the old one: the next agent sees that
        (`_recall_images`) and replaces it then."""
        replacing = [r.replacing for r in self.containers.values() if r.replacing is not None]
        tasks = [*self._tasks, *replacing]
        for task in tasks:
            task.cancel()
        return tasks

    def _container_ended(self, name: str, task: asyncio.Task[None]) -> None:
        """A container's task that failed unforeseen (a bug, not a runtime's refusal) is
        logged with its traceback and shown on the container (`RunContainerError`, the
        message), with a Warning event: it was left to "Task exception was never
        retrieved" while the pod went on showing its last state. Not restarted: what
        failed is not known to be safe to do again."""
        if task.cancelled() or (exc := task.exception()) is None:
            return
        _LOGGER.error("pod %s container %s: supervision failed", self.pod.key, name, exc_info=exc)
        message = f"the agent stopped supervising it: {exc!r}"[:1024]
        record = self.containers[name]
        record.state = ContainerState(
            waiting=ContainerStateWaiting(reason="RunContainerError", message=message)
        )
        self._event("Failed", f"Error: container {name}: {message}", "Warning")
        self._changed()

    # -- one container ------------------------------------------------------

    async def _run_container(self, name: str, adopted: Any) -> None:
        record = self.containers[name]
        backoff = RestartBackoff.for_annotations(self.pod.metadata.annotations)
        policy = self.pod.spec.restart_policy
        info = adopted
        pull_failures = 0  # in a row: the first shows ErrImagePull, later ones ImagePullBackOff
        while True:
            if info is None:
                # One spec for the whole attempt: an update meanwhile is seen once it runs.
                pod = self.pod
                image = self._image(name)
                if image != record.image:
                    # A new definition starts afresh, as the kubelet's backoff is per
                    # container spec.
                    backoff = RestartBackoff.for_annotations(pod.metadata.annotations)
                    pull_failures = 0
                    record.image = image
                record.wake.clear()
                started = time.monotonic()
                record.state = ContainerState(
                    waiting=ContainerStateWaiting(reason="ContainerCreating")
                )
                try:
                    await self._runtime.create_pod(pod)
                    await self._runtime.ensure_image(pod, name, self._event)
                    info = await self._runtime.start_container(pod, name)
                    pull_failures = 0
                    if record.run_image != image:
                        record.run_image = image
                        await self._persist()  # for an agent started while it runs
                except RuntimeFailure as exc:
                    _LOGGER.warning(
                        "pod %s container %s failed to start: %s", self.pod.key, name, exc
                    )
                    self._event("Failed", f"Error: {exc.reason}: {exc}", "Warning")
                    if exc.reason != START_ERROR:
                        decision = backoff.on_exit("Always", 1, 0.0)  # retry whatever the policy
                        delay = max(decision.delay, backoff.initial)
                        reason = exc.reason
                        if reason == ERR_IMAGE_PULL:  # pulls back off like starts (Kubernetes)
                            pull_failures += 1
                            reason = ERR_IMAGE_PULL if pull_failures == 1 else IMAGE_PULL_BACKOFF
                            self._event("BackOff", f'Back-off pulling image "{record.image}"')
                        record.state = ContainerState(
                            waiting=ContainerStateWaiting(reason=reason, message=str(exc))
                        )
                        self._changed()
                        await self._pause(record, delay)
                        continue
                    # Its process could not be started: an exit (128) under the restart
                    # policy like any other (Never: the pod fails), as with the kubelet.
                    info = ContainerInfo(name, "exited", exit=await self._start_error(name, exc))
            else:
                started = time.monotonic()
            record.ran(info)
            if info.state == "running":
                if info is not adopted:
                    self._event("Started", f"Started container {name}")
                record.ever_started = True
                record.state = ContainerState(
                    running=ContainerStateRunning(started_at=info.started_at or now())
                )
                record.probes = self._probes(name, info.started_at)
                self._changed()
                if self._image(name) != record.run_image:
                    self._replace(name)  # updated while it started (or while no agent ran)
                try:
                    exit = await self._wait(name, info)
                finally:
                    if record.probes is not None:
                        await record.probes.close()
                        record.probes = None
            else:
                assert info.exit is not None  # exited while no agent watched it
                record.ever_started = True
                exit = info.exit
                if exit.started_at is not None:
                    started = (
                        time.monotonic() - (exit.finished_at - exit.started_at).total_seconds()
                    )
            ran_for = time.monotonic() - started
            # An adopted exit the previous agent already counted (it died while waiting
            # out the backoff, or before the restart): restart it, do not count it again.
            counted = info is adopted and _is_exit(record.last_state, exit)
            info = None
            record.state = _terminated(exit, record.container_id)
            if exit.reason == "OOMKilled":
                self._event("OOMKilled", f"Container {name} exceeded its memory limit", "Warning")
            replaced = record.replacing is not None
            if record.replacing is not None:
                # Its stop done before the next start: a late kill must not hit that one.
                await asyncio.gather(record.replacing, return_exceptions=True)
                record.replacing = None
            # Stopped for its new image: restarted at once, whatever the policy.
            decision = (
                Decision(True) if replaced else backoff.on_exit(policy, exit.exit_code, ran_for)
            )
            if counted and not decision.restart:
                # The previous agent counted this exit, which it does only once it has
                # decided to restart: a run it stopped for a new image, under any policy,
                # then died before the new run started (a pull of minutes is a wide
                # window). Under Never that exit ended the container and failed the pod.
                decision = Decision(True)
            _LOGGER.info(
                "pod %s container %s exited %d (%s); restart=%s delay=%.2fs",
                self.pod.key,
                name,
                exit.exit_code,
                exit.reason,
                decision.restart,
                decision.delay,
            )
            if not decision.restart:
                record.finished = True
                self._changed()
                await self._persist()
                return
            if not counted:
                record.last_state = record.state
                record.restart_count += 1
                await self._persist()
            if decision.delay:
                self._event(
                    "BackOff",
                    f"Back-off {decision.delay:.1f}s restarting failed container {name}",
                    "Warning",
                )
                record.state = ContainerState(
                    waiting=ContainerStateWaiting(
                        reason=decision.reason,
                        message=f"back-off {decision.delay:.1f}s restarting failed container "
                        f"{name} in pod {self.pod.key}",
                    )
                )
                self._changed()
                await self._pause(record, decision.delay)

    async def _wait(self, name: str, info: ContainerInfo) -> ContainerExit:
        """The exit of a running container. A wait that fails (a container runtime that
        does not answer for a moment, records the native runtime cannot read) is tried
        again, WAIT_RETRIES times over about half a minute; then the container is taken
        as lost: killed, and only once the kill went through, said terminated with the
        kubelet's `ContainerStatusUnknown` (137), the restart policy applying as to any
        exit. Its task used to end at the first failure, the container supervised no
        more and shown as it was."""
        failures = 0
        while True:
            try:
                return await self._runtime.wait_container(self.uid, name)
            except (RuntimeFailure, OSError) as exc:
                task = asyncio.current_task()
                if self.stopping or (task is not None and task.cancelling()):
                    raise  # being stopped: not a container lost
                failures += 1
                _LOGGER.warning(
                    "pod %s container %s: waiting for it failed (%d): %s",
                    self.pod.key,
                    name,
                    failures,
                    exc,
                )
                if failures == 1:
                    self._event("Failed", f"Error: waiting for container {name}: {exc}", "Warning")
                if failures > WAIT_RETRIES:
                    try:
                        await self._runtime.stop_container(self.uid, name, 0)
                    except (RuntimeFailure, OSError) as kill:
                        _LOGGER.warning("pod %s: killing lost %s: %s", self.pod.key, name, kill)
                    else:
                        self._event("Failed", f"Error: lost track of container {name}", "Warning")
                        return ContainerExit(
                            137, "ContainerStatusUnknown", info.started_at, now(), message=str(exc)
                        )
                await asyncio.sleep(min(WAIT_RETRY_CAP, 2.0 ** min(failures - 1, 5)))

    async def _start_error(self, name: str, exc: RuntimeFailure) -> ContainerExit:
        """The exit of a start that failed: as the runtime recorded it (native), else now."""
        with contextlib.suppress(RuntimeFailure, TimeoutError):
            async with asyncio.timeout(START_ERROR_WAIT):
                return await self._runtime.wait_container(self.uid, name)
        return ContainerExit(128, START_ERROR, None, now(), message=str(exc))

    def _probes(self, name: str, started_at: datetime | None) -> ContainerProbes | None:
        """The probes of a container that has just started (or was adopted running)."""
        container = next(c for c in self.pod.spec.containers if c.name == name)
        if not ContainerProbes.wanted(container):
            return None
        running_for = 0.0
        if started_at is not None:
            running_for = max(0.0, (datetime.now(UTC) - started_at).total_seconds())

        async def failed(kind: Kind) -> None:
            self._event("Killing", f"Container {name} failed {kind} probe, will be restarted")
            grace = float(self.pod.spec.termination_grace_period_seconds)
            try:
                await self._runtime.stop_container(self.uid, name, grace)
            except RuntimeFailure as exc:
                _LOGGER.warning("pod %s: stopping container %s: %s", self.pod.key, name, exc)

        probes = ContainerProbes(
            Prober(self._runtime, self.pod, container),
            container,
            running_for=running_for,
            on_change=self._changed,
            on_event=self._event,
            on_failure=failed,
        )
        probes.start()
        return probes

    async def _persist(self) -> None:
        data = {
            # The images as the last update left them, and each run's (`_recall_images`).
            "images": {c.name: c.image for c in self.pod.spec.containers},
            "containers": {
                name: {
                    "restartCount": r.restart_count,
                    "lastState": r.last_state.to_dict(),
                    "image": r.run_image,
                    **(
                        {"finished": r.state.to_dict(), "imageID": r.image_id} if r.finished else {}
                    ),
                }
                for name, r in self.containers.items()
            },
        }
        try:
            await asyncio.to_thread(_write_json, self._persist_path, data)
        except OSError as exc:  # a full disk, say: restarts must go on regardless
            _LOGGER.warning("pod %s: cannot save its restart counts: %s", self.pod.key, exc)

    def _event(self, reason: str, message: str, kind: str = "Normal") -> None:
        if not self.stopping or reason == "Killing":
            self.on_event(self.pod, reason, message, kind)

    def _changed(self) -> None:
        if not self.stopping:
            self._on_change(self.uid)

    # -- status -------------------------------------------------------------

    def status(self) -> PodStatus:
        records = list(self.containers.values())
        statuses = [r.status() for r in records]
        if all(r.finished for r in records):
            failed = any(
                r.state.terminated is not None and r.state.terminated.exit_code != 0
                for r in records
            )
            phase = "Failed" if failed else "Succeeded"
        elif any(r.ever_started for r in records):
            phase = "Running"
        else:
            phase = "Pending"
        unready = [s.name for s in statuses if not s.ready]
        ready = not unready
        if self._ready is None or self._ready[0] != ready:
            self._ready = (ready, now())
        stamp = self.start_time or now()
        reason = None if ready else "ContainersNotReady"
        message = None if ready else f"containers with unready status: [{' '.join(unready)}]"
        conditions = [
            PodCondition(type="Initialized", status="True", last_transition_time=stamp),
            *(
                PodCondition(
                    type=kind,
                    status="True" if ready else "False",
                    reason=reason,
                    message=message,
                    last_transition_time=self._ready[1],
                )
                for kind in ("ContainersReady", "Ready")
            ),
        ]
        return PodStatus(
            phase=phase,
            conditions=conditions,
            container_statuses=statuses,
            start_time=self.start_time,
        )


class Supervisor:
    """All pod workers of this node; the link feeds it desired pods and reads its status."""

    def __init__(self, runtime: Runtime, state_dir: Path, on_change: Callable[[str], None]) -> None:
        self.runtime = runtime
        self._runtime = runtime
        self._dir = state_dir / "supervisor"
        self.records_dir = self._dir  # `<uid>.json`: restart counts, ends for good
        self._on_change = on_change
        self.workers: dict[str, PodWorker] = {}
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._closing = asyncio.Event()  # set on shutdown: no failed stop is tried again
        self.on_stopped: Callable[[str], None] = lambda uid: None
        self.on_event: EventSink = lambda pod, reason, message, kind: None

    async def recover(self) -> None:
        """Adopt every pod the runtime still has: they keep running, unsupervised no more."""
        await asyncio.to_thread(self._dir.mkdir, parents=True, exist_ok=True)
        for info in await self._runtime.recover():
            running = sum(1 for c in info.containers.values() if c.state == "running")
            _LOGGER.info(
                "adopted pod %s (%s): %d of %d containers running",
                info.pod.key,
                info.uid,
                running,
                len(info.containers),
            )
            worker = self._worker(info.pod, info)
            await worker.start()

    def _worker(self, pod: Pod, adopted: PodInfo | None = None) -> PodWorker:
        uid = pod.metadata.uid or ""
        worker = PodWorker(pod, self._runtime, self._on_change, self._dir / f"{uid}.json", adopted)
        worker.on_event = lambda *args: self.on_event(*args)
        self.workers[uid] = worker
        return worker

    async def apply(self, upsert: list[Pod], remove: list[str], *, full: bool = False) -> None:
        """Start pods new to this node, stop removed ones, and restart the containers of
        running ones whose images changed (`PodWorker.update`). `full`: `upsert` is the
        whole desired set, so anything else running is stopped (resync and fencing)."""
        wanted = {p.metadata.uid for p in upsert}
        stop = set(remove)
        if full:
            stop |= set(self.workers) - wanted
        for uid in stop:
            self._stop(uid)
        new = []
        for pod in upsert:
            uid = pod.metadata.uid or ""
            if uid in self._stopping or uid in stop:
                continue
            worker = self.workers.get(uid)
            if worker is not None:
                await worker.update(pod)
                continue
            self._worker(pod)
            new.append(uid)
        # Side by side: a burst of new pods does not wait for each other's sandboxes.
        await asyncio.gather(*(self.workers[uid].start() for uid in new))
        for uid in new:
            self._on_change(uid)

    def _stop(self, uid: str, grace: float | None = None) -> None:
        """Stop pod `uid` in a task of its own, within `grace` (default: the pod's)."""
        if uid in self._stopping:
            return  # said stopped when it is
        worker = self.workers.pop(uid, None)
        if worker is None:
            self.on_stopped(uid)  # not ours (any more): say so, the scheduler may wait on it
            return

        async def stop() -> None:
            # Said stopped only once it is: the scheduler then removes the pod, and what
            # was left of it would stay here for good. Tried again until it is stopped.
            attempt = 0
            try:
                while True:
                    try:
                        await worker.stop(grace)
                        break
                    except Exception:
                        attempt += 1
                        delay = min(STOP_RETRY_CAP, 2.0 ** (attempt - 1))
                        _LOGGER.exception(
                            "stopping pod %s failed; trying again in %g s", worker.pod.key, delay
                        )
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._closing.wait(), delay)
                        if self._closing.is_set():
                            return  # the next agent stops it (the pod is not desired)
            finally:
                self._stopping.pop(uid, None)
            self.on_stopped(uid)

        self._stopping[uid] = asyncio.create_task(stop(), name=f"stop-{uid}")

    def status(self, uid: str) -> PodStatus | None:
        worker = self.workers.get(uid)
        return worker.status() if worker else None

    async def close(self, *, stop_pods: bool = False) -> None:
        """Agent shutdown: stop supervising; containers keep running for the next agent,
        unless `stop_pods` (then every pod is stopped within its grace period). Pods being
        stopped are waited for STOP_DRAIN_SECONDS at most."""
        self._closing.set()
        if stop_pods:
            # Within the drain below: a pod whose grace is longer (30 s by default), with
            # a process that ignores SIGTERM, is killed in time, not left running.
            for uid, worker in list(self.workers.items()):
                grace = float(worker.pod.spec.termination_grace_period_seconds)
                self._stop(uid, min(grace, STOP_DRAIN_SECONDS - STOP_KILL_MARGIN))
        # Waited for, not only cancelled: a container's task that was starting it, or
        # probing it, ends its exchange with the fork server before the runtime closes.
        detached = [task for worker in self.workers.values() for task in worker.detach()]
        await asyncio.gather(*detached, return_exceptions=True)
        stopping = list(self._stopping.values())
        if not stopping:
            return
        _, late = await asyncio.wait(stopping, timeout=STOP_DRAIN_SECONDS)
        if late:
            # Not said stopped: the next agent finds them in its state directory, and
            # stops those no longer desired (deleted pods) with their grace period.
            _LOGGER.warning(
                "%d pod(s) still stopping after %g s; the next agent start stops them",
                len(late),
                STOP_DRAIN_SECONDS,
            )
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)


def _with_images(pod: Pod, images: dict[str, str]) -> Pod:
    """`pod` with the containers named in `images` given those images."""
    containers = [
        c.model_copy(update={"image": images[c.name]}) if c.name in images else c
        for c in pod.spec.containers
    ]
    return pod.model_copy(update={"spec": pod.spec.model_copy(update={"containers": containers})})


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
