"""The PodWorker's own troubles, for real: busybox containers under NativeRuntime."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.runtime.native.cgroups import CgroupDriver
from agent.runtime.native.images import ImageStore
from agent.runtime.native.runtime import NativeRuntime
from agent.supervisor import PodWorker, Supervisor
from common.models import ContainerStatus, Pod
from scheduler.eviction import replacement
from tests.conftest import wait_until
from tests.imagebuild import DEFAULT_ENV
from tests.integration.test_probes import (  # noqa: F401 (fixtures)
    cgroups,
    make_pod,
    runtime,
    sh,
)
from tests.nativefixtures import busybox_store
from tests.services import tmpfs

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> ImageStore:
    """An image store with busybox:latest, and the same tree as busybox:v2, whose config
    sets IMAGE=v2 (another image, another imageID)."""
    v2 = {"env": [*DEFAULT_ENV, "IMAGE=v2"]}
    return busybox_store(tmp_path_factory.mktemp("images"), **{"busybox:v2": v2})


@pytest.fixture
def full_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a tmpfs that is full: every write to it fails with ENOSPC."""
    with tmpfs(tmp_path / "full", "64k") as path:
        fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            with pytest.raises(OSError):
                while True:
                    os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
        yield path


async def test_a_full_disk_does_not_end_the_restarts(
    runtime: NativeRuntime,  # noqa: F811
    full_dir: Path,
) -> None:
    """Restart counts that cannot be saved (disk full) are logged; the container is still
    restarted by its policy."""
    pod = make_pod(sh("main", "sleep 0.2; exit 1"), restartPolicy="OnFailure")
    worker = PodWorker(pod, runtime, lambda uid: None, full_dir / "pod.json")
    await worker.start()
    try:
        await wait_until(lambda: worker.containers["main"].restart_count >= 3, within=20)
    finally:
        await worker.stop(grace=0)


