"""Self-healing with real agents on several "machines" (network namespaces) of one host.

Every assertion is on observed state: API objects, and the processes the agents'
state directories name (`pods/<uid>/containers/<name>/init.pid`, checked against
/proc). Waits poll with a timeout; the only fixed durations are a partition's length
and the periods during which a test asserts that nothing changes (polling meanwhile).
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.e2e.cluster import Cluster, LiveContainer, Node, pod_manifest
from tests.e2e.conftest import EVICTION, GRACE

pytestmark = pytest.mark.root

# Replacements must run within the eviction timeout plus this: placement, the desired
# frame, creating the pod and starting its container take well under a second on an
# idle machine; the rest is room for a loaded 2-core CI runner.
START_MARGIN = 8.0


def converge(c: Cluster, predicate: Callable[[], Any], timeout: float) -> Any:
    """wait_for, with the cluster's pods and agents in the failure message."""
    try:
        return wait_for(predicate, timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; cluster: {c.describe()}") from None


def live_by_pod(c: Cluster) -> dict[str, list[LiveContainer]]:
    out: dict[str, list[LiveContainer]] = defaultdict(list)
    for live in c.containers():
        out[live.pod].append(live)
    return out


def start_pods(c: Cluster, names: list[str]) -> dict[str, dict[str, Any]]:
    """Create `sleep` pods with these names; return them once all are Running."""
    for name in names:
        c.create_pod(pod_manifest(name))
    return converge(c, lambda: c.running(names), 30)


def busiest(c: Cluster, pods: dict[str, dict[str, Any]]) -> Node:
    """The node running the most of these pods (spread placement puts some on each)."""
    counts = {name: 0 for name in c.nodes}
    for p in pods.values():
        counts[p["spec"]["nodeName"]] += 1
    return c.nodes[max(counts, key=lambda n: counts[n])]


def replaced_elsewhere(
    c: Cluster, before: dict[str, dict[str, Any]], lost: Node
) -> dict[str, dict[str, Any]] | None:
    """Every pod Running; those that were on `lost` on another node with a new uid."""
    now = c.running(before)
    if now is None:
        return None
    for name, old in before.items():
        if old["spec"]["nodeName"] != lost.name:
            continue
        new = now[name]
        if new["spec"]["nodeName"] == lost.name or new["metadata"]["uid"] == old["metadata"]["uid"]:
            return None
    return now


def test_killed_container_restarts_in_place(cluster: Cluster) -> None:
    """(a) SIGKILL of a container's init: restarted on the same node, restartCount 1."""
    cluster.create_pod(pod_manifest("crash"))
    first = converge(cluster, lambda: cluster.running(["crash"]), 30)["crash"]
    node, uid = cluster.nodes[first["spec"]["nodeName"]], first["metadata"]["uid"]
    [before] = [live for live in node.containers() if live.uid == uid]
    os.kill(before.pid, signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        pod = cluster.pod("crash")
        statuses = (pod or {}).get("status", {}).get("containerStatuses") or []
        if statuses and statuses[0]["restartCount"] >= 1 and statuses[0]["state"].get("running"):
            return pod
        return None

    after = converge(cluster, restarted, 15)
    status = after["status"]["containerStatuses"][0]
    assert status["restartCount"] == 1
    assert after["metadata"]["uid"] == uid
    assert after["spec"]["nodeName"] == node.name
    terminated = status["lastState"]["terminated"]
    assert terminated["exitCode"] == 137 and terminated.get("signal") == 9, terminated
    [now] = converge(cluster, lambda: [x for x in node.containers() if x.uid == uid], 10)
    assert now.pid != before.pid
    assert not before.alive()


def test_failing_liveness_probe_restarts(cluster: Cluster) -> None:
    """(b) A liveness probe that starts failing restarts the container (and says why)."""
    manifest = pod_manifest("sick", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 3600")
    manifest["spec"]["containers"][0]["livenessProbe"] = {
        "exec": {"command": ["sh", "-c", "test -f /tmp/healthy"]},
        "periodSeconds": 1,
        "failureThreshold": 1,
    }
    cluster.create_pod(manifest)
    first = converge(cluster, lambda: cluster.running(["sick"]), 30)["sick"]
    node, uid = cluster.nodes[first["spec"]["nodeName"]], first["metadata"]["uid"]
    [before] = converge(cluster, lambda: [x for x in node.containers() if x.uid == uid], 10)

    def restarted() -> dict[str, Any] | None:
        pod = cluster.pod("sick")
        statuses = (pod or {}).get("status", {}).get("containerStatuses") or []
        return pod if statuses and statuses[0]["restartCount"] >= 1 else None

    after = converge(cluster, restarted, 20)
    assert after["metadata"]["uid"] == uid
    assert after["spec"]["nodeName"] == node.name
    assert not before.alive()  # the probe's failure killed it; a new process runs
    converge(cluster, lambda: [x for x in node.containers() if x.uid == uid], 10)

    def unhealthy() -> bool:
        items = cluster.get("/api/v1/namespaces/default/events")["items"]
        return any(
            e.get("reason") == "Unhealthy" and e.get("involvedObject", {}).get("name") == "sick"
            for e in items
        )

    converge(cluster, unhealthy, 10)


@pytest.mark.slow
def test_dead_node_pods_run_elsewhere(cluster: Cluster) -> None:
    """(c) kill -9 of an agent and its pods: they run on the other nodes, as new uids."""
    before = start_pods(cluster, [f"svc-{i}" for i in range(6)])
    victim = busiest(cluster, before)
    killed_at = time.monotonic()
    cluster.kill_agent(victim.name, with_pods=True)
    assert not victim.containers()

    after = converge(
        cluster, lambda: replaced_elsewhere(cluster, before, victim), EVICTION + START_MARGIN
    )
    elapsed = time.monotonic() - killed_at
    assert elapsed >= GRACE, f"replaced after {elapsed:.1f}s, before the grace period"
    for name, old in before.items():
        if old["spec"]["nodeName"] != victim.name:  # the others were left alone
            assert after[name]["metadata"]["uid"] == old["metadata"]["uid"]
    live = live_by_pod(cluster)
    for name, pod in after.items():
        assert [(x.node, x.uid) for x in live[name]] == [
            (pod["spec"]["nodeName"], pod["metadata"]["uid"])
        ], name


@pytest.mark.slow
def test_long_partition_is_healed_and_fenced(cluster: Cluster) -> None:
    """(d) A link down longer than the eviction timeout: replacements run elsewhere, and
    the returning node stops its stale copies."""
    before = start_pods(cluster, [f"svc-{i}" for i in range(6)])
    victim = busiest(cluster, before)
    stale = victim.containers()
    assert stale
    cluster.partition(victim.name)
    try:
        after = converge(
            cluster, lambda: replaced_elsewhere(cluster, before, victim), EVICTION + START_MARGIN
        )
        # The cut-off agent keeps its pods running (agents are autonomous).
        still = {x.pid for x in victim.containers()}
        assert {x.pid for x in stale} <= still
    finally:
        cluster.heal(victim.name)
    converge(cluster, lambda: not any(x.alive() for x in stale), 30)
    assert not [x for x in victim.containers() if x.uid in {s.uid for s in stale}]
    converge(cluster, lambda: cluster.ready(victim.name), 30)
    now = cluster.running(before)
    assert now is not None, cluster.describe()
    for name, pod in now.items():  # the returning node changed nothing
        assert pod["metadata"]["uid"] == after[name]["metadata"]["uid"]
    live = live_by_pod(cluster)
    assert all(len(live[name]) == 1 for name in before), live


@pytest.mark.slow
def test_short_partition_changes_nothing(cluster: Cluster) -> None:
    """(e) A link down for less than the grace period: same uids, same processes."""
    before = start_pods(cluster, [f"svc-{i}" for i in range(3)])
    victim = busiest(cluster, before)
    pids = {(x.uid, x.pid) for x in cluster.containers()}
    uids = {name: p["metadata"]["uid"] for name, p in before.items()}
    assert len(pids) == len(before)

    def unchanged() -> None:
        now = cluster.pods()
        assert {n: p["metadata"]["uid"] for n, p in now.items()} == uids
        assert {(x.uid, x.pid) for x in cluster.containers()} == pids

    cluster.partition(victim.name)
    try:
        until = time.monotonic() + GRACE / 2
        while time.monotonic() < until:  # the partition's length; nothing changes meanwhile
            unchanged()
            time.sleep(0.1)
    finally:
        cluster.heal(victim.name)
    until = time.monotonic() + EVICTION + 1.0
    while time.monotonic() < until:  # longer than the eviction timeout: still nothing
        unchanged()
        time.sleep(0.1)
    converge(cluster, lambda: cluster.ready(victim.name), 10)
    assert cluster.running(before) is not None


class Sampler(threading.Thread):
    """Reads every agent's state directory in a loop and records any pod name with more
    than one live process (two incarnations serving one pod)."""

    def __init__(self, c: Cluster) -> None:
        super().__init__(daemon=True)
        self.cluster = c
        self.stop = threading.Event()
        self.samples = 0
        self.started = time.monotonic()
        # (seconds since start, the doubled pods) for every sample that saw any
        self.duplicates: list[tuple[float, dict[str, list[LiveContainer]]]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            live = live_by_pod(self.cluster)
            doubled = {name: xs for name, xs in live.items() if len({x.uid for x in xs}) > 1}
            if doubled:
                self.duplicates.append((time.monotonic() - self.started, doubled))
            self.samples += 1
            time.sleep(0.02)

    def report(self) -> str:
        """The doubled samples, one line each, short enough to survive pytest's cut."""
        return "\n".join(
            f"t={t:.2f}s "
            + "; ".join(
                f"{name}: " + ", ".join(f"{x.node}/{x.uid[:8]}/pid {x.pid}" for x in xs)
                for name, xs in doubled.items()
            )
            for t, doubled in self.duplicates[:10]
        )


class Writer(threading.Thread):
    """Creates pods that can never be placed (an unmatched nodeSelector), one after another,
    and remembers each one the API acknowledged with 201."""

    def __init__(self, c: Cluster) -> None:
        super().__init__(daemon=True)
        self.cluster = c
        self.stop = threading.Event()
        self.acknowledged: list[str] = []
        self.failed = 0

    def run(self) -> None:
        for i in itertools.count():
            if self.stop.is_set() or i >= 500:
                return
            name = f"ack-{i}"
            manifest = pod_manifest(name, nodeSelector={"corral.dev/e2e": "nowhere"})
            try:
                resp = self.cluster.scheduler.request(
                    "POST", "/api/v1/namespaces/default/pods", manifest, timeout=2
                )
            except OSError:
                self.failed += 1
                time.sleep(0.05)
                continue
            if resp.status == 201:
                self.acknowledged.append(name)
            time.sleep(0.02)


@pytest.mark.slow
def test_scheduler_restart_during_node_loss(cluster: Cluster) -> None:
    """(f) The scheduler is kill -9ed and restarted while a node is lost: nothing that
    was acknowledged is lost, and no pod ever runs as two incarnations at once."""
    before = start_pods(cluster, [f"svc-{i}" for i in range(6)])
    victim = busiest(cluster, before)
    sampler, writer = Sampler(cluster), Writer(cluster)
    sampler.start()
    writer.start()
    try:
        converge(cluster, lambda: len(writer.acknowledged) >= 5, 10)
        marks = [f"victim {victim.name} killed at t={time.monotonic() - sampler.started:.2f}s"]
        cluster.kill_agent(victim.name, with_pods=True)
        converge(cluster, lambda: not cluster.ready(victim.name), GRACE + 5)
        marks.append(f"scheduler killed at t={time.monotonic() - sampler.started:.2f}s")
        cluster.scheduler.kill(signal.SIGKILL)
        acknowledged_before_crash = list(writer.acknowledged)
        cluster.scheduler.start()  # same state directory, same address and port
        marks.append(f"scheduler restarted at t={time.monotonic() - sampler.started:.2f}s")
        after = converge(
            cluster,
            lambda: replaced_elsewhere(cluster, before, victim),
            EVICTION + START_MARGIN + 5,
        )
        converge(cluster, lambda: len(writer.acknowledged) > len(acknowledged_before_crash), 10)
    finally:
        writer.stop.set()
        writer.join(timeout=10)
        time.sleep(0.1)  # one more sample after the last change
        sampler.stop.set()
        sampler.join(timeout=10)
    pods = cluster.pods()
    missing = [name for name in writer.acknowledged if name not in pods]
    assert not missing, f"acknowledged pods lost: {missing}"
    assert acknowledged_before_crash and set(acknowledged_before_crash) <= set(pods)
    assert sampler.samples > 10
    placed = ", ".join(
        f"{n}: {p['spec']['nodeName']}/{p['metadata']['uid'][:8]}" for n, p in before.items()
    )
    assert not sampler.duplicates, "\n".join([sampler.report(), *marks, f"before: {placed}"])
    live = live_by_pod(cluster)
    for name, pod in after.items():
        assert [(x.node, x.uid) for x in live[name]] == [
            (pod["spec"]["nodeName"], pod["metadata"]["uid"])
        ], name
    log = Path(cluster.scheduler.log_path).read_text()
    assert "Traceback" not in log, log[-3000:]
