"""Agent join and node credentials: one node cannot act as another, deleting a node revokes it.

The "agents" here are raw WebSocket clients speaking `common.protocol`, so each
test can misbehave on purpose (another node's name, another node's pods).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from common import protocol
from tests.conftest import ADMIN_TOKEN, TOKEN, SchedulerProcess, wait_for
from tests.integration.test_api import pod

CAPACITY = {"cpu": "4", "memory": "8Gi", "pods": "110"}


class RawAgent:
    """One link, by hand: hello, then whatever the test sends."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, version: int = protocol.PROTOCOL_VERSION
    ) -> None:
        self.ws = ws
        self.version = version  # the protocol this agent speaks, and the only one it reads

    async def send(self, frame: protocol.Frame) -> None:
        await self.ws.send_bytes(protocol.encode(frame, self.version))

    async def receive(self, seconds: float = 5.0) -> protocol.Frame | None:
        """The next frame; None if the scheduler closed the link."""
        msg = await asyncio.wait_for(self.ws.receive(), seconds)
        if msg.type != aiohttp.WSMsgType.BINARY:
            return None
        return protocol.decode(msg.data, (self.version,))

    async def receive_type(self, kind: type[protocol.Frame], seconds: float = 5.0) -> Any:
        """Skip other frames until one of `kind` arrives."""
        async with asyncio.timeout(seconds):
            while True:
                frame = await self.receive(seconds)
                if frame is None or isinstance(frame, kind):
                    return frame


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def dial(
    http: aiohttp.ClientSession,
    s: SchedulerProcess,
    secret: str,
    name: str,
    reports: list[protocol.PodReport] | None = None,
    version: int = protocol.PROTOCOL_VERSION,
) -> tuple[RawAgent, protocol.Frame | None]:
    """Open a link with `secret`, say hello as `name` in protocol `version`; (the link,
    the first answer)."""
    ws = await http.ws_connect(
        s.url + "/api/v1/agent",
        headers={"Authorization": f"Bearer {secret}"},
        max_msg_size=protocol.MAX_FRAME_BYTES,  # as the agent's
    )
    agent = RawAgent(ws, version)
    node = protocol.NodeInfo(name=name, capacity=CAPACITY, allocatable=CAPACITY)
    await agent.send(protocol.Hello(node=node, pods=reports or []))
    return agent, await agent.receive()


async def join(http: aiohttp.ClientSession, s: SchedulerProcess, name: str) -> tuple[RawAgent, str]:
    """Join with the join token, store nothing, acknowledge: (the link, the credential)."""
    agent, welcome = await dial(http, s, TOKEN, name)
    assert isinstance(welcome, protocol.Welcome), welcome
    assert welcome.credential and welcome.credential.startswith(f"corralnode_{name}_")
    await agent.send(protocol.CredentialAck())
    return agent, welcome.credential


def events(s: SchedulerProcess, reason: str) -> list[dict[str, Any]]:
    items = s.get("/api/v1/events")["items"]
    return [e for e in items if e["reason"] == reason]


async def test_credential_is_bound_to_its_node(
    http: aiohttp.ClientSession, bare_scheduler: SchedulerProcess
) -> None:
    """After a join, the join token cannot connect as that node, and the credential cannot
    connect as any other; both refusals are events; the store keeps only a hash."""
    s = bare_scheduler
    first, credential = await join(http, s, "n1")
    await asyncio.sleep(0.3)  # the ack is applied asynchronously
    await first.ws.close()

    again, answer = await dial(http, s, TOKEN, "n1")
    assert isinstance(answer, protocol.ErrorFrame) and "already joined" in answer.message
    await again.ws.close()

    other, answer = await dial(http, s, credential, "n2")
    assert isinstance(answer, protocol.ErrorFrame), answer
    assert "cannot be used as node 'n2'" in answer.message
    await other.ws.close()
    assert s.request("GET", "/api/v1/nodes/n2").status == 404

    same, welcome = await dial(http, s, credential, "n1")
    assert isinstance(welcome, protocol.Welcome) and welcome.credential is None
    await same.ws.close()

    wait_for(lambda: events(s, "JoinRefused") and events(s, "LinkRefused"), timeout=10)
    log = s.log_path.read_text()
    assert "already joined" in log and credential not in log

    s.stop()
    data = b"".join(p.read_bytes() for p in s.state_dir.glob("state.db*"))
    assert credential.encode() not in data
    assert credential.rpartition("_")[2].encode() not in data


