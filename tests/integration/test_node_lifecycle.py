"""Node health with real processes: a lost node's pods are replaced; a blip loses nothing."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from common import protocol
from scheduler.api.ops import UNACKED_REPORT_SECONDS
from tests.conftest import HollowProcess, SchedulerProcess, ready_nodes, wait_for
from tests.integration.test_api import pod
from tests.integration.test_node_credentials import (  # noqa: F401 (http: a fixture)
    dial,
    events,
    http,
    join,
)

GRACE, EVICTION = 1.0, 2.0


def started_fast_scheduler(tmp_path: Path, *extra: str) -> SchedulerProcess:
    """A scheduler with short grace and eviction timeouts, started."""
    sched = SchedulerProcess(
        tmp_path / "scheduler",
        [
            "--node-grace-seconds",
            str(GRACE),
            "--eviction-seconds",
            str(EVICTION),
            "--heartbeat-seconds",
            "0.2",
            *extra,
        ],
    )
    sched.start()
    return sched


@pytest.fixture
def fast_scheduler(tmp_path: Path) -> Iterator[SchedulerProcess]:
    sched = started_fast_scheduler(tmp_path)
    try:
        yield sched
    finally:
        sched.stop()


def pods_by_name(s: SchedulerProcess) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in s.get("/api/v1/pods")["items"]}


def node_ready(s: SchedulerProcess, name: str) -> str:
    node = s.get(f"/api/v1/nodes/{name}")
    return next(c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready")


def running_pod(s: SchedulerProcess, name: str) -> dict[str, Any]:
    """Create a pod and wait until it runs; the pod as then listed."""
    s.request("POST", "/api/v1/namespaces/default/pods", pod(name))
    return wait_for(lambda: (p := pods_by_name(s)[name])["status"]["phase"] == "Running" and p)


def pause(proc: subprocess.Popen[Any], seconds: float) -> None:
    """SIGSTOP `proc` for `seconds`, then SIGCONT."""
    proc.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGCONT)


def assert_nothing_changes(s: SchedulerProcess, first: dict[str, Any], seconds: float) -> None:
    """For `seconds`: the pod `first` keeps its uid and its node stays Ready."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now = pods_by_name(s)[first["metadata"]["name"]]
        assert now["metadata"]["uid"] == first["metadata"]["uid"]
        assert node_ready(s, first["spec"]["nodeName"]) == "True"
        time.sleep(0.1)


def test_lost_node_pods_are_replaced_elsewhere(fast_scheduler: SchedulerProcess) -> None:
    """Kill a node's agent: NotReady after the grace period, pods replaced after eviction."""
    a = HollowProcess(fast_scheduler, 1, "--name-prefix", "a")
    b = HollowProcess(fast_scheduler, 1, "--name-prefix", "b")
    try:
        wait_for(lambda: len(ready_nodes(fast_scheduler)) == 2)
        assert fast_scheduler.request("POST", "/api/v1/nodes/b-0000/cordon").status == 200
        specs = [pod("keep"), pod("once", restartPolicy="Never")]
        for spec in specs:
            assert (
                fast_scheduler.request("POST", "/api/v1/namespaces/default/pods", spec).status
                == 201
            )
        wait_for(
            lambda: all(
                p["status"]["phase"] == "Running" for p in pods_by_name(fast_scheduler).values()
            )
        )
        before = pods_by_name(fast_scheduler)
        assert {p["spec"]["nodeName"] for p in before.values()} == {"a-0000"}
        assert fast_scheduler.request("POST", "/api/v1/nodes/b-0000/uncordon").status == 200

        killed_at = time.monotonic()
        a.stop(signal.SIGKILL)
        wait_for(lambda: node_ready(fast_scheduler, "a-0000") == "Unknown", timeout=GRACE + 5)
        assert time.monotonic() - killed_at >= GRACE * 0.9

        def replaced() -> dict[str, dict[str, Any]] | None:
            now = pods_by_name(fast_scheduler)
            keep = now["keep"]
            if keep["status"]["phase"] == "Running" and keep["spec"]["nodeName"] == "b-0000":
                return now
            return None

        after = wait_for(replaced, timeout=GRACE + EVICTION + 5)
        assert after["keep"]["metadata"]["uid"] != before["keep"]["metadata"]["uid"]
        once = after["once"]
        assert once["status"]["phase"] == "Failed" and once["status"]["reason"] == "NodeLost"
        assert once["metadata"]["uid"] == before["once"]["metadata"]["uid"]
    finally:
        a.stop()
        b.stop()


