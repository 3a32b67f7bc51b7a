"""Probes for real: busybox containers under NativeRuntime and PodWorker, and one pod
through the real agent and scheduler (the READY column, `/api/v1/status`).

exec probes run inside the container (its namespaces and cgroup); httpGet and tcpSocket
probes connect from inside the pod's network namespace, where only loopback exists.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.runtime.native.cgroups import CgroupDriver
from agent.runtime.native.images import ImageStore
from agent.runtime.native.runtime import NativeRuntime
from agent.supervisor import PodWorker
from common.models import ContainerStatus, Pod
from tests.conftest import SchedulerProcess, wait_for, wait_until
from tests.integration.test_agent_e2e import (  # noqa: F401 (fixtures)
    AgentProcess,
    agent,
    container_pid,
    corral,
    image_layout,
    pod_json,
)
from tests.nativefixtures import busybox_store, cgroup_driver

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> ImageStore:
    """An image store with busybox:latest."""
    return busybox_store(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def cgroups() -> Iterator[CgroupDriver]:
    """The machine's cgroup driver, below a parent of this module's own."""
    with cgroup_driver(f"corral-probes-{os.getpid()}") as driver:
        yield driver


@pytest.fixture
async def runtime(
    tmp_path: Path, images: ImageStore, cgroups: CgroupDriver
) -> AsyncIterator[NativeRuntime]:
    """A started NativeRuntime; every pod left is removed at the end."""
    rt = NativeRuntime(tmp_path / "state", images, cgroups)
    await rt.start()
    try:
        yield rt
    finally:
        for info in await rt.recover():
            await rt.remove_pod(info.uid)
        await rt.close()


class Watched:
    """A PodWorker running one pod, with the events it emitted."""

    def __init__(self, runtime: NativeRuntime, pod: Pod, state: Path) -> None:
        self.pod = pod
        self.uid = pod.metadata.uid or ""
        self.events: list[tuple[str, str, str]] = []  # kind, reason, message
        self.worker = PodWorker(pod, runtime, lambda uid: None, state / f"{self.uid}.json")
        self.worker.on_event = lambda pod, reason, message, kind: self.events.append(
            (kind, reason, message)
        )

    def container(self, name: str = "main") -> ContainerStatus:
        return next(s for s in self.worker.status().container_statuses if s.name == name)

    def condition(self, kind: str) -> str:
        return next(c.status for c in self.worker.status().conditions if c.type == kind)

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]


@pytest.fixture
async def watch(runtime: NativeRuntime, tmp_path: Path) -> AsyncIterator[Callable[[Pod], Any]]:
    """Start PodWorkers for pods; stopped (pod removed) at the end."""
    started: list[Watched] = []

    async def start(pod: Pod) -> Watched:
        watched = Watched(runtime, pod, tmp_path)
        await watched.worker.start()
        started.append(watched)
        return watched

    yield start
    for watched in started:
        await watched.worker.stop(grace=0)


def make_pod(*containers: dict[str, Any], **spec: Any) -> Pod:
    return Pod.model_validate(
        {
            "metadata": {"name": "probed", "namespace": "default", "uid": str(uuid.uuid4())},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": list(containers), **spec},
        }
    )


def sh(name: str, script: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox", "command": ["sh", "-c", script], **fields}


def exec_probe(command: str, **fields: Any) -> dict[str, Any]:
    return {"exec": {"command": ["sh", "-c", command]}, "periodSeconds": 1, **fields}


async def test_exec_runs_in_the_container_and_is_killed_on_timeout(
    runtime: NativeRuntime,
) -> None:
    """The command sees the container's PID 1, hostname, root, env and cgroup; a timeout
    kills it and everything it started, and leaves the container running."""
    pod = make_pod(sh("main", "exec sleep 600", env=[{"name": "GREETING", "value": "hi"}]))
    uid = pod.metadata.uid or ""
    await runtime.create_pod(pod)
    info = await runtime.start_container(pod, "main")
    script = (
        "tr '\\0' ' ' </proc/1/cmdline; echo; hostname; echo $GREETING; ls /; cat /proc/self/cgroup"
    )
    code, output = await runtime.exec_in_container(uid, "main", ["sh", "-c", script], 5)
    lines = output.decode().splitlines()
    assert code == 0, output
    assert lines[0].split() == ["sleep", "600"], lines  # PID 1 is the container's process
    assert lines[1:3] == ["probed", "hi"]
    assert "oldroot" not in output.decode() and "bin" in lines
    assert any(line.endswith(f"/pod-{uid}/main") for line in lines), lines
    assert await runtime.exec_in_container(uid, "main", ["sh", "-c", "exit 3"], 5) == (3, b"")
    code, output = await runtime.exec_in_container(uid, "main", ["no-such-command"], 5)
    assert code == 127 and b"not found" in output

    began = time.monotonic()
    with pytest.raises(TimeoutError):
        await runtime.exec_in_container(
            uid, "main", ["sh", "-c", "sleep 30 & setsid sleep 31 & sleep 32"], 1
        )
    assert time.monotonic() - began < 3
    # Only the container's own process is left in its cgroup.
    await wait_until(lambda: runtime.cgroups.procs(f"pod-{uid}/main") == [info.pid], within=5)
    await runtime.remove_pod(uid)


async def test_failed_exec_liveness_restarts_the_container(watch: Any) -> None:
    """`test -f /tmp/healthy` fails once the file is deleted: Unhealthy, Killing, restart."""
    script = (
        "touch /tmp/healthy; "
        # The first run deletes the file after a second; the restarted one keeps it.
        "if [ ! -f /data/ran ]; then touch /data/ran; sleep 1; rm /tmp/healthy; fi; "
        "exec sleep 600"
    )
    pod = make_pod(
        sh(
            "main",
            script,
            livenessProbe=exec_probe("test -f /tmp/healthy", failureThreshold=2),
            volumeMounts=[{"name": "data", "mountPath": "/data"}],
        ),
        volumes=[{"name": "data", "emptyDir": {}}],
    )
    w = await watch(pod)
    await wait_until(
        lambda: w.container().restart_count == 1 and w.container().state.running, within=20
    )
    assert ("Warning", "Unhealthy", "Liveness probe failed: exit code 1") in w.events
    assert (
        "Normal",
        "Killing",
        "Container main failed liveness probe, will be restarted",
    ) in w.events
    assert w.reasons().count("Killing") == 1
    last = w.container().last_state.terminated
    assert last is not None and last.exit_code == 137  # PID 1 ignores SIGTERM: killed after grace
    await wait_until(lambda: w.container().ready)


async def test_http_and_tcp_readiness_follow_the_server(runtime: NativeRuntime, watch: Any) -> None:
    """Ready once busybox httpd serves (httpGet on a named port, tcpSocket from a second
    container: the pod's network is shared), not ready once it stops; never restarted."""
    web = (
        "mkdir /www; echo ok > /www/index.html; "
        "while [ ! -f /tmp/start ]; do sleep 0.1; done; "
        "httpd -p 127.0.0.1:8080 -h /www; "
        "while [ ! -f /tmp/stop ]; do sleep 0.1; done; "
        "killall httpd; exec sleep 600"
    )
    fast = {"periodSeconds": 1, "failureThreshold": 1}
    pod = make_pod(
        sh(
            "web",
            web,
            ports=[{"name": "http", "containerPort": 8080}],
            readinessProbe={"httpGet": {"path": "/index.html", "port": "http"}, **fast},
        ),
        sh("side", "exec sleep 600", readinessProbe={"tcpSocket": {"port": 8080}, **fast}),
    )
    w = await watch(pod)
    uid = pod.metadata.uid or ""
    await wait_until(lambda: w.container("web").state.running and w.container("side").state.running)

    def failed(prefix: str) -> bool:
        return any(m.startswith(prefix) for _, r, m in w.events if r == "Unhealthy")

    # Both probes ran from inside the pod's network, and found nothing listening.
    await wait_until(
        lambda: failed('Readiness probe failed: Get "http://127.0.0.1:8080/index.html"')
    )
    await wait_until(
        lambda: failed("Readiness probe failed: dial tcp 127.0.0.1:8080: Connection refused")
    )
    assert not w.container("web").ready and not w.container("side").ready
    assert w.condition("Ready") == "False" and w.worker.status().phase == "Running"

    await runtime.exec_in_container(uid, "web", ["touch", "/tmp/start"], 5)
    await wait_until(lambda: w.container("web").ready and w.container("side").ready)
    assert w.condition("Ready") == "True" and w.condition("ContainersReady") == "True"

    await runtime.exec_in_container(uid, "web", ["touch", "/tmp/stop"], 5)
    await wait_until(lambda: not w.container("web").ready and not w.container("side").ready)
    assert w.condition("Ready") == "False"
    assert all(w.container(c).restart_count == 0 for c in ("web", "side"))
    assert all(w.container(c).state.running for c in ("web", "side"))
    assert "Killing" not in w.reasons()


async def test_startup_probe_holds_liveness_back(runtime: NativeRuntime, watch: Any) -> None:
    """A liveness probe that would fail before start-up only runs once startup passed."""
    script = "sleep 1; touch /tmp/started; exec sleep 600"
    pod = make_pod(
        sh(
            "main",
            script,
            startupProbe=exec_probe("test -f /tmp/started", failureThreshold=10),
            # Would kill the container at its first attempt before /tmp/started exists.
            livenessProbe=exec_probe("test -f /tmp/started && touch /tmp/live", failureThreshold=1),
        )
    )
    w = await watch(pod)
    uid = pod.metadata.uid or ""
    await wait_until(lambda: w.container().state.running)
    assert w.container().started is False and w.container().ready is False
    await wait_until(lambda: w.container().started)
    await wait_until(lambda: w.container().ready)

    async def liveness_ran() -> bool:
        code, _ = await runtime.exec_in_container(uid, "main", ["test", "-f", "/tmp/live"], 5)
        return code == 0

    deadline = time.monotonic() + 10
    while not await liveness_ran():
        assert time.monotonic() < deadline, "the liveness probe never ran"
        await asyncio.sleep(0.1)
    assert w.container().restart_count == 0 and "Killing" not in w.reasons()
    assert all(m.startswith("Startup probe failed") for _, r, m in w.events if r == "Unhealthy")


async def test_startup_probe_failure_kills(watch: Any) -> None:
    """A startup probe that never passes is a kill, like a failed liveness probe."""
    pod = make_pod(
        sh("main", "exec sleep 600", startupProbe=exec_probe("false", failureThreshold=2)),
        restartPolicy="Never",
    )
    w = await watch(pod)
    await wait_until(lambda: w.container().state.terminated is not None)
    assert "Container main failed startup probe, will be restarted" in [m for *_, m in w.events]
    assert w.worker.status().phase == "Failed"


POD = """
apiVersion: v1
kind: Pod
metadata:
  name: gated
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "trap 'touch /tmp/ready' USR1; while true; do sleep 0.2; done"]
    readinessProbe:
      exec: {command: ["test", "-f", "/tmp/ready"]}
      periodSeconds: 1
"""


def test_readiness_through_agent_and_scheduler(agent: AgentProcess) -> None:  # noqa: F811
    """A running pod failing readiness: READY 0/1, counted in status pods.notReady, Unhealthy
    events; once ready, 1/1 and no longer counted."""
    s: SchedulerProcess = agent.scheduler
    assert corral(s, "apply", "-f", "-", stdin=POD).returncode == 0

    def not_ready_count() -> int:
        return int(s.get("/api/v1/status")["pods"]["notReady"])

    wait_for(lambda: pod_json(s, "gated")["status"]["phase"] == "Running", 30)
    wait_for(lambda: not_ready_count() == 1, 10)
    assert " 0/1 " in corral(s, "get", "pods").stdout
    events = wait_for(
        lambda: [e for e in s.get("/api/v1/events")["items"] if e["reason"] == "Unhealthy"], 10
    )
    assert events[0]["type"] == "Warning"
    assert events[0]["message"].startswith("Readiness probe failed: exit code 1")

    os.kill(container_pid(agent, "gated"), signal.SIGUSR1)
    wait_for(lambda: not_ready_count() == 0, 10)
    assert " 1/1 " in corral(s, "get", "pods").stdout
    ready = {c["type"]: c["status"] for c in pod_json(s, "gated")["status"]["conditions"]}
    assert ready["Ready"] == "True" and ready["ContainersReady"] == "True"
