"""The PodWorker's own troubles, for real: busybox containers under NativeRuntime."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.runtime.native.runtime import NativeRuntime
from agent.supervisor import PodWorker, Supervisor
from tests.conftest import wait_until
from tests.integration.test_probes import (  # noqa: F401 (fixtures)
    cgroups,
    images,
    make_pod,
    runtime,
    sh,
)

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]


@pytest.fixture
def full_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a tmpfs that is full: every write to it fails with ENOSPC."""
    path = tmp_path / "full"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)], check=True)
    try:
        fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            with pytest.raises(OSError):
                while True:
                    os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


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
    agent's worker even when the runtime kept no record of it (its end is saved)."""
    pod = make_pod(sh("main", "echo once"), restartPolicy="Never")
    saved = tmp_path / "pod.json"
    first = PodWorker(pod, runtime, lambda uid: None, saved)
    await first.start()
    await wait_until(lambda: first.status().phase == "Succeeded", within=20)
    await wait_until(saved.exists, within=5)
    first.detach()  # the agent went away...
    await runtime.remove_pod(first.uid)  # ...and the runtime lost the pod with it
    second = PodWorker(pod, runtime, lambda uid: None, saved)
    await second.start()
    try:
        status = second.status()
        assert status.phase == "Succeeded"
        terminated = status.container_statuses[0].state.terminated
        assert terminated is not None and terminated.exit_code == 0
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