async def test_unacknowledged_credential_does_not_lock_the_node(
    http: aiohttp.ClientSession, bare_scheduler: SchedulerProcess
) -> None:
    """A welcome that was lost (never acknowledged, never used) leaves the join token usable;
    the new join replaces the old credential."""
    s = bare_scheduler
    lost, welcome = await dial(http, s, TOKEN, "n1")
    assert isinstance(welcome, protocol.Welcome) and welcome.credential
    await lost.ws.close()
    again, second = await dial(http, s, TOKEN, "n1")
    assert isinstance(second, protocol.Welcome) and second.credential
    assert second.credential != welcome.credential
    await again.ws.close()
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await dial(http, s, welcome.credential, "n1")
    assert info.value.status == 401


async def test_node_speaks_only_for_its_own_pods(
    http: aiohttp.ClientSession, bare_scheduler: SchedulerProcess
) -> None:
    """A node never receives another node's pod specs; its status, events and stops about
    another node's pod are refused (error frame, event, log) and change nothing."""
    s = bare_scheduler
    a, _ = await join(http, s, "node-a")
    b, _ = await join(http, s, "node-b")
    spec = pod("only-b", nodeSelector={"kubernetes.io/hostname": "node-b"})
    assert s.request("POST", "/api/v1/namespaces/default/pods", spec).status == 201
    desired = await b.receive_type(protocol.Desired)
    upserts = [json.loads(p) for p in desired.upsert]
    assert [p["metadata"]["name"] for p in upserts] == ["only-b"]
    uid = upserts[0]["metadata"]["uid"]

    # node-a heard nothing of it, and a fresh link of node-a is not told of it either.
    with pytest.raises(TimeoutError):
        await a.receive_type(protocol.Desired, seconds=0.5)
    status = json.dumps({"phase": "Failed", "reason": "Hijacked"}).encode()
    report = protocol.PodReport(uid=uid, namespace="default", name="only-b", status=status)
    event = protocol.EventReport(
        uid=uid, namespace="default", name="only-b", reason="Pwned", timestamp="2026-01-01T00:00:00"
    )
    await a.send(protocol.PodStatusUpdate(pods=[report]))
    refusal = await a.receive_type(protocol.ErrorFrame)
    assert "bound to node-b; refused" in refusal.message
    await a.send(protocol.PodEvents(events=[event]))
    assert "refused" in (await a.receive_type(protocol.ErrorFrame)).message
    await a.send(protocol.PodStatusUpdate(stopped=[uid]))
    assert "refused" in (await a.receive_type(protocol.ErrorFrame)).message

    current = s.get("/api/v1/namespaces/default/pods/only-b")
    assert current["status"].get("reason") != "Hijacked"
    assert current["spec"]["nodeName"] == "node-b"
    assert not current["metadata"].get("deletionTimestamp")
    refused = wait_for(lambda: events(s, "ReportRefused"), timeout=10)
    assert all(e["involvedObject"]["name"] == "node-a" for e in refused)
    assert not any(e["reason"] == "Pwned" for e in s.get("/api/v1/events")["items"])
    assert "reported status for pod default/only-b" in s.log_path.read_text()

    # The same reports from node-b are its to make.
    await b.send(protocol.PodStatusUpdate(pods=[report.model_copy(update={"status": status})]))
    wait_for(
        lambda: (
            s.get("/api/v1/namespaces/default/pods/only-b")["status"].get("reason") == "Hijacked"
        ),
        timeout=10,
    )
    await a.ws.close()
    await b.ws.close()


