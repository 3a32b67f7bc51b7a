"""The agent hub in process: frames fed to a session's read loop over a fake WebSocket,
with a real control plane (store, cluster view) behind it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from aiohttp import WSMessage, WSMsgType

from common import protocol
from common.models import Node, NodeStatus, ObjectMeta, Pod, PodStatus, now
from scheduler import hub as hub_module
from scheduler.config import SchedulerConfig
from scheduler.controlplane import ControlPlane
from scheduler.hub import AgentSession
from scheduler.objects import encode, node_key, pod_key, split_status, status_json
from scheduler.store import Conflict, Op


class FakeWS:
    """What the hub uses of a WebSocketResponse: the frames to read, the frames sent."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[WSMessage | None] = asyncio.Queue()
        self.sent: list[protocol.Frame] = []
        self.closed = False
        self.close_message: bytes | None = None

    def feed(self, data: bytes) -> None:
        self.inbox.put_nowait(WSMessage(WSMsgType.BINARY, data, None))

    def __aiter__(self) -> FakeWS:
        return self

    async def __anext__(self) -> WSMessage:
        msg = await self.receive()
        if msg.type == WSMsgType.CLOSED:
            raise StopAsyncIteration
        return msg

    async def receive(self) -> WSMessage:
        msg = await self.inbox.get()
        if msg is None:
            return WSMessage(WSMsgType.CLOSED, None, None)
        return msg

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(protocol.decode(data, protocol.AGENT_PROTOCOLS))

    async def close(self, *, message: bytes = b"") -> bool:
        self.closed, self.close_message = True, message
        self.inbox.put_nowait(None)
        return True


@pytest.fixture
async def cp(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    config = SchedulerConfig(state_dir=str(tmp_path))
    plane = ControlPlane(config)
    await plane.start()
    try:
        yield plane
    finally:
        await plane.stop()


async def bound_pod(cp: ControlPlane, name: str, node: str) -> Pod:
    """A pod stored already bound to `node`, once the cluster view has it."""
    pod = Pod.model_validate(
        {
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
            "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox"}]},
        }
    )
    pod.metadata.creation_timestamp = now()
    key = pod_key("default", name)
    await cp.store.txn([Op("put", key, encode(pod), pod, expect=0)])
    for _ in range(200):
        if key in cp.cluster.pods:
            return cp.cluster.pods[key]
        await asyncio.sleep(0.01)
    raise AssertionError(f"{key} never reached the cluster view")


def status(phase: str) -> dict[str, Any]:
    ready = "True" if phase == "Running" else "False"
    return {"phase": phase, "conditions": [{"type": "Ready", "status": ready}]}


def report(pod: Pod, phase: str, status_json: bytes | None = None) -> protocol.PodReport:
    uid, name = pod.metadata.uid or "", pod.metadata.name
    sent = json.dumps(status(phase)).encode() if status_json is None else status_json
    return protocol.PodReport(uid=uid, namespace="default", name=name, status=sent)


def report_v4(pod: Pod, phase: str) -> protocol.PodReportV4:
    uid, name = pod.metadata.uid or "", pod.metadata.name
    return protocol.PodReportV4(uid=uid, namespace="default", name=name, status=status(phase))


async def node_in_view(cp: ControlPlane, name: str) -> None:
    """Node `name` stored, once the cluster view has it (a heartbeat sets its usage)."""
    node = Node(metadata=ObjectMeta(name=name), status=NodeStatus(allocatable={"cpu": "4"}))
    await cp.store.txn([Op("put", node_key(name), encode(node), node, expect=0)])
    for _ in range(200):
        if name in cp.cluster.nodes:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"node {name} never reached the cluster view")


async def serve(
    cp: ControlPlane, node: str, version: int = protocol.PROTOCOL_VERSION
) -> tuple[FakeWS, asyncio.Task[None]]:
    """A session of `node` (an agent of `version`) on a fake link, its read loop running."""
    ws = FakeWS()
    session = AgentSession(node, ws, version)  # type: ignore[arg-type]
    session.welcomed = True  # as after its welcome
    cp.hub.sessions[node] = session
    return ws, asyncio.create_task(cp.hub._read_loop(session))