def test_returning_node_is_fenced(fast_scheduler: SchedulerProcess) -> None:
    """A node that comes back after its pods were replaced is told to stop the old incarnations."""
    a = HollowProcess(fast_scheduler, 1, "--name-prefix", "a")
    b = HollowProcess(fast_scheduler, 1, "--name-prefix", "b")
    try:
        wait_for(lambda: len(ready_nodes(fast_scheduler)) == 2)
        fast_scheduler.request("POST", "/api/v1/nodes/b-0000/cordon")
        fast_scheduler.request("POST", "/api/v1/namespaces/default/pods", pod("svc"))
        first = wait_for(
            lambda: (p := pods_by_name(fast_scheduler)["svc"])["status"]["phase"] == "Running" and p
        )
        fast_scheduler.request("POST", "/api/v1/nodes/b-0000/uncordon")
        a.proc.send_signal(signal.SIGSTOP)  # frozen, sockets open: a partition, not a crash
        moved = wait_for(
            lambda: (
                (p := pods_by_name(fast_scheduler)["svc"])["spec"].get("nodeName") == "b-0000"
                and p["status"]["phase"] == "Running"
                and p
            ),
            timeout=GRACE + EVICTION + 5,
        )
        assert moved["metadata"]["uid"] != first["metadata"]["uid"]
        a.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: node_ready(fast_scheduler, "a-0000") == "True", timeout=10)
        # The returning node's reports about the old uid are ignored, the new one stays put.
        time_limit = time.monotonic() + 1.0
        while time.monotonic() < time_limit:
            now = pods_by_name(fast_scheduler)["svc"]
            assert now["metadata"]["uid"] == moved["metadata"]["uid"]
            assert now["spec"]["nodeName"] == "b-0000"
            time.sleep(0.1)
        metrics = fast_scheduler.request("GET", "/metrics").body.decode()
        assert 'corral_node_evictions_total{reason="NodeLost"} 1.0' in metrics
    finally:
        a.proc.send_signal(signal.SIGCONT)
        a.stop()
        b.stop()


def test_blip_shorter_than_grace_loses_nothing(fast_scheduler: SchedulerProcess) -> None:
    """An agent that pauses for less than the grace period stays Ready and keeps its pods."""
    a = HollowProcess(fast_scheduler, 1, "--name-prefix", "a")
    b = HollowProcess(fast_scheduler, 1, "--name-prefix", "b")
    try:
        wait_for(lambda: len(ready_nodes(fast_scheduler)) == 2)
        first = running_pod(fast_scheduler, "steady")
        victim = a if first["spec"]["nodeName"] == "a-0000" else b
        assert victim.proc is not None
        pause(victim.proc, GRACE * 0.5)
        # Watch for longer than grace + eviction: nothing may change.
        assert_nothing_changes(fast_scheduler, first, GRACE + EVICTION + 0.5)
    finally:
        a.proc.send_signal(signal.SIGCONT)
        b.proc.send_signal(signal.SIGCONT)
        a.stop()
        b.stop()


FAILOVER = 6.0