async def test_deleting_a_node_revokes_its_credential(
    http: aiohttp.ClientSession, bare_scheduler: SchedulerProcess
) -> None:
    """DELETE /api/v1/nodes/N drops the link and revokes the credential; the machine may
    join again with the join token, as a new node (docs/security.md)."""
    s = bare_scheduler
    agent, credential = await join(http, s, "gone")
    await asyncio.sleep(0.3)
    assert s.request("DELETE", "/api/v1/nodes/gone").status == 200
    assert await agent.receive_type(protocol.Welcome, seconds=5) is None  # closed
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await dial(http, s, credential, "gone")
    assert info.value.status == 401
    rejoined, fresh = await join(http, s, "gone")
    assert fresh != credential
    wait_for(lambda: s.request("GET", "/api/v1/nodes/gone").status == 200, timeout=5)
    await rejoined.ws.close()


async def test_heartbeats_stretch_with_the_cluster(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """With max_heartbeats_per_second 2, the third node is told to heartbeat every 1.5 s
    (and given a grace period 1.5 times as long), and so, then, are the first two."""
    s = SchedulerProcess(tmp_path / "scheduler", ["--max-heartbeats-per-second", "2"])
    s.start()
    try:
        intervals, agents = [], []
        for name in ("n-1", "n-2", "n-3"):
            agent, welcome = await dial(http, s, TOKEN, name)
            assert isinstance(welcome, protocol.Welcome), welcome
            intervals.append(
                (welcome.config["heartbeat_seconds"], welcome.config["node_grace_seconds"])
            )
            await agent.send(protocol.CredentialAck())
            agents.append(agent)
        assert intervals == [(1.0, 5.0), (1.0, 5.0), (1.5, 7.5)]
        # The nodes welcomed into the smaller cluster are told to slow down too.
        for agent in agents[:2]:
            update = await agent.receive_type(protocol.ConfigUpdate)
            assert update.config == {"heartbeat_seconds": 1.5, "node_grace_seconds": 7.5}
    finally:
        s.stop()


async def test_a_pod_update_of_its_images_is_sent_to_its_agent_again(
    http: aiohttp.ClientSession, bare_scheduler: SchedulerProcess
) -> None:
    """Protocol 8: a pod the agent runs goes out again in a desired frame when an update
    changes its images (the agent restarts those containers); a change of its labels, or
    of its status, does not send it again."""
    s = bare_scheduler
    agent, _ = await join(http, s, "n8")
    assert s.request("POST", "/api/v1/namespaces/default/pods", pod("web")).status == 201
    first = await agent.receive_type(protocol.Desired)
    [sent] = [json.loads(p) for p in first.upsert]
    assert sent["spec"]["containers"][0]["image"] == "busybox"
    path = "/api/v1/namespaces/default/pods/web"
    strategic = "application/strategic-merge-patch+json"
    labelled = {"metadata": {"labels": {"tier": "front"}}}
    assert s.request("PATCH", path, labelled, content_type=strategic).status == 200
    patch = {"spec": {"containers": [{"name": "main", "image": "busybox:2"}]}}
    assert s.request("PATCH", path, patch, content_type=strategic).status == 200
    again = await agent.receive_type(protocol.Desired)
    assert again.revision > first.revision and not again.remove
    [resent] = [json.loads(p) for p in again.upsert]
    assert resent["metadata"]["uid"] == sent["metadata"]["uid"]
    assert resent["spec"]["containers"][0]["image"] == "busybox:2"
    assert resent["metadata"]["labels"]["tier"] == "front"
    await agent.ws.close()


@pytest.mark.parametrize("old", range(protocol.OLDEST_AGENT_PROTOCOL, protocol.PROTOCOL_VERSION))
async def test_an_agent_of_a_protocol_before_keeps_its_node(
    http: aiohttp.ClientSession, bare_scheduler: SchedulerProcess, old: int
) -> None:
    """Upgrade order: the scheduler first. An agent still on a protocol before (3: `ack`
    frames, no `pod_status.revision`; 3 and 4: statuses and usage as maps; 5: no welcome
    in parts, no finalizers; 6: no dnsPolicy, no generateName; 7: no new images for a pod
    it runs) joins, is answered in its own version, gets its pods (without the fields its
    models would refuse, in a desired frame as in a welcome) and reports them and their
    usage, and is not sent a pod update's new image, which it would ignore; a version
    older than the oldest, or newer, is refused."""
    s = bare_scheduler
    agent, welcome = await dial(http, s, TOKEN, "old-node", version=old)
    assert isinstance(welcome, protocol.Welcome) and welcome.v == old, welcome
    await agent.send(protocol.CredentialAck())
    # Fields unknown to its models: left out (finalizers from 6 on are sent).
    held = pod("", dnsPolicy="ClusterFirst")
    held["metadata"] = {"generateName": "legacy-", "finalizers": ["example.com/hold"]}
    created = s.request("POST", "/api/v1/namespaces/default/pods", held)
    assert created.status == 201, created.body
    name = created.json()["metadata"]["name"]
    desired = await agent.receive_type(protocol.Desired)
    assert desired.v == old

    def as_sent(pod_json: bytes) -> dict[str, Any]:
        sent: dict[str, Any] = json.loads(pod_json)
        assert ("finalizers" in sent["metadata"]) == (old >= 6), sent
        assert ("generateName" in sent["metadata"]) == (old >= 7), sent
        assert ("dnsPolicy" in sent["spec"]) == (old >= 7), sent
        assert sent["metadata"]["name"] == name and name.startswith("legacy-")
        return sent

    uid = as_sent(desired.upsert[0])["metadata"]["uid"]
    # The welcome of a link opened again carries it the same way.
    await agent.ws.close()
    assert isinstance(welcome.credential, str)
    again, rewelcome = await dial(http, s, welcome.credential, "old-node", version=old)
    assert isinstance(rewelcome, protocol.Welcome) and rewelcome.v == old, rewelcome
    assert [as_sent(p)["metadata"]["uid"] for p in rewelcome.pods] == [uid]
    agent = again
    report = protocol.PodReportV4(
        uid=uid, namespace="default", name=name, status={"phase": "Running"}
    )
    if old == 3:
        await agent.send(protocol.Ack(revision=rewelcome.revision))
        await agent.send(protocol.PodStatusUpdateV4(pods=[report]))
    elif old == 4:
        await agent.send(protocol.PodStatusUpdateV4(pods=[report], revision=rewelcome.revision))
    else:  # 5: the status as JSON bytes
        running = protocol.PodReport(
            uid=uid, namespace="default", name=name, status=b'{"phase":"Running"}'
        )
        await agent.send(protocol.PodStatusUpdate(pods=[running], revision=rewelcome.revision))
    wait_for(
        lambda: s.get(f"/api/v1/namespaces/default/pods/{name}")["status"]["phase"] == "Running",
        timeout=10,
    )
    # A new image: not sent (it would skip an upsert of a pod it runs). The next desired
    # frame, for a pod made after the update, holds that pod only.
    patch = {"spec": {"containers": [{"name": "main", "image": "busybox:2"}]}}
    path = f"/api/v1/namespaces/default/pods/{name}"
    strategic = "application/strategic-merge-patch+json"
    assert s.request("PATCH", path, patch, content_type=strategic).status == 200
    assert s.request("POST", "/api/v1/namespaces/default/pods", pod("after")).status == 201
    later = await agent.receive_type(protocol.Desired)
    assert [json.loads(p)["metadata"]["name"] for p in later.upsert] == ["after"]
    usage = {"cpu": 1500, "memory": 2**30}
    if old < 5:
        await agent.send(protocol.HeartbeatV4(usage=usage, pod_usage={uid: {"cpu": 5}}))
    else:  # 5: arrays
        beat = protocol.Heartbeat(usage=[1500, 2**30], pod_uids=[uid], pod_cpu=[5], pod_memory=[0])
        await agent.send(beat)
    metrics = f"/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/{name}"
    used = wait_for(lambda: s.get(metrics), timeout=10)
    assert used["containers"] == [{"name": "main", "usage": {"cpu": "5m", "memory": "0Ki"}}]
    node = s.get("/apis/metrics.k8s.io/v1beta1/nodes/old-node")
    assert node["usage"] == {"cpu": "1500m", "memory": f"{2**20}Ki"}
    # A log read since a time: before 7 its request cannot say so, so the agent is asked
    # for stamped records and the scheduler leaves out the older ones and the stamps.
    log = f"/api/v1/namespaces/default/pods/{name}/log?sinceTime=2024-05-01T10:00:05Z"
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    reading = asyncio.ensure_future(http.get(s.url + log, headers=auth))
    request = await agent.receive_type(protocol.LogsRequest)
    if old < protocol.LOG_SINCE_PROTOCOL:
        assert request.v == old and request.timestamps
        stamped = "2024-05-01T10:00:00.000000001Z old\n2024-05-01T10:00:06.000000001Z new\n"
        await agent.send(protocol.LogsChunk(id=request.id, data=stamped, eof=True))
    else:  # 7 asks the agent for the lines since then
        assert request.v == old and request.since_time and not request.timestamps
        await agent.send(protocol.LogsChunk(id=request.id, data="new\n", eof=True))
    async with await reading as relayed:
        assert (relayed.status, await relayed.text()) == (200, "new\n")
    # The agent's own version on every frame: a frame of another version is refused.
    await agent.ws.send_bytes(protocol.encode(protocol.Heartbeat(), protocol.PROTOCOL_VERSION))
    refusal = await agent.receive_type(protocol.ErrorFrame)
    assert "unsupported protocol version" in refusal.message and refusal.v == old
    await agent.ws.close()
    assert s.get("/api/v1/nodes/old-node")["metadata"]["name"] == "old-node"

    for version in (protocol.OLDEST_AGENT_PROTOCOL - 1, protocol.PROTOCOL_VERSION + 1):
        ws = await http.ws_connect(
            s.url + "/api/v1/agent", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        node = protocol.NodeInfo(name=f"v{version}", capacity=CAPACITY, allocatable=CAPACITY)
        await ws.send_bytes(protocol.encode(protocol.Hello(node=node), version))
        msg = await asyncio.wait_for(ws.receive(), 5)
        answer = protocol.decode(msg.data)  # an error, in the scheduler's own version
        assert isinstance(answer, protocol.ErrorFrame), answer
        assert f"unsupported protocol version {version}" in answer.message
        await ws.close()


@pytest.mark.root
async def test_an_agent_refused_at_every_welcome_backs_off(
    http: aiohttp.ClientSession, bare_scheduler: SchedulerProcess, tmp_path: Path
) -> None:
    """A real agent whose node name has already joined is refused after each hello: it
    redials with a growing delay, not several times a second (each refusal is an event)."""
    from agent.runtime.native.cgroups import probe
    from tests.services import AgentProcess

    s = bare_scheduler
    first, _ = await join(http, s, "n1")
    await first.ws.close()
    agent = AgentProcess(s, tmp_path / "agent", "n1")  # the join token, as "n1" again
    agent.start()
    try:
        mark = "scheduler refused the node"

        def refusals() -> list[str]:
            lines = [line for line in agent.log().splitlines() if mark in line]
            return lines if len(lines) >= 5 else []

        lines = await asyncio.to_thread(wait_for, refusals, 30)
        times = [datetime.fromisoformat(line.split()[0]) for line in lines[:5]]
        # Backing off from 0.2 s (halved at most by the jitter): 0.2 + 0.4 + 0.8 + 1.6 s
        # at the least between the first refusal and the fifth.
        assert (times[4] - times[0]).total_seconds() >= 2.5, lines
    finally:
        assert agent.stop() == 0
        driver = probe(agent.cgroup_parent)
        if driver.exists(""):
            driver.remove("")