async def settle(cp: ControlPlane, ws: FakeWS) -> None:
    """Until the read loop has taken every frame fed (it handles one without yielding, so
    each one's writes are queued by then) and every write is durable and in the view."""
    store = cp.store
    for _ in range(500):
        await asyncio.sleep(0.01)
        if ws.inbox.empty() and store._next_revision == store.revision <= cp.cluster.revision:
            return
    raise AssertionError("the hub, the store or the cluster view did not settle")


async def test_reports_in_consecutive_frames_land_in_order(cp: ControlPlane) -> None:
    """Pending then Running for one pod, in two frames read back to back: both writes are
    made, in that order, and the scheduler's PodScheduled condition is kept."""
    pod = await bound_pod(cp, "web", "n1")
    before = cp.store.revision
    ws, reader = await serve(cp, "n1")
    for phase in ("Pending", "Running"):
        ws.feed(protocol.encode(protocol.PodStatusUpdate(pods=[report(pod, phase)])))
    await settle(cp, ws)
    stored = cp.cluster.pods[pod_key("default", "web")]
    assert stored.status.phase == "Running"
    assert cp.store.revision == before + 2
    assert [c.type for c in stored.status.conditions] == ["Ready"]
    reader.cancel()


async def test_a_status_write_that_loses_is_merged_and_retried(
    cp: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write refused by a guard (another write came first) is built again on the newer
    pod and lands."""
    pod = await bound_pod(cp, "web", "n1")
    txn = cp.store.txn
    refused: list[list[Op]] = []

    def lose_once(ops: list[Op]) -> Any:
        if not refused:
            refused.append(ops)
            future = asyncio.get_running_loop().create_future()
            future.set_exception(Conflict(ops[0].key, ops[0].expect or 0, None))
            return future
        return txn(ops)

    monkeypatch.setattr(cp.store, "txn", lose_once)
    ws, reader = await serve(cp, "n1")
    ws.feed(protocol.encode(protocol.PodStatusUpdate(pods=[report(pod, "Running")])))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if cp.cluster.pods[pod_key("default", "web")].status.phase == "Running":
            break
    assert refused
    assert cp.cluster.pods[pod_key("default", "web")].status.phase == "Running"
    reader.cancel()


async def test_a_report_about_another_nodes_pod_is_refused(cp: ControlPlane) -> None:
    """An error frame for the status about n2's pod; the link's own pod still lands."""
    mine = await bound_pod(cp, "mine", "n1")
    theirs = await bound_pod(cp, "theirs", "n2")
    ws, reader = await serve(cp, "n1")
    frame = protocol.PodStatusUpdate(pods=[report(theirs, "Failed"), report(mine, "Running")])
    ws.feed(protocol.encode(frame))
    await settle(cp, ws)
    assert cp.cluster.pods[pod_key("default", "theirs")].status.phase == "Pending"
    assert cp.cluster.pods[pod_key("default", "mine")].status.phase == "Running"
    errors = [f for f in ws.sent if isinstance(f, protocol.ErrorFrame)]
    assert len(errors) == 1 and "bound to n2; refused" in errors[0].message
    reader.cancel()


async def test_a_malformed_frame_gets_an_error_and_the_link_keeps_serving(
    cp: ControlPlane,
) -> None:
    pod = await bound_pod(cp, "web", "n1")
    ws, reader = await serve(cp, "n1")
    bad_status = {"v": protocol.PROTOCOL_VERSION, "type": "pod_status", "pods": [{"uid": 5}]}
    for data in (
        b"\xc1",  # not msgpack
        msgpack.packb({"v": protocol.PROTOCOL_VERSION - 1, "type": "heartbeat"}),
        msgpack.packb(bad_status),
        msgpack.packb({"v": protocol.PROTOCOL_VERSION, "type": "heartbeat", "usage": {"cpu": "1"}}),
        msgpack.packb({"v": protocol.PROTOCOL_VERSION, "type": "heartbeat", "pod_cpu": [1]}),
    ):
        ws.feed(data)
    ws.feed(protocol.encode(protocol.PodStatusUpdate(pods=[report(pod, "Running")])))
    await settle(cp, ws)
    errors = [f.message for f in ws.sent if isinstance(f, protocol.ErrorFrame)]
    assert len(errors) == 5 and "pod_cpu and pod_memory differ in length" in errors[-1]
    assert cp.cluster.pods[pod_key("default", "web")].status.phase == "Running"
    assert not reader.done()
    reader.cancel()


@pytest.mark.parametrize(
    ("sent", "problem"),
    [
        (b'{"phase": "Sleeping"}', "status.phase: Input should be 'Pending', "),
        (b'{"phase": "Running"', "status: Invalid JSON: EOF while parsing"),
        (b"", "status: Invalid JSON: EOF while parsing"),
        (b'["Running"]', "status: Input should be an object"),
        (b'{"phase": "Running", "podIP": "10.0.0.1"}', "status.podIP: Extra inputs"),
    ],
)
async def test_an_invalid_status_is_skipped_and_the_rest_of_the_frame_applies(
    cp: ControlPlane, sent: bytes, problem: str
) -> None:
    """A status the Pod model refuses (or that is no JSON) is dropped with an error frame
    naming why; its neighbours still land and the link keeps serving."""
    bad, good = await bound_pod(cp, "bad", "n1"), await bound_pod(cp, "good", "n1")
    ws, reader = await serve(cp, "n1")
    invalid = report(bad, "Running", sent)
    ws.feed(protocol.encode(protocol.PodStatusUpdate(pods=[invalid, report(good, "Running")])))
    await settle(cp, ws)
    assert cp.cluster.pods[pod_key("default", "bad")].status.phase == "Pending"
    assert cp.cluster.pods[pod_key("default", "good")].status.phase == "Running"
    [error] = [f.message for f in ws.sent if isinstance(f, protocol.ErrorFrame)]
    assert error.startswith(f"node n1: invalid status for default/bad: {problem}"), error
    assert any("invalid status for default/bad" in e["message"] for e in cp.errors.to_list())
    ws.feed(protocol.encode(protocol.PodStatusUpdate(pods=[report(bad, "Running")])))
    await settle(cp, ws)
    assert cp.cluster.pods[pod_key("default", "bad")].status.phase == "Running"
    reader.cancel()


async def test_a_heartbeat_sets_the_nodes_and_its_pods_usage(cp: ControlPlane) -> None:
    """Protocol 5's arrays: the node's [cpu, memory] and each pod's, paired by position."""
    ws, reader = await serve(cp, "n1")
    await node_in_view(cp, "n1")
    beat = protocol.Heartbeat(
        usage=[750, 2**30], pod_uids=["a", "b"], pod_cpu=[500, 250], pod_memory=[2**29, 5]
    )
    ws.feed(protocol.encode(beat))
    await settle(cp, ws)
    state = cp.cluster.nodes["n1"]
    assert (state.usage_cpu, state.usage_mem) == (750, 2**30)
    assert state.pod_usage() == {"a": (500, 2**29), "b": (250, 5)}
    assert not ws.sent
    reader.cancel()


@pytest.mark.parametrize("version", [3, 4])
async def test_agents_of_protocols_3_and_4_still_report(cp: ControlPlane, version: int) -> None:
    """An agent not yet upgraded: its heartbeat's maps (a number left out is 0) and its
    statuses as maps are applied as protocol 5's; answers go out in its version."""
    pod = await bound_pod(cp, "web", "n1")
    ws, reader = await serve(cp, "n1", version)
    await node_in_view(cp, "n1")
    beat = protocol.HeartbeatV4(
        usage={"cpu": 750, "memory": 2**30}, pod_usage={"uid-web": {"cpu": 5}, "b": {"memory": 7}}
    )
    ws.feed(protocol.encode(beat, version))
    ws.feed(protocol.encode(protocol.PodStatusUpdateV4(pods=[report_v4(pod, "Running")]), version))
    await settle(cp, ws)
    state = cp.cluster.nodes["n1"]
    assert (state.usage_cpu, state.usage_mem) == (750, 2**30)
    assert state.pod_usage() == {"uid-web": (5, 0), "b": (0, 7)}
    assert cp.cluster.pods[pod_key("default", "web")].status.phase == "Running"
    assert not ws.sent
    invalid = report_v4(pod, "Failed").model_copy(update={"status": {"phase": "Sleeping"}})
    ws.feed(protocol.encode(beat))  # protocol 5's frame from an agent of the version before
    ws.feed(protocol.encode(protocol.PodStatusUpdateV4(pods=[invalid]), version))
    await settle(cp, ws)
    assert [f.v for f in ws.sent] == [version, version]
    refused, invalid_status = (f.message for f in ws.sent if isinstance(f, protocol.ErrorFrame))
    assert f"unsupported protocol version {protocol.PROTOCOL_VERSION}" in refused
    assert "invalid status for default/web: status.phase" in invalid_status
    assert cp.cluster.pods[pod_key("default", "web")].status.phase == "Running"
    reader.cancel()


async def test_a_silent_link_is_closed(cp: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without aiohttp's pings, the hub closes a link that brings no frame (a peer gone
    without a TCP reset); a link that heartbeats stays open."""
    monkeypatch.setattr(hub_module, "LINK_SILENCE_SECONDS", 0.3)
    monkeypatch.setattr(hub_module, "LINK_CHECK_SECONDS", 0.05)
    silent, silent_reader = await serve(cp, "n1")
    alive, alive_reader = await serve(cp, "n2")
    cp.hub._spawn(cp.hub._watch_links())
    heartbeat = protocol.encode(protocol.Heartbeat(usage=[1, 1]))
    for _ in range(12):
        alive.feed(heartbeat)
        await asyncio.sleep(0.05)
    assert silent.closed and silent.close_message == b"link silent; presumed dead"
    assert not alive.closed
    await asyncio.wait_for(silent_reader, 1)  # the read loop ends: the session ends
    alive_reader.cancel()


async def test_a_stalled_scheduler_closes_no_link_on_waking(cp: ControlPlane) -> None:
    """A check that wakes half the silence limit late: the scheduler read nothing
    meanwhile, so every link looks silent; none is closed until a check on time."""
    ws, reader = await serve(cp, "n1")
    last = cp.hub.sessions["n1"].last_frame
    limit = hub_module.LINK_SILENCE_SECONDS
    cp.hub.close_silent_links(due=last + limit / 2 + 1, mono=last + limit + 1)
    await asyncio.sleep(0)
    assert not ws.closed
    cp.hub.close_silent_links(due=last + limit + 0.9, mono=last + limit + 1)
    await asyncio.wait_for(reader, 1)  # closed: the read loop ends
    assert ws.closed and ws.close_message == b"link silent; presumed dead"


async def test_pod_status_revision_acknowledges_desired_frames(cp: ControlPlane) -> None:
    """The ack rides in pod_status (protocol 4), alone or with statuses; never backwards."""
    pod = await bound_pod(cp, "web", "n1")
    ws, reader = await serve(cp, "n1")
    session = cp.hub.sessions["n1"]
    for revision, at in ((7, 1.0), (9, 2.0), (10, 3.0)):
        session.sent(revision, at)  # as the send loop records its frames
    ws.feed(protocol.encode(protocol.PodStatusUpdate(revision=7)))
    ws.feed(protocol.encode(protocol.PodStatusUpdate(pods=[report(pod, "Running")], revision=9)))
    ws.feed(protocol.encode(protocol.PodStatusUpdate(revision=8)))  # late: changes nothing
    await settle(cp, ws)
    assert list(session.unacked) == [(10, 3.0)]
    assert cp.cluster.pods[pod_key("default", "web")].status.phase == "Running"
    assert not [f for f in ws.sent if isinstance(f, protocol.ErrorFrame)]
    reader.cancel()


@pytest.mark.parametrize("resource_version", [None, "12"])
def test_split_status_cuts_the_stored_status_and_splices_encode_of_the_updated_pod(
    resource_version: str | None,
) -> None:
    """The status write serializes only the new status; the bytes are those of `encode`."""
    pod = Pod.model_validate(
        {
            "metadata": {"name": "web", "uid": "u1", "annotations": {"a": '},"status":{}}'}},
            "spec": {"nodeName": "n1", "containers": [{"name": "main", "image": "busybox"}]},
            "status": {"conditions": [{"type": "PodScheduled", "status": "True"}]},
        }
    )
    pod.metadata.resource_version = resource_version
    stored = encode(pod)
    running = PodStatus.model_validate(
        {**status("Running"), "startTime": "2026-01-02T03:04:05Z", "hostIp": "10.0.0.1"}
    )
    updated = pod.model_copy(update={"status": running})
    cut = split_status(stored)
    assert cut is not None
    head, old = cut
    assert old == status_json(pod.status)
    assert head + status_json(running) + b"}" == encode(updated)
    empty = encode(Pod.model_validate({"metadata": {"name": "a"}, "spec": pod.spec}))
    default = status_json(PodStatus())
    assert split_status(empty) == (empty[: -len(default) - 1], default)


def test_split_status_refuses_json_that_does_not_end_with_a_status_object() -> None:
    assert split_status(b'{"kind":"Pod","status":{"phase":"Pending"}}') == (
        b'{"kind":"Pod","status":',
        b'{"phase":"Pending"}',
    )
    assert split_status(b'{"kind":"Pod","status":{"phase":"Pending"},"x":1}') is None
    assert split_status(b'{"kind":"Pod","status":"Pending"}') is None
    assert split_status(b'{"kind":"Pod","status":{"phase":"Pending"}} ') is None
    assert split_status(b'{"kind":"Pod"}') is None


async def test_an_unchanged_status_is_not_written(cp: ControlPlane) -> None:
    pod = await bound_pod(cp, "web", "n1")
    ws, reader = await serve(cp, "n1")
    ws.feed(protocol.encode(protocol.PodStatusUpdate(pods=[report(pod, "Running")])))
    await settle(cp, ws)
    before = cp.store.revision
    ws.feed(protocol.encode(protocol.PodStatusUpdate(pods=[report(pod, "Running")])))
    await settle(cp, ws)
    assert cp.store.revision == before
    reader.cancel()


def test_unacknowledged_desired_frames_are_tracked_oldest_first() -> None:
    """An ack clears every frame up to its revision; the oldest one left says since when
    the agent is behind."""
    session = AgentSession("n", None)  # type: ignore[arg-type]
    assert session.unacked_since is None
    session.sent(5, 100.0)
    session.sent(7, 101.0)
    session.sent(7, 102.0)  # a second frame at the same revision
    session.sent(9, 103.0)
    session.acked(4)
    assert session.unacked_since == 100.0
    session.acked(7)
    assert session.unacked_since == 103.0
    session.acked(12)
    assert session.unacked_since is None


def test_unacknowledged_frames_are_bounded_without_hiding_the_lag() -> None:
    """An agent that never answers costs MAX_UNACKED entries at most, and the lag of the
    newest frames is over-reported, never under."""
    session = AgentSession("n", None)  # type: ignore[arg-type]
    for revision in range(1, hub_module.MAX_UNACKED + 50):
        session.sent(revision, float(revision))
    assert len(session.unacked) == hub_module.MAX_UNACKED
    session.acked(hub_module.MAX_UNACKED - 1)
    # The last entry stands for every frame sent since it filled: its first time is kept.
    assert session.unacked_since == float(hub_module.MAX_UNACKED)
    session.acked(hub_module.MAX_UNACKED + 48)  # not yet the newest frame (+49)
    assert session.unacked_since == float(hub_module.MAX_UNACKED)
    session.acked(hub_module.MAX_UNACKED + 49)
    assert session.unacked_since is None


async def test_a_join_is_made_again_on_a_write_of_its_node_in_between(cp: ControlPlane) -> None:
    """A write of the node queued while its agent joins (the lifecycle's NotReady mark, a
    cordon) made the join's write a conflict: the link ended with a traceback. It is
    made again on the newest version."""
    info = protocol.NodeInfo(
        name="n1",
        capacity={"cpu": "4", "memory": "8Gi", "pods": "110"},
        allocatable={"cpu": "4", "memory": "8Gi", "pods": "110"},
    )
    await cp.hub._register(info, None)
    key = node_key("n1")
    kv = cp.store.latest(key)
    assert kv is not None
    cordoned = Node.model_validate_json(kv.value)
    cordoned.spec.unschedulable = True
    queued = cp.store.txn([Op("put", key, encode(cordoned), cordoned, kv.mod_revision)])
    node = await cp.hub._register(info, None)  # read before the cordon is durable
    await queued
    assert node.spec.unschedulable  # on top of the cordon, not instead of it
    stored = cp.store.latest(key)
    assert stored is not None and Node.model_validate_json(stored.value).spec.unschedulable


@pytest.mark.parametrize(
    ("phase", "reason", "deleting", "node"),
    [
        ("Running", None, False, "n1"),
        ("Succeeded", None, False, "n1"),  # finished on its node: kept there until deleted
        ("Failed", None, False, "n1"),
        ("Failed", "NodeLost", False, None),  # failed by the scheduler: fenced
        ("Failed", "Evicted", False, None),
        ("Succeeded", None, True, None),  # marked for deletion: stopped
    ],
)
def test_desired_on(phase: str, reason: str | None, deleting: bool, node: str | None) -> None:
    """A pod is desired on its node until deleted, unless the scheduler made it terminal."""
    pod = Pod.model_validate(
        {
            "metadata": {"name": "p", "uid": "u1"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": phase, "reason": reason},
        }
    )
    if deleting:
        pod.metadata.deletion_timestamp = now()
    assert hub_module.desired_on(pod) == node


async def test_a_flood_of_credential_acks_confirms_once(
    cp: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The credential issued in a welcome is confirmed once, at the first ack: each ack
    started a confirm task (a store read) of its own, as fast as the agent sent them."""
    calls: list[str] = []
    real_confirm = cp.hub.credentials.confirm

    async def confirm(node: str, credential_id: str) -> bool:
        calls.append(credential_id)
        return await real_confirm(node, credential_id)

    monkeypatch.setattr(cp.hub.credentials, "confirm", confirm)
    ws, reader = await serve(cp, "n1")
    cp.hub.sessions["n1"].credential_id = "cred-1"  # as its welcome issued
    ack = protocol.encode(protocol.CredentialAck())
    for _ in range(1000):
        ws.feed(ack)
    await settle(cp, ws)
    assert calls == ["cred-1"]
    assert not [f for f in ws.sent if isinstance(f, protocol.ErrorFrame)]
    reader.cancel()


async def sent_logs_request(ws: FakeWS) -> protocol.LogsRequest:
    """The one logs request the hub sent the agent, once it has (within a second)."""
    for _ in range(100):
        await asyncio.sleep(0.01)
        requests = [f for f in ws.sent if isinstance(f, protocol.LogsRequest)]
        if requests:
            break
    (request,) = requests
    return request


async def unread_log(
    cp: ControlPlane, ws: FakeWS, follow: bool
) -> tuple[AsyncIterator[str], protocol.LogsRequest]:
    """A log stream of node n1 whose reader took its first chunk and reads no more."""
    lines = cp.hub.stream_logs("n1", "uid-web", "main", follow=follow)
    first = asyncio.ensure_future(anext(lines))
    request = await sent_logs_request(ws)
    ws.feed(protocol.encode(protocol.LogsChunk(id=request.id, data="first\n")))
    assert await asyncio.wait_for(first, 5) == "first\n"
    return lines, request


async def read_to_the_end(lines: AsyncIterator[str]) -> tuple[int, str]:
    """Characters the stream still gave, and the error it ended with."""
    got = 0
    with pytest.raises(hub_module.LogsUnavailable) as ended:
        async for data in lines:
            got += len(data)
    return got, str(ended.value)


@pytest.mark.parametrize("follow", [True, False])
async def test_a_log_of_big_chunks_is_bounded_by_size(cp: ControlPlane, follow: bool) -> None:
    """An agent's log chunk may fill a whole frame (16 MiB): the chunks a reader has not
    taken are bounded in characters, not only in number (2,048 of them were 32 GiB)."""
    ws, reader = await serve(cp, "n1")
    lines, request = await unread_log(cp, ws, follow)
    big = "x" * (15 << 20)
    limit = hub_module.MAX_LOG_CHARS_QUEUED[follow]
    sent = 0
    while not any(isinstance(f, protocol.LogsCancel) for f in ws.sent) and sent < 40:
        ws.feed(protocol.encode(protocol.LogsChunk(id=request.id, data=big)))
        sent += 1
        await settle(cp, ws)
    assert sent == limit // len(big) + 2  # past the bound, then the one refused
    got, error = await read_to_the_end(lines)
    assert got == (sent - 1) * len(big)
    assert "the reader is too slow:" in error and "MiB) of the log from node n1" in error
    reader.cancel()


async def test_a_log_that_is_not_followed_and_never_ends_is_cut(cp: ControlPlane) -> None:
    """A log that is not followed ends by itself, so its reader may fall far behind; an
    agent that never ends one (small chunks, forever) is cut at a bound in number."""
    ws, reader = await serve(cp, "n1")
    lines, request = await unread_log(cp, ws, follow=False)
    limit = hub_module.MAX_UNFOLLOWED_LOG_CHUNKS_QUEUED
    chunk = protocol.encode(protocol.LogsChunk(id=request.id, data="y" * 100 + "\n"))
    for _ in range(limit + 100):
        ws.feed(chunk)
    await settle(cp, ws)
    cancels = [f for f in ws.sent if isinstance(f, protocol.LogsCancel)]
    assert [c.id for c in cancels] == [request.id]
    got, error = await read_to_the_end(lines)
    assert got == limit * 101 and f"{limit} chunks" in error
    reader.cancel()


async def test_a_log_that_ends_at_its_bound_ends_cleanly(
    cp: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The end of a log is taken even when the stream is at its bound: its reader gets all
    of it and no error (it was told the reader was too slow)."""
    monkeypatch.setattr(hub_module, "MAX_UNFOLLOWED_LOG_CHUNKS_QUEUED", 5)
    ws, reader = await serve(cp, "n1")
    lines, request = await unread_log(cp, ws, follow=False)
    for _ in range(5):
        ws.feed(protocol.encode(protocol.LogsChunk(id=request.id, data="z\n")))
    ws.feed(protocol.encode(protocol.LogsChunk(id=request.id, eof=True)))
    await settle(cp, ws)
    assert [data async for data in lines] == ["z\n"] * 5
    assert not [f for f in ws.sent if isinstance(f, protocol.LogsCancel)]
    reader.cancel()


async def test_a_log_since_a_time_from_an_older_agent_is_cancelled_when_closed(
    cp: ControlPlane,
) -> None:
    """An agent before protocol 7 is asked for stamped records and the scheduler filters
    them (a stream within a stream): closing the outer one (limitBytes reached, the client
    gone) cancels the agent's at once, as it does without `since`, not whenever the inner
    generator happens to be finalized."""
    ws, reader = await serve(cp, "n1", version=6)
    lines = cp.hub.stream_logs(
        "n1", "uid-web", "main", follow=True, since_time="2024-05-01T10:00:05+00:00"
    )
    first = asyncio.ensure_future(anext(lines))
    request = await sent_logs_request(ws)
    assert request.timestamps
    data = "2024-05-01T10:00:00Z old\n2024-05-01T10:00:06Z new\n"
    ws.feed(protocol.encode(protocol.LogsChunk(id=request.id, data=data), 6))
    assert await asyncio.wait_for(first, 5) == "new\n"
    await lines.aclose()
    cancels = [f for f in ws.sent if isinstance(f, protocol.LogsCancel)]
    assert [c.id for c in cancels] == [request.id]
    assert not cp.hub.sessions["n1"].log_streams
    reader.cancel()


async def test_an_older_agents_log_that_fails_keeps_what_came_before(cp: ControlPlane) -> None:
    """A filtered stream from an agent before protocol 7 that ends in an error relays
    everything before it, a last line with no newline yet included, then the error: as a
    stream without `since` does."""
    ws, reader = await serve(cp, "n1", version=6)
    lines = cp.hub.stream_logs("n1", "uid-web", "main", since_time="2024-05-01T10:00:05+00:00")
    got: list[str] = []

    async def read() -> None:
        async for data in lines:
            got.append(data)

    reading = asyncio.ensure_future(read())
    request = await sent_logs_request(ws)
    data = "2024-05-01T10:00:06Z whole\n2024-05-01T10:00:07Z no newline yet"
    ws.feed(protocol.encode(protocol.LogsChunk(id=request.id, data=data), 6))
    failed = protocol.LogsChunk(id=request.id, eof=True, error="the container's log is gone")
    ws.feed(protocol.encode(failed, 6))
    with pytest.raises(hub_module.LogsUnavailable, match="log is gone"):
        await asyncio.wait_for(reading, 5)
    assert "".join(got) == "whole\nno newline yet"
    reader.cancel()