def test_restarted_scheduler_gives_agents_time_to_redial(tmp_path: Path) -> None:
    """After a kill -9 and a restart, an agent back later than grace + eviction (but
    within failover_grace_seconds) keeps its node Ready and its pods; a node that never
    returns is NotReady no sooner than failover_grace_seconds, then its pods move."""
    sched = started_fast_scheduler(tmp_path, "--failover-grace-seconds", str(FAILOVER))
    a = HollowProcess(sched, 1, "--name-prefix", "a")
    b = HollowProcess(sched, 1, "--name-prefix", "b")

    def place(name: str, node: str, other: str) -> dict[str, Any]:
        assert sched.request("POST", f"/api/v1/nodes/{other}/cordon").status == 200
        assert sched.request("POST", "/api/v1/namespaces/default/pods", pod(name)).status == 201
        placed = wait_for(
            lambda: (p := pods_by_name(sched)[name])["status"]["phase"] == "Running" and p
        )
        assert sched.request("POST", f"/api/v1/nodes/{other}/uncordon").status == 200
        assert placed["spec"]["nodeName"] == node
        return placed

    try:
        wait_for(lambda: len(ready_nodes(sched)) == 2)
        late = place("late", "a-0000", "b-0000")
        lost = place("lost", "b-0000", "a-0000")
        sched.kill(signal.SIGKILL)
        a.proc.send_signal(signal.SIGSTOP)  # its agent will be late
        b.stop(signal.SIGKILL)  # this machine will not come back
        restarted = time.monotonic()
        sched.start()

        def unchanged() -> None:
            assert node_ready(sched, "a-0000") == "True"
            assert pods_by_name(sched)["late"]["metadata"]["uid"] == late["metadata"]["uid"]

        deadline = time.monotonic() + GRACE + EVICTION + 0.5
        while time.monotonic() < deadline:  # the late agent's absence: nothing changes
            unchanged()
            time.sleep(0.1)
        a.proc.send_signal(signal.SIGCONT)
        b_not_ready: list[float] = []

        def moved() -> dict[str, Any] | None:
            unchanged()
            if not b_not_ready and node_ready(sched, "b-0000") != "True":
                b_not_ready.append(time.monotonic())
            now = pods_by_name(sched)["lost"]
            if now["metadata"]["uid"] != lost["metadata"]["uid"] and (
                now["spec"].get("nodeName") == "a-0000" and now["status"]["phase"] == "Running"
            ):
                return now
            return None

        wait_for(moved, timeout=FAILOVER + EVICTION + 10)
        assert b_not_ready and b_not_ready[0] - restarted >= FAILOVER
    finally:
        a.proc.send_signal(signal.SIGCONT)
        a.stop()
        b.stop()
        sched.stop()


def _unacked_seconds(s: SchedulerProcess) -> float:
    text = s.request("GET", "/metrics?name[]=corral_agent_desired_unacked_seconds").body.decode()
    [line] = [ln for ln in text.splitlines() if ln.startswith("corral_agent_desired_unacked")]
    return float(line.split()[-1])


def test_an_agent_that_stops_acknowledging_is_reported(tmp_path: Path) -> None:
    """A frozen agent is sent a pod it cannot acknowledge: the scheduler's metric and status
    page report how long it has been behind, and both clear once it catches up."""
    sched = started_fast_scheduler(
        tmp_path, "--node-grace-seconds", "60", "--eviction-seconds", "120"
    )
    a = HollowProcess(sched, 1, "--name-prefix", "a")
    try:
        wait_for(lambda: ready_nodes(sched) == ["a-0000"])
        assert _unacked_seconds(sched) == 0.0
        a.proc.send_signal(signal.SIGSTOP)  # its socket stays open: the frame is sent
        sched.request("POST", "/api/v1/namespaces/default/pods", pod("late"))
        wait_for(lambda: _unacked_seconds(sched) >= UNACKED_REPORT_SECONDS, timeout=30)
        [lagging] = sched.get("/api/v1/status")["nodes"]["desiredNotAcknowledged"]
        assert lagging["name"] == "a-0000"
        assert lagging["unacknowledgedSeconds"] >= UNACKED_REPORT_SECONDS
        assert "1 behind on pod changes" in sched.request("GET", "/").body.decode()
        a.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: _unacked_seconds(sched) == 0.0)
        assert sched.get("/api/v1/status")["nodes"]["desiredNotAcknowledged"] == []
        assert "behind on pod changes" not in sched.request("GET", "/").body.decode()
        wait_for(lambda: pods_by_name(sched)["late"]["status"]["phase"] == "Running")
    finally:
        a.proc.send_signal(signal.SIGCONT)
        a.stop()
        sched.stop()


