"""The PodWorker's own troubles, for real: busybox containers under NativeRuntime."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.runtime.native.runtime import NativeRuntime
from agent.supervisor import PodWorker
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
