"""Under `Delegate=yes` the agent puts the pods' cgroups below its own cgroup.

systemd is not PID 1 here, so the test does what it would do for the unit: make the
unit's cgroup (`corral-deleg-<pid>.service`) in every hierarchy and start the agent in
it, with `--cgroup-delegated` as the unit's ExecStart has it. A pod's container must
then live below `<unit>/pods/`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.runtime.native.cgroups import probe, read_mounts
from tests.conftest import ROOT, TOKEN, SchedulerProcess, wait_for
from tests.imagebuild import build_busybox_rootfs, write_oci_layout
from tests.integration.test_agent_e2e import pod_json

pytestmark = [pytest.mark.root, pytest.mark.timeout(90)]

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "nested"},
    "spec": {
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "300"]}],
    },
}


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """A busybox OCI layout named busybox:latest."""
    return write_oci_layout(build_busybox_rootfs(tmp_path / "rootfs"), tmp_path / "layout")


def hierarchies() -> list[str]:
    """Every cgroup mount (v1 controllers, named ones, the unified cgroup2)."""
    return [
        m.mount_point
        for m in read_mounts("/proc/self/mountinfo")
        if m.fstype in ("cgroup", "cgroup2") and m.mount_point.startswith("/sys/fs/cgroup")
    ]


@pytest.fixture
def unit_cgroup() -> Iterator[str]:
    """The cgroup systemd would give the unit, in every hierarchy; removed afterwards."""
    name = f"corral-deleg-{os.getpid()}.service"
    made = []
    for mount in hierarchies():
        path = Path(mount) / name
        with contextlib.suppress(OSError):
            path.mkdir()
            made.append(path)
    yield name
    for path in made:
        for sub in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if sub.is_dir():
                with contextlib.suppress(OSError):
                    sub.rmdir()
        with contextlib.suppress(OSError):
            path.rmdir()


def cgroup_of(pid: int, hierarchy: str) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        hid, controllers, path = line.split(":", 2)
        if (hierarchy == "" and hid == "0") or hierarchy in controllers.split(","):
            return path
    raise AssertionError(f"{pid} is in no {hierarchy or 'cgroup2'} hierarchy")


def test_pods_go_below_the_agents_delegated_cgroup(
    bare_scheduler: SchedulerProcess, unit_cgroup: str, layout: Path, tmp_path: Path
) -> None:
    """The container's cgroup is <unit>/pods/...; nothing is made at the root's `pods`."""
    s = bare_scheduler
    state = tmp_path / "agent"
    subprocess.run(
        [sys.executable, "-m", "agent.main", "image", "import", str(layout),
         "--root", str(state / "images")],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    join = " ".join(
        f"echo $$ > {mount}/{unit_cgroup}/cgroup.procs;" for mount in hierarchies()
    )  # as systemd starts a unit's process in its cgroup
    agent = subprocess.Popen(
        [
            "sh", "-c", f'{join} exec "$@"', "sh",
            sys.executable, "-m", "agent.main",
            "--server", s.url, "--join-token", TOKEN, "--node-name", "node-d",
            "--state-dir", str(state), "--cgroup-parent", "pods", "--cgroup-delegated",
            "--metrics-listen", "",
        ],
        cwd=ROOT,
        stdout=open(tmp_path / "agent.log", "wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    v1 = any("memory" in Path(m).name for m in hierarchies())
    hierarchy = "memory" if v1 else ""
    try:
        wait_for(lambda: s.request("GET", "/api/v1/nodes/node-d").status == 200, timeout=30)
        assert cgroup_of(agent.pid, hierarchy).startswith(f"/{unit_cgroup}")
        assert s.request("POST", "/api/v1/namespaces/default/pods", POD).status == 201
        wait_for(lambda: pod_json(s, "nested")["status"]["phase"] == "Running", timeout=30)
        uid = pod_json(s, "nested")["metadata"]["uid"]
        pid_file = next((state / "pods" / uid).rglob("init.pid"))
        container = int(json.loads(pid_file.read_text())["pid"])
        path = cgroup_of(container, hierarchy)
        assert path.startswith(f"/{unit_cgroup}/pods/"), path
        assert not Path("/sys/fs/cgroup/memory/pods" if v1 else "/sys/fs/cgroup/pods").exists()
        s.request("DELETE", "/api/v1/namespaces/default/pods/nested?gracePeriodSeconds=0")
        wait_for(lambda: s.request("GET", "/api/v1/namespaces/default/pods/nested").status == 404)
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        with contextlib.suppress(Exception):
            probe(f"{unit_cgroup}/pods").remove("")