def test_a_stalled_scheduler_does_not_blame_the_nodes(fast_scheduler: SchedulerProcess) -> None:
    """A scheduler that stops running for longer than the eviction timeout (a VM pause, a
    long garbage-collector pause, SIGSTOP) heard nobody meanwhile: its nodes stay Ready and
    their pods stay put, however long it was gone."""
    agent = HollowProcess(fast_scheduler, 1, "--name-prefix", "a")
    scheduler = fast_scheduler.proc
    assert scheduler is not None
    try:
        wait_for(lambda: len(ready_nodes(fast_scheduler)) == 1)
        first = running_pod(fast_scheduler, "steady")
        pause(scheduler, EVICTION * 1.5)
        assert_nothing_changes(fast_scheduler, first, GRACE + EVICTION + 0.5)
        events = fast_scheduler.get("/api/v1/namespaces/default/events")["items"]
        assert not [e for e in events if e["reason"] == "NodeNotReady"], events
        metrics = fast_scheduler.request("GET", "/metrics").body.decode()
        stalls = re.search(r"^corral_scheduler_stalls_total (\S+)$", metrics, re.M)
        assert stalls and float(stalls.group(1)) >= 1  # the stall is counted
    finally:
        scheduler.send_signal(signal.SIGCONT)
        agent.stop()


async def test_a_never_pod_failed_as_node_lost_stays_failed_when_its_node_returns(
    http: aiohttp.ClientSession,  # noqa: F811
    fast_scheduler: SchedulerProcess,
) -> None:
    """A restartPolicy Never pod of a lost node is Failed (NodeLost) for good: when the
    node comes back still running it, the agent is told to stop it and its report changes
    nothing. It was taken, and the pod ran again as Running, next to whatever replaced it
    (a Job's next pod)."""
    s = fast_scheduler
    agent, credential = await join(http, s, "node-a")
    spec = pod("once", nodeSelector={"kubernetes.io/hostname": "node-a"}, restartPolicy="Never")
    assert s.request("POST", "/api/v1/namespaces/default/pods", spec).status == 201
    desired = await agent.receive_type(protocol.Desired)
    uid = json.loads(desired.upsert[0])["metadata"]["uid"]
    running = json.dumps({"phase": "Running"}).encode()
    report = protocol.PodReport(uid=uid, namespace="default", name="once", status=running)
    await agent.send(protocol.PodStatusUpdate(pods=[report], revision=desired.revision))
    wait_for(lambda: pods_by_name(s)["once"]["status"]["phase"] == "Running")

    # The node goes silent (no heartbeat) until its pod is failed as lost.
    wait_for(lambda: pods_by_name(s)["once"]["status"].get("reason") == "NodeLost", timeout=15)
    await agent.ws.close()

    again, welcome = await dial(http, s, credential, "node-a", [report])
    assert isinstance(welcome, protocol.Welcome), welcome
    assert welcome.stop == [uid] and welcome.pods == []
    await again.send(protocol.Heartbeat())
    await again.send(protocol.PodStatusUpdate(pods=[report]))
    wait_for(lambda: node_ready(s, "node-a") == "True")
    status = pods_by_name(s)["once"]["status"]
    assert (status["phase"], status.get("reason")) == ("Failed", "NodeLost"), status
    await again.ws.close()