async def test_a_container_ended_for_good_is_not_run_again_by_a_new_worker(
    runtime: NativeRuntime,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A container ended for good under its restart policy stays ended for the next
    agent's worker even when the runtime kept no record of it (its end is saved, with
    the run's containerID and imageID)."""
    pod = make_pod(sh("main", "echo once"), restartPolicy="Never")
    saved = tmp_path / "pod.json"
    first = PodWorker(pod, runtime, lambda uid: None, saved)
    await first.start()
    await wait_until(lambda: first.status().phase == "Succeeded", within=20)
    await wait_until(saved.exists, within=5)
    ended = first.status().container_statuses[0]
    assert ended.container_id and ended.image_id
    first.detach()  # the agent went away...
    await runtime.remove_pod(first.uid)  # ...and the runtime lost the pod with it
    second = PodWorker(pod, runtime, lambda uid: None, saved)
    await second.start()
    try:
        status = second.status()
        assert status.phase == "Succeeded"
        main = status.container_statuses[0]
        terminated = main.state.terminated
        assert terminated is not None and terminated.exit_code == 0
        assert terminated.container_id == main.container_id == ended.container_id
        assert main.image_id == ended.image_id
        assert not runtime.container_dir(second.uid, "main").exists()  # never started
    finally:
        await second.stop(grace=0)


async def test_a_pod_is_said_stopped_only_once_it_is(
    runtime: NativeRuntime,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stop that fails (the pod's directory cannot be removed: made immutable here) is
    tried again, and the pod is reported stopped only when a stop succeeds. It was
    reported stopped at once, and never stopped again: the scheduler removed the pod and
    what was left of it stayed on the node for good."""
    stopped: list[str] = []
    supervisor = Supervisor(runtime, tmp_path / "agent", lambda uid: None)
    supervisor.on_stopped = stopped.append
    await supervisor.recover()
    pod = make_pod(sh("main", "exec sleep 600"))
    uid = pod.metadata.uid or ""
    await supervisor.apply([pod], [])
    await wait_until(lambda: supervisor.workers[uid].status().phase == "Running", within=20)
    pinned = runtime.pod_dir(uid)
    await asyncio.to_thread(subprocess.run, ["chattr", "+i", str(pinned)], check=True)

    def failures() -> int:
        return sum("stopping pod default/probed failed" in r.message for r in caplog.records)

    try:
        await supervisor.apply([], [uid])
        await wait_until(lambda: failures() >= 2, within=10)  # the first try, then after 1 s
        assert stopped == [] and uid not in supervisor.workers
        await supervisor.apply([], [uid], full=True)  # told again (a resync): still not
        assert stopped == []
    finally:
        await asyncio.to_thread(subprocess.run, ["chattr", "-i", str(pinned)], check=True)
    await wait_until(lambda: stopped == [uid], within=10)  # the next try, after 2 s
    assert not pinned.exists()
    await supervisor.close()


async def test_a_status_names_the_run_and_its_image_across_restarts_and_agents(
    runtime: NativeRuntime,  # noqa: F811
    images: ImageStore,
    cgroups: CgroupDriver,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A running container's status has the kubelet's ids: containerID `corral://<64 hex>`,
    new for every run, and imageID `<repository>@<manifest digest>` (containerd's form).
    A restart is a new run, whose predecessor's id stays in lastState; a new agent's
    Supervisor, adopting the pods, reports the same ids from the runtime's records, also
    for a container that ended while no agent ran."""
    image_id = f"docker.io/library/busybox@{images.require('busybox').digest}"
    pod = make_pod(sh("main", "exec sleep 600"))
    ender = make_pod(sh("main", "exec sleep 600"), restartPolicy="Never")

    def main(supervisor: Supervisor, of: Pod) -> ContainerStatus | None:
        """The container's status once it has run (it has a containerID)."""
        status = supervisor.status(of.metadata.uid or "")
        found = status.container_statuses[0] if status is not None else None
        return found if found is not None and found.container_id else None

    def running(supervisor: Supervisor, restarts: int) -> ContainerStatus | None:
        found = main(supervisor, pod)
        if found is None or found.state.running is None or found.restart_count != restarts:
            return None
        return found

    def kill(of: Pod) -> None:
        """SIGKILL its init (not stop_container, which would wait for an exit that a
        restart then clears)."""
        cdir = runtime.container_dir(of.metadata.uid or "", "main")
        os.kill(json.loads((cdir / "init.pid").read_text())["pid"], signal.SIGKILL)

    supervisor = Supervisor(runtime, tmp_path / "agent", lambda uid: None)
    await supervisor.recover()
    await supervisor.apply([pod, ender], [])
    first = await wait_until(lambda: running(supervisor, 0), within=20)
    assert first.image_id == image_id
    assert re.fullmatch(r"corral://[0-9a-f]{64}", first.container_id or ""), first.container_id

    kill(pod)  # policy Always: restarted at once
    second = await wait_until(lambda: running(supervisor, 1), within=20)
    assert re.fullmatch(r"corral://[0-9a-f]{64}", second.container_id or "")
    assert second.container_id != first.container_id and second.image_id == image_id
    last = second.last_state.terminated
    assert last is not None and last.container_id == first.container_id
    wire = second.to_dict()
    assert (wire["containerID"], wire["imageID"]) == (second.container_id, image_id)
    assert wire["lastState"]["terminated"]["containerID"] == first.container_id

    ended = await wait_until(lambda: main(supervisor, ender), within=20)
    await supervisor.close()  # the agent goes; the containers run on
    kill(ender)  # ...and this one ends meanwhile
    exit_file = runtime.container_dir(ender.metadata.uid or "", "main") / "exit.json"
    await wait_until(exit_file.exists, within=10)
    again = NativeRuntime(runtime.state_dir, images, cgroups)
    await again.start()
    adopted = Supervisor(again, tmp_path / "agent", lambda uid: None)
    try:
        await adopted.recover()
        found = await wait_until(lambda: running(adopted, 1), within=20)
        assert (found.container_id, found.image_id) == (second.container_id, image_id)
        assert found.last_state == second.last_state
        done = await wait_until(lambda: (s := main(adopted, ender)) and s.state.terminated and s)
        assert (done.container_id, done.image_id) == (ended.container_id, image_id)
        assert done.state.terminated is not None
        assert done.state.terminated.container_id == ended.container_id
    finally:
        await adopted.close()
        await again.close()


async def test_a_replacement_keeps_the_restarts_and_the_end_of_its_predecessor(
    runtime: NativeRuntime,  # noqa: F811
    images: ImageStore,
    cgroups: CgroupDriver,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A pod replaced after its node was lost comes with its predecessor's restarts plus
    one and lastState `NodeLost` (scheduler/eviction.py); the node that runs it goes on
    from there, and so does a new agent that adopts it. The first status from the node
    said 0 restarts and dropped the NodeLost end."""
    pod = replacement(make_pod(sh("main", "exec sleep 600")), "NodeLost", "node gone")
    uid = pod.metadata.uid or ""
    pod.status.container_statuses[0].restart_count = 3  # 2 restarts, then the node lost

    def running(supervisor: Supervisor, restarts: int) -> ContainerStatus | None:
        status = supervisor.status(uid)
        found = status.container_statuses[0] if status is not None else None
        if found is None or found.state.running is None or found.restart_count != restarts:
            return None
        return found

    supervisor = Supervisor(runtime, tmp_path / "agent", lambda uid: None)
    await supervisor.recover()
    await supervisor.apply([pod], [])
    first = await wait_until(lambda: running(supervisor, 3), within=20)
    assert first.last_state.terminated is not None
    assert first.last_state.terminated.reason == "NodeLost"

    cdir = runtime.container_dir(uid, "main")
    os.kill(json.loads((cdir / "init.pid").read_text())["pid"], signal.SIGKILL)
    second = await wait_until(lambda: running(supervisor, 4), within=20)
    assert second.last_state.terminated is not None
    assert second.last_state.terminated.exit_code == 137

    await supervisor.close()  # the agent goes; the container runs on
    again = NativeRuntime(runtime.state_dir, images, cgroups)
    await again.start()
    adopted = Supervisor(again, tmp_path / "agent", lambda uid: None)
    try:
        await adopted.recover()
        found = await wait_until(lambda: running(adopted, 4), within=20)
        assert found.last_state == second.last_state
    finally:
        await adopted.close()
        await again.close()


def _with_image(pod: Pod, image: str) -> Pod:
    """The pod as the scheduler sends it after a pod update changed its image."""
    wire = pod.to_dict()
    wire["spec"]["containers"][0]["image"] = image
    return Pod.model_validate(wire)


async def test_a_changed_image_restarts_the_container_with_it(
    runtime: NativeRuntime,  # noqa: F811
    images: ImageStore,
    cgroups: CgroupDriver,  # noqa: F811
    tmp_path: Path,
) -> None:
    """An upsert of a pod the supervisor runs, with another image (a pod update), restarts
    that container with it, as the kubelet restarts a container whose definition changed:
    Killing (definition changed) within the grace period, then a new run of the new image
    (a new containerID and imageID, the process a new one, IMAGE=v2 from its config),
    restartCount + 1 and the killed run in lastState, whatever the restart policy (Never
    here). The next agent adopts that run as it is: its welcome, the same pod, restarts
    nothing, although the runtime's own record of the pod has the old image."""
    events: list[tuple[str, str]] = []
    pod = make_pod(sh("main", "exec sleep 600"), restartPolicy="Never")
    uid = pod.metadata.uid or ""
    supervisor = Supervisor(runtime, tmp_path / "agent", lambda uid: None)
    supervisor.on_event = lambda pod, reason, message, kind: events.append((reason, message))
    await supervisor.recover()

    def running(sup: Supervisor, restarts: int) -> ContainerStatus | None:
        status = sup.status(uid)
        found = status.container_statuses[0] if status is not None else None
        ok = found is not None and found.state.running is not None
        return found if ok and found is not None and found.restart_count == restarts else None

    def init_pid() -> int:
        cdir = runtime.container_dir(uid, "main")
        return int(json.loads((cdir / "init.pid").read_text())["pid"])

    async def env_image(rt: NativeRuntime) -> str:
        code, out = await rt.exec_in_container(uid, "main", ["sh", "-c", "echo ${IMAGE:-v1}"], 5)
        assert code == 0, out
        return out.decode().strip()

    await supervisor.apply([pod], [])
    first = await wait_until(lambda: running(supervisor, 0), within=20)
    assert first.image == "busybox" and await env_image(runtime) == "v1"
    first_pid = init_pid()

    updated = _with_image(pod, "busybox:v2")
    await supervisor.apply([updated], [])
    assert ("Killing", "Container main definition changed, will be restarted") in events
    second = await wait_until(lambda: running(supervisor, 1), within=20)
    assert second.image == "busybox:v2"
    assert second.image_id == f"docker.io/library/busybox@{images.require('busybox:v2').digest}"
    assert second.image_id != first.image_id and second.container_id != first.container_id
    last = second.last_state.terminated
    assert last is not None and last.container_id == first.container_id
    assert await env_image(runtime) == "v2"
    assert init_pid() != first_pid
    assert not await asyncio.to_thread(os.path.exists, f"/proc/{first_pid}")
    assert [r for r, _ in events].count("Started") == 2

    await supervisor.close()  # the agent goes; the container runs on
    again = NativeRuntime(runtime.state_dir, images, cgroups)
    await again.start()
    adopted = Supervisor(again, tmp_path / "agent", lambda uid: None)
    later: list[str] = []
    adopted.on_event = lambda pod, reason, message, kind: later.append(reason)
    try:
        await adopted.recover()
        found = await wait_until(lambda: running(adopted, 1), within=20)
        assert (found.image, found.container_id) == ("busybox:v2", second.container_id)
        await adopted.apply([updated], [], full=True)  # its welcome
        assert "Killing" not in later
        found = await wait_until(lambda: running(adopted, 1), within=5)
        assert found.container_id == second.container_id and await env_image(again) == "v2"
    finally:
        await adopted.close(stop_pods=True)
        await again.close()


async def test_a_container_waiting_for_a_missing_image_starts_at_once_with_a_new_one(
    runtime: NativeRuntime,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A container that cannot start (its image is not on the node: ErrImageNeverPull,
    waiting out a 60 s backoff) starts as soon as an update names an image that is: the
    backoff belonged to the old definition. It never ran, so no restart is counted."""
    pod = make_pod(
        sh("main", "exec sleep 600", image="busybox:missing"),
        restartPolicy="Always",
    )
    wire = pod.to_dict()
    wire["metadata"]["annotations"] = {"corral.dev/restart-backoff-initial": "60"}
    pod = Pod.model_validate(wire)
    uid = pod.metadata.uid or ""
    supervisor = Supervisor(runtime, tmp_path / "agent", lambda uid: None)
    await supervisor.recover()
    try:
        await supervisor.apply([pod], [])

        def waiting() -> str | None:
            status = supervisor.status(uid)
            state = status.container_statuses[0].state if status else None
            return state.waiting.reason if state and state.waiting else None

        await wait_until(lambda: waiting() == "ErrImageNeverPull", within=20)
        await supervisor.apply([_with_image(pod, "busybox")], [])
        started = await wait_until(
            lambda: (s := supervisor.status(uid)) and s.container_statuses[0].state.running and s,
            within=10,
        )
        main = started.container_statuses[0]
        assert (main.image, main.restart_count) == ("busybox", 0)
    finally:
        await supervisor.close(stop_pods=True)


async def test_a_restart_for_a_new_image_survives_an_agent_restart_under_never(
    runtime: NativeRuntime,  # noqa: F811
    images: ImageStore,
    cgroups: CgroupDriver,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A container stopped for its new image, whose new run has not started when the
    agent goes (its image not there yet: a long pull, here one that cannot be), is
    restarted by the next agent whatever the restart policy, as the agent before had
    decided: the stopped run's exit, already counted, is not taken for the container's
    own end. Under Never it was: the container ended for good and the pod Failed."""
    pod = make_pod(sh("main", "exec sleep 600"), restartPolicy="Never")
    uid = pod.metadata.uid or ""
    missing = _with_image(pod, "busybox:missing")

    def main(sup: Supervisor) -> ContainerStatus | None:
        status = sup.status(uid)
        return status.container_statuses[0] if status is not None else None

    def waiting_for_image(sup: Supervisor) -> bool:
        found = main(sup)
        waiting = found.state.waiting if found is not None else None
        return waiting is not None and waiting.reason == "ErrImageNeverPull"

    supervisor = Supervisor(runtime, tmp_path / "agent", lambda uid: None)
    await supervisor.recover()
    await supervisor.apply([pod], [])
    await wait_until(lambda: (found := main(supervisor)) and found.state.running, within=20)
    await supervisor.apply([missing], [])
    await wait_until(lambda: waiting_for_image(supervisor), within=20)
    await supervisor.close()  # the agent goes between the kill and the new run

    again = NativeRuntime(runtime.state_dir, images, cgroups)
    await again.start()
    adopted = Supervisor(again, tmp_path / "agent", lambda uid: None)
    try:
        await adopted.recover()
        await adopted.apply([missing], [], full=True)  # its welcome
        await wait_until(lambda: waiting_for_image(adopted), within=10)
        status = adopted.status(uid)
        assert status is not None and status.phase != "Failed"
        await adopted.apply([_with_image(pod, "busybox:v2")], [])
        found = await wait_until(
            lambda: (found := main(adopted)) and found.state.running and found, within=20
        )
        assert (found.image, found.restart_count) == ("busybox:v2", 1)
        last = found.last_state.terminated
        assert last is not None and last.exit_code == 137  # the run stopped for its image
    finally:
        await adopted.close(stop_pods=True)
        await again.close()