def test_a_not_ready_nodes_pods_are_not_ready_until_it_returns(tmp_path: Path) -> None:
    """While its node is NotReady a running pod is not ready either (Ready False, reason
    NodeNotReady, an event; counted in the status's notReady), as Kubernetes' node
    lifecycle marks it; Ready again once the node is, though its agent reports nothing
    new (it was only paused: its link stayed up)."""
    s = started_fast_scheduler(tmp_path, "--eviction-seconds", "60")
    hollow = HollowProcess(s, 1, "--name-prefix", "p")
    assert hollow.proc is not None

    def ready(name: str) -> dict[str, Any]:
        pod = pods_by_name(s)[name]
        return next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")

    try:
        wait_for(lambda: len(ready_nodes(s)) == 1)
        running_pod(s, "web")
        wait_for(lambda: ready("web")["status"] == "True")
        hollow.proc.send_signal(signal.SIGSTOP)
        wait_for(lambda: node_ready(s, "p-0000") == "Unknown", timeout=10)
        marked = wait_for(lambda: (c := ready("web"))["status"] == "False" and c, timeout=10)
        assert marked["reason"] == "NodeNotReady"
        assert s.get("/api/v1/status")["pods"]["notReady"] == 1
        events = s.get("/api/v1/namespaces/default/events")["items"]
        assert any(
            e["reason"] == "NodeNotReady" and e["involvedObject"]["name"] == "web" for e in events
        )
        hollow.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: node_ready(s, "p-0000") == "True", timeout=10)
        back = wait_for(lambda: (c := ready("web"))["status"] == "True" and c, timeout=10)
        assert "reason" not in back
        assert s.get("/api/v1/status")["pods"]["notReady"] == 0
        assert pods_by_name(s)["web"]["status"]["phase"] == "Running"
    finally:
        hollow.proc.send_signal(signal.SIGCONT)
        hollow.stop()
        s.stop()


async def test_a_pod_made_ready_on_a_not_ready_node_is_marked_again(
    http: aiohttp.ClientSession,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A late report of a silent node's agent that says its pod is ready (the node sent no
    heartbeat, so it stays NotReady) is followed by the mark again: Ready False, reason
    NodeNotReady, as Kubernetes' node lifecycle controller marks a pod updated on a
    NotReady node. The controller had settled the node once its pods were marked."""
    s = started_fast_scheduler(tmp_path, "--eviction-seconds", "60")
    try:
        agent, _ = await join(http, s, "node-a")
        spec = pod("web", nodeSelector={"kubernetes.io/hostname": "node-a"})
        assert s.request("POST", "/api/v1/namespaces/default/pods", spec).status == 201
        desired = await agent.receive_type(protocol.Desired)
        uid = json.loads(desired.upsert[0])["metadata"]["uid"]

        def report(at: str) -> protocol.PodReport:
            ready = {"type": "Ready", "status": "True", "lastTransitionTime": at}
            status = json.dumps({"phase": "Running", "conditions": [ready]}).encode()
            return protocol.PodReport(uid=uid, namespace="default", name="web", status=status)

        def ready() -> dict[str, Any]:
            conditions = pods_by_name(s)["web"]["status"].get("conditions", [])
            return next(c for c in conditions if c["type"] == "Ready")

        def marks() -> int:
            """How many times the pod was marked: each mark's event folds into one."""
            found = [e for e in events(s, "NodeNotReady") if e["involvedObject"]["kind"] == "Pod"]
            return sum(e["count"] for e in found)

        # No heartbeat is ever sent: the node goes NotReady within GRACE, its pod is marked.
        await agent.send(protocol.PodStatusUpdate(pods=[report("2024-05-01T12:00:00Z")]))
        wait_for(lambda: node_ready(s, "node-a") == "Unknown", timeout=10)
        wait_for(lambda: ready()["reason"] == "NodeNotReady", timeout=10)
        wait_for(lambda: marks() == 1, timeout=10)

        # A late report: ready again, while the node stays NotReady (no heartbeat).
        await agent.send(protocol.PodStatusUpdate(pods=[report("2024-05-01T12:00:05Z")]))
        wait_for(lambda: marks() == 2, timeout=10)
        marked = ready()
        assert (marked["status"], marked["reason"]) == ("False", "NodeNotReady"), marked
        assert node_ready(s, "node-a") == "Unknown"
        await agent.ws.close()
    finally:
        s.stop()
