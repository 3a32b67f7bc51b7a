"""What one agent link sends cannot break the scheduler for everyone else: its frames are
taken or refused one by one, and what is taken is in a shape the rest of the scheduler
can use. The "agents" are raw WebSocket clients (`test_node_credentials.RawAgent`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
from datetime import UTC, datetime
from http.client import IncompleteRead
from pathlib import Path

import aiohttp
import msgpack
import pytest

from common import protocol
from tests.conftest import TOKEN, SchedulerProcess, wait_for, wait_until
from tests.integration.test_api import pod
from tests.integration.test_node_credentials import (  # noqa: F401 (http: a fixture)
    CAPACITY,
    RawAgent,
    dial,
    events,
    http,
    join,
)


async def placed(s: SchedulerProcess, agent: RawAgent, name: str, node: str) -> str:
    """Create pod `name` pinned to `node` (whose link `agent` is); its uid once the agent
    is told to run it."""
    spec = pod(name, nodeSelector={"kubernetes.io/hostname": node})
    assert s.request("POST", "/api/v1/namespaces/default/pods", spec).status == 201
    desired = await agent.receive_type(protocol.Desired)
    uid: str = json.loads(desired.upsert[0])["metadata"]["uid"]
    return uid


@pytest.mark.parametrize(
    ("stamp", "recorded_as"),
    [
        ("2026-01-01T00:00:00", None),  # no offset: not RFC 3339
        ("0001-01-01T00:00:00+14:00", None),  # no instant in UTC
        ("2026-01-01T02:00:00+02:00", "2026-01-01T00:00:00Z"),
    ],
)
async def test_an_agents_event_time_is_kept_in_utc_or_taken_as_received(
    http: aiohttp.ClientSession,  # noqa: F811
    bare_scheduler: SchedulerProcess,
    stamp: str,
    recorded_as: str | None,
) -> None:
    """An agent's event time is kept in UTC, as every time in an object; one without an
    offset, or with none in UTC, is recorded at the time it was received. Stored naive, the
    first made every event list (sorted by time) a 500; kept as sent, the second failed
    any conversion to UTC."""
    s = bare_scheduler
    agent, _ = await join(http, s, "node-a")
    uid = await placed(s, agent, "web", "node-a")
    event = protocol.EventReport(
        uid=uid, namespace="default", name="web", reason="Pulled", timestamp=stamp
    )
    sent = datetime.now(UTC).replace(microsecond=0)
    await agent.send(protocol.PodEvents(events=[event]))

    def pulled() -> list[dict[str, object]]:
        resp = s.request("GET", "/api/v1/events")
        assert resp.status == 200, resp.body
        return [e for e in resp.json()["items"] if e["reason"] == "Pulled"]

    (recorded,) = wait_for(pulled, timeout=10)
    last = str(recorded["lastTimestamp"])
    if recorded_as is None:  # when it was received
        assert last.endswith("Z") and datetime.fromisoformat(last) >= sent, recorded
    else:
        assert last == recorded_as, recorded
    assert s.request("GET", "/api/v1/namespaces/default/events").status == 200
    await agent.ws.close()


def stuck_link(s: SchedulerProcess, credential: str, name: str) -> socket.socket:
    """A link of node `name` whose agent says hello, then reads nothing more (hung, or
    stopped): a small receive buffer, so what the scheduler sends it soon stops flowing."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", s.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET /api/v1/agent HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {credential}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    node = protocol.NodeInfo(name=name, capacity=CAPACITY, allocatable=CAPACITY)
    payload = protocol.encode(protocol.Hello(node=node))
    mask = os.urandom(4)
    assert len(payload) < 65536
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(bytes([0x82, 0x80 | 126]) + len(payload).to_bytes(2, "big") + mask + masked)
    return sock


def fill(s: SchedulerProcess, node: str) -> None:
    """Once `node`'s link is up: 3 MB of pod specs bound to it, more than a link that
    reads nothing takes in (its socket's buffers), all sent (bound) before this returns."""
    wait_for(lambda: s.get("/api/v1/status")["nodes"]["connected"] == 1, timeout=10)
    filler = {"filler": "x" * 100_000}
    for i in range(30):
        spec = pod(f"big-{i}", nodeSelector={"kubernetes.io/hostname": node})
        spec["metadata"]["annotations"] = filler
        assert s.request("POST", "/api/v1/namespaces/default/pods", spec).status == 201

    def all_bound() -> bool:
        items = s.get("/api/v1/namespaces/default/pods")["items"]
        return len(items) == 30 and all(p["spec"].get("nodeName") for p in items)

    wait_for(all_bound, timeout=20)


async def test_a_link_that_reads_nothing_does_not_hold_up_its_nodes_next_link(
    http: aiohttp.ClientSession,  # noqa: F811
    bare_scheduler: SchedulerProcess,
) -> None:
    """A node's agent hangs with its link open and unread, so the scheduler's sends to it
    back up; the agent restarted on the node dials again: its new link is welcomed at once
    (the old one was closed inline first, which waited for the stuck socket to drain, for
    good), and the scheduler still shuts down promptly."""
    s = bare_scheduler
    agent, credential = await join(http, s, "node-a")
    await agent.ws.close()
    wait_for(lambda: s.get("/api/v1/status")["nodes"]["connected"] == 0, timeout=10)
    old = await asyncio.to_thread(stuck_link, s, credential, "node-a")
    try:
        fill(s, "node-a")
        new, welcome = await dial(http, s, credential, "node-a")
        assert isinstance(welcome, protocol.Welcome), welcome
        assert len(welcome.pods) == 30
        await new.ws.close()
        # A link stuck so for a reason of its own, found silent, delays shutdown no longer.
        wait_for(lambda: "closing its previous link" in s.log_path.read_text(), timeout=5)
        assert s.proc is not None
        s.proc.terminate()
        assert await asyncio.to_thread(s.proc.wait, 15) == 0
    finally:
        old.close()


async def test_a_link_that_reads_nothing_does_not_hold_up_shutdown(
    http: aiohttp.ClientSession,  # noqa: F811
    bare_scheduler: SchedulerProcess,
) -> None:
    """SIGTERM with a node's only link stuck (its agent hung, its socket full): the link
    is dropped once it takes no close within a few seconds, and the scheduler exits 0
    (it waited on that close for good)."""
    s = bare_scheduler
    agent, credential = await join(http, s, "node-a")
    await agent.ws.close()
    wait_for(lambda: s.get("/api/v1/status")["nodes"]["connected"] == 0, timeout=10)
    stuck = await asyncio.to_thread(stuck_link, s, credential, "node-a")
    try:
        fill(s, "node-a")
        assert s.proc is not None
        s.proc.terminate()
        assert await asyncio.to_thread(s.proc.wait, 15) == 0
        assert "took no close within" in s.log_path.read_text()
    finally:
        stuck.close()


def slow_log_reader(s: SchedulerProcess, path: str) -> socket.socket:
    """`GET path` (a followed log) from a client that then reads nothing (`corral logs -f`
    into a pager that waits for a key): a small receive buffer, nothing read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", s.port))
    auth = f"Authorization: Bearer {s.token}"
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n\r\n".encode())
    return sock


async def test_a_log_reader_that_falls_behind_ends_its_stream(
    http: aiohttp.ClientSession,  # noqa: F811
    bare_scheduler: SchedulerProcess,
) -> None:
    """A followed log whose reader takes nothing while the container keeps logging: the
    scheduler holds a bounded backlog of the stream, then ends it (the agent is told to
    stop, the reader is told why). It queued every chunk the agent sent, without bound."""
    s = bare_scheduler
    agent, _ = await join(http, s, "node-a")
    spec = pod("web", nodeSelector={"kubernetes.io/hostname": "node-a"})
    assert s.request("POST", "/api/v1/namespaces/default/pods", spec).status == 201
    await agent.receive_type(protocol.Desired)
    path = "/api/v1/namespaces/default/pods/web/log?follow=true"
    reader = await asyncio.to_thread(slow_log_reader, s, path)
    try:
        request = await agent.receive_type(protocol.LogsRequest)
        assert request is not None and request.follow
        cancelled = asyncio.create_task(agent.receive_type(protocol.LogsCancel, 60))
        line = ("x" * 127 + "\n") * 256  # 32 KiB, as the agent's chunks
        sent = 0
        while not cancelled.done() and sent < 4096:  # up to 128 MiB
            await agent.send(protocol.LogsChunk(id=request.id, data=line))
            sent += 1
            await asyncio.sleep(0)
        cancel = await asyncio.wait_for(cancelled, 10)
        assert isinstance(cancel, protocol.LogsCancel) and cancel.id == request.id, cancel
        assert sent < 4096

        def read_all() -> bytes:  # to the end of the response (the link stays open)
            data = bytearray()
            while not data.endswith(b"\r\n0\r\n\r\n") and (chunk := reader.recv(1 << 20)):
                data += chunk
            return bytes(data)

        body = await asyncio.to_thread(read_all)
        assert b"[corral: log stream ended: " in body and b"too slow" in body, body[-300:]
    finally:
        reader.close()
        await agent.ws.close()
    assert s.request("GET", "/readyz").status == 200


async def test_a_log_that_is_not_followed_is_not_cut_for_a_slow_reader(
    http: aiohttp.ClientSession,  # noqa: F811
    bare_scheduler: SchedulerProcess,
) -> None:
    """A log that is not followed ends by itself, so a reader that takes its time (`corral
    logs POD | less`) gets all of it, far past the bound of a followed log (a quarter GiB:
    tests/unit/test_hub.py)."""
    s = bare_scheduler
    agent, _ = await join(http, s, "node-a")
    spec = pod("web", nodeSelector={"kubernetes.io/hostname": "node-a"})
    assert s.request("POST", "/api/v1/namespaces/default/pods", spec).status == 201
    await agent.receive_type(protocol.Desired)
    reader = await asyncio.to_thread(slow_log_reader, s, "/api/v1/namespaces/default/pods/web/log")
    chunks = 2100  # past the bound of a followed log (MAX_LOG_CHUNKS_QUEUED)
    try:
        request = await agent.receive_type(protocol.LogsRequest)
        assert request is not None and not request.follow
        line = ("x" * 127 + "\n") * 256  # 32 KiB, as the agent's chunks
        for _ in range(chunks):
            await agent.send(protocol.LogsChunk(id=request.id, data=line))
            await asyncio.sleep(0)
        await agent.send(protocol.LogsChunk(id=request.id, eof=True))

        def read_all() -> bytes:
            data = bytearray()
            while not data.endswith(b"\r\n0\r\n\r\n") and (chunk := reader.recv(1 << 20)):
                data += chunk
            return bytes(data)

        body = await asyncio.to_thread(read_all)
        assert b"too slow" not in body and body.count(b"x" * 127) == chunks * 256
    finally:
        reader.close()
        await agent.ws.close()


async def test_a_log_request_the_agent_never_answers_fails_in_time(
    http: aiohttp.ClientSession,  # noqa: F811
    tmp_path: Path,
) -> None:
    """An agent that takes a log request and never answers (hung; or a simulated node):
    the reader gets an error once `agent_answer_seconds` have passed, and the agent is told
    to stop. `corral logs` and `kubectl logs` waited for good; a followed log is not
    bounded so (a quiet container rightly sends nothing)."""
    s = SchedulerProcess(tmp_path / "scheduler", ["--agent-answer-seconds", "1"])
    s.start()
    try:
        agent, _ = await join(http, s, "node-a")
        spec = pod("web", nodeSelector={"kubernetes.io/hostname": "node-a"})
        assert s.request("POST", "/api/v1/namespaces/default/pods", spec).status == 201
        await agent.receive_type(protocol.Desired)
        path = "/api/v1/namespaces/default/pods/web/log"
        answer = asyncio.create_task(asyncio.to_thread(s.request, "GET", path, timeout=20))
        request = await agent.receive_type(protocol.LogsRequest)
        assert request is not None and not request.follow
        cancel = await agent.receive_type(protocol.LogsCancel, 10)
        assert isinstance(cancel, protocol.LogsCancel) and cancel.id == request.id, cancel
        resp = await answer
        assert resp.status == 400, resp.body
        assert "node node-a did not answer within 1 s" in resp.json()["message"], resp.body
        # Silent after a first chunk: the log ends, saying why, and is cut short (no last
        # chunk): a reader sees the read fail, not a log that ended.
        answer = asyncio.create_task(asyncio.to_thread(s.request, "GET", path, timeout=20))
        request = await agent.receive_type(protocol.LogsRequest)
        await agent.send(protocol.LogsChunk(id=request.id, data="first line\n"))
        cancel = await agent.receive_type(protocol.LogsCancel, 10)
        assert isinstance(cancel, protocol.LogsCancel) and cancel.id == request.id, cancel
        with pytest.raises(IncompleteRead) as cut:
            await answer
        body = cut.value.partial
        assert body.startswith(b"first line\n"), body
        assert body.endswith(b"[corral: log stream ended: node node-a did not answer within 1 s]\n")
        await agent.ws.close()
    finally:
        s.stop()


async def test_deleting_a_node_while_its_agent_reports_moves_every_pod(
    http: aiohttp.ClientSession,  # noqa: F811
    bare_scheduler: SchedulerProcess,
) -> None:
    """DELETE of a node whose agent is still reporting its pods' statuses: every pod is
    moved off it. A pod whose status write landed during the move was left bound to the
    deleted node for good (Running on a node that no longer exists, never replaced)."""
    s = bare_scheduler
    agent, _ = await join(http, s, "node-a")
    for i in range(40):
        spec = pod(f"web-{i}", nodeSelector={"kubernetes.io/hostname": "node-a"})
        assert s.request("POST", "/api/v1/namespaces/default/pods", spec).status == 201
    uids: dict[str, str] = {}
    while len(uids) < 40:
        desired = await agent.receive_type(protocol.Desired)
        for raw in desired.upsert:
            meta = json.loads(raw)["metadata"]
            uids[meta["name"]] = meta["uid"]

    async def report() -> None:  # statuses that keep changing, as fast as the link takes
        n = 0
        while True:
            n += 1
            status = json.dumps({"phase": "Running", "message": f"report {n}"}).encode()
            pods = [
                protocol.PodReport(uid=uid, namespace="default", name=name, status=status)
                for name, uid in uids.items()
            ]
            await agent.send(protocol.PodStatusUpdate(pods=pods))
            await asyncio.sleep(0.001)

    reporting = asyncio.create_task(report())
    try:

        def reported() -> bool:  # every pod's status written a few times over
            items = s.get("/api/v1/pods")["items"]
            messages = [p["status"].get("message") or "report 0" for p in items]
            return min(int(m.split()[-1]) for m in messages) >= 5

        await wait_until(lambda: asyncio.to_thread(reported))
        resp = await asyncio.to_thread(s.request, "DELETE", "/api/v1/nodes/node-a")
        assert resp.status == 200, resp.body
    finally:
        reporting.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await reporting
    left = [
        p["metadata"]["name"] for p in s.get("/api/v1/pods")["items"] if p["spec"].get("nodeName")
    ]
    assert left == [], f"still bound to the deleted node: {left}"
    await agent.ws.close()


async def test_a_hello_reporting_another_nodes_pod_is_welcomed_and_told_to_stop_it(
    http: aiohttp.ClientSession,  # noqa: F811
    bare_scheduler: SchedulerProcess,
) -> None:
    """A node whose hello reports a pod bound to another node (beside its own) is
    welcomed, told to stop that pod, and the refusal is recorded. The refusal went out as
    an error frame before the welcome (while the hello's own statuses were written),
    which an agent takes for its link refused: it redialled with the same hello, was
    refused for good, and kept running the other node's pod."""
    s = bare_scheduler
    a, _ = await join(http, s, "node-a")
    b, credential = await join(http, s, "node-b")
    running = json.dumps({"phase": "Running"}).encode()
    reports = []
    for name, agent in (("web-a", a), ("web-b", b)):
        node = name.replace("web", "node")
        spec = pod(name, nodeSelector={"kubernetes.io/hostname": node})
        assert s.request("POST", "/api/v1/namespaces/default/pods", spec).status == 201
        desired = await agent.receive_type(protocol.Desired)
        uid = json.loads(desired.upsert[0])["metadata"]["uid"]
        reports.append(protocol.PodReport(uid=uid, namespace="default", name=name, status=running))
    await b.ws.close()

    b, welcome = await dial(http, s, credential, "node-b", reports)
    assert isinstance(welcome, protocol.Welcome), welcome
    assert welcome.stop == [reports[0].uid] and len(welcome.pods) == 1
    refusals = wait_for(lambda: events(s, "ReportRefused"), timeout=10)
    assert all(e["involvedObject"]["name"] == "node-b" for e in refusals)
    assert s.get("/api/v1/namespaces/default/pods/web-a")["spec"]["nodeName"] == "node-a"
    assert s.get("/api/v1/namespaces/default/pods/web-b")["status"]["phase"] == "Running"
    await a.ws.close()
    await b.ws.close()


async def test_a_welcome_too_big_for_one_frame_comes_in_parts(
    http: aiohttp.ClientSession,  # noqa: F811
    bare_scheduler: SchedulerProcess,
) -> None:
    """A node whose desired pods come to more than a frame takes (70 pods of 250 kB of
    annotations: 17 MB) is welcomed in parts, each under MAX_FRAME_BYTES, every one but
    the last marked `more`, together the whole set. Sent as one frame, the welcome was
    refused by the agent, which dialled again and got the same: the node could not join."""
    s = bare_scheduler
    agent, credential = await join(http, s, "node-a")
    filler = {"filler": "x" * 250_000}
    names = {f"big-{i}" for i in range(70)}
    for name in names:
        spec = pod(name)
        spec["spec"]["nodeName"] = "node-a"
        spec["metadata"]["annotations"] = filler
        assert s.request("POST", "/api/v1/namespaces/default/pods", spec).status == 201
    await agent.ws.close()

    again, first = await dial(http, s, credential, "node-a")
    # A log asked for while the rest of the welcome may still be on its way: refused
    # (the node is joining), or asked once the last part is out; never between parts,
    # which broke the welcome.
    log = asyncio.create_task(
        asyncio.to_thread(s.request, "GET", "/api/v1/namespaces/default/pods/big-0/log")
    )
    parts = [first]
    while isinstance(parts[-1], protocol.Welcome) and parts[-1].more:
        parts.append(await again.receive())
    assert all(isinstance(p, protocol.Welcome) for p in parts), parts
    assert len(parts) >= 3, len(parts)
    welcome = protocol.join_welcome(parts)  # type: ignore[arg-type]
    assert {json.loads(p)["metadata"]["name"] for p in welcome.pods} == names
    assert not welcome.more and welcome.revision > 0
    await again.send(protocol.PodStatusUpdate(revision=welcome.revision))
    assert s.get("/api/v1/status")["nodes"]["connected"] == 1
    await again.ws.close()  # a log request sent after the welcome is not answered: ends
    answer = await log
    assert answer.status == 400, answer.body


async def test_a_frame_of_many_invalid_values_is_answered_in_a_few_lines(
    http: aiohttp.ClientSession,  # noqa: F811
    bare_scheduler: SchedulerProcess,
) -> None:
    """A heartbeat of 300,000 invalid numbers, and a hello whose node name is 1 MB: each
    is refused with a message of a few lines, for the agent and the log. The first was
    answered with every one of its errors (20 MB of message, built for seconds on the
    event loop, logged, kept among the recent errors, sent in a frame no agent takes);
    the second quoted the name twice, whole; a frame of 16 MiB made hundreds of MiB."""
    s = bare_scheduler
    agent, _ = await join(http, s, "node-a")
    bad = {"v": protocol.PROTOCOL_VERSION, "type": "heartbeat", "pod_uids": []}
    bad |= {"pod_cpu": [-1] * 300_000, "pod_memory": []}
    await agent.ws.send_bytes(msgpack.packb(bad))
    answer = await agent.receive_type(protocol.ErrorFrame, 30)
    assert isinstance(answer, protocol.ErrorFrame), answer
    assert "heartbeat.pod_cpu.0: Input should be greater than or equal to 0" in answer.message
    assert len(answer.message) < 1000, len(answer.message)
    await agent.ws.close()

    long, answer = await dial(http, s, TOKEN, "n" * 1_000_000)
    assert isinstance(answer, protocol.ErrorFrame), answer
    assert "a node name is at most 253 characters, not 1000000" in answer.message
    assert len(answer.message) < 1000, len(answer.message)
    await long.ws.close()
    status = s.request("GET", "/api/v1/status")
    assert status.status == 200 and len(status.body) < 100_000, len(status.body)
    assert s.log_path.stat().st_size < 1_000_000


async def test_an_agents_event_reason_is_cut_to_kubernetes_limit(
    http: aiohttp.ClientSession,  # noqa: F811
    bare_scheduler: SchedulerProcess,
) -> None:
    """An agent's event reason is cut to 128 characters, as its message is to 1 KiB: it was
    kept, written and listed whole (a reason of 8 MB from one frame, and as many events
    of them as the recorder keeps)."""
    s = bare_scheduler
    agent, _ = await join(http, s, "node-a")
    uid = await placed(s, agent, "web", "node-a")
    event = protocol.EventReport(
        uid=uid,
        namespace="default",
        name="web",
        reason="Pulled" + "x" * 1_000_000,
        message="m" * 1_000_000,
        timestamp="2026-01-01T00:00:00Z",
    )
    await agent.send(protocol.PodEvents(events=[event]))

    def pulled() -> list[dict[str, object]]:
        resp = s.request("GET", "/api/v1/namespaces/default/events")
        assert resp.status == 200, resp.body
        return [e for e in resp.json()["items"] if str(e["reason"]).startswith("Pulled")]

    (recorded,) = wait_for(pulled, timeout=10)
    assert recorded["reason"] == "Pulled" + "x" * 122
    assert len(str(recorded["message"])) == 1024
    await agent.ws.close()


async def test_a_frame_naming_another_nodes_pod_many_times_is_refused_once(
    http: aiohttp.ClientSession,  # noqa: F811
    bare_scheduler: SchedulerProcess,
) -> None:
    """A pod_status frame that reports another node's pod 2,000 times (as status and as
    stopped), and an events frame that does the same: each frame is answered with one
    error frame, saying what else it refused, and logged once. Each report was refused
    with an error frame of its own, sent from a task of its own: 2,000 frames and log lines
    per frame, and behind an agent that read nothing the tasks piled up without bound."""
    s = bare_scheduler
    a, _ = await join(http, s, "node-a")
    b, _ = await join(http, s, "node-b")
    uid = await placed(s, b, "web-b", "node-b")
    failed = json.dumps({"phase": "Failed"}).encode()
    report = protocol.PodReport(uid=uid, namespace="default", name="web-b", status=failed)
    await a.send(protocol.PodStatusUpdate(pods=[report] * 2000, stopped=[uid] * 2000))
    event = protocol.EventReport(
        uid=uid,
        namespace="default",
        name="web-b",
        reason="Killing",
        timestamp="2026-01-01T00:00:00Z",
    )
    await a.send(protocol.PodEvents(events=[event] * 2000))
    answers = []
    with contextlib.suppress(TimeoutError):
        while True:
            answers.append(await a.receive(1.0))
    refusal = "node node-a reported {} for pod default/web-b, which is bound to node-b; refused"
    assert answers == [
        protocol.ErrorFrame(message=f"{refusal.format('status')} (and 1 more)"),
        protocol.ErrorFrame(message=refusal.format("events")),
    ], answers[:3]
    assert s.log_path.read_text().count("reported status for pod default/web-b") == 1
    pod_b = s.get("/api/v1/namespaces/default/pods/web-b")
    assert pod_b["status"]["phase"] != "Failed" and "deletionTimestamp" not in pod_b["metadata"]
    await a.ws.close()
    await b.ws.close()


async def test_a_status_too_big_is_refused_and_the_next_one_taken(
    http: aiohttp.ClientSession,  # noqa: F811
    bare_scheduler: SchedulerProcess,
) -> None:
    """A pod status over 256 KiB of JSON is refused, naming its size; the pod keeps the
    status it had, and the node's next report of a normal one is written. A node that
    reported 50 KB statuses over and over took the scheduler from 79 MB to 5 GB in 36 s
    (each version kept in the store's history); one of 10 MB made its pod bigger than
    the API accepts."""
    s = bare_scheduler
    agent, _ = await join(http, s, "node-a")
    uid = await placed(s, agent, "web", "node-a")

    def report(message: str) -> protocol.PodStatusUpdate:
        status = json.dumps({"phase": "Running", "message": message}).encode()
        return protocol.PodStatusUpdate(
            pods=[protocol.PodReport(uid=uid, namespace="default", name="web", status=status)]
        )

    big = report("x" * 300_000)
    await agent.send(big)
    answer = await agent.receive_type(protocol.ErrorFrame, 10)
    assert isinstance(answer, protocol.ErrorFrame), answer
    size = len(big.pods[0].status)
    assert answer.message == (
        f"node node-a: the status of default/web is {size} bytes, more than 262144; refused"
    )
    await agent.send(report("fine"))

    def reported() -> dict[str, object] | None:
        status = s.get("/api/v1/namespaces/default/pods/web")["status"]
        return status if status.get("message") == "fine" else None

    assert wait_for(reported, timeout=10)["phase"] == "Running"
    await agent.ws.close()


async def test_an_agent_cannot_label_its_node_with_another_s_hostname(
    http: aiohttp.ClientSession,  # noqa: F811
    bare_scheduler: SchedulerProcess,
) -> None:
    """A node's `kubernetes.io/hostname` is its name, whatever its agent's labels say: an
    agent that labelled node-a `kubernetes.io/hostname=node-b` drew the pods pinned to
    node-b. A label a node may not set on itself (`node-role.kubernetes.io/...`, as
    Kubernetes' NodeRestriction) is left out with a warning event, the link not refused
    (an agent of before the check must not be locked out); its other labels are taken."""
    s = bare_scheduler
    ws = await http.ws_connect(
        s.url + "/api/v1/agent",
        headers={"Authorization": f"Bearer {TOKEN}"},
        max_msg_size=protocol.MAX_FRAME_BYTES,
    )
    agent = RawAgent(ws)
    labels = {"kubernetes.io/hostname": "node-b", "disk": "ssd", "node-role.kubernetes.io/x": ""}
    node = protocol.NodeInfo(name="node-a", labels=labels, capacity=CAPACITY, allocatable=CAPACITY)
    await agent.send(protocol.Hello(node=node))
    assert isinstance(await agent.receive(), protocol.Welcome)
    stored = s.get("/api/v1/nodes/node-a")["metadata"]["labels"]
    assert stored == {"kubernetes.io/hostname": "node-a", "disk": "ssd"}
    (ignored,) = wait_for(lambda: events(s, "LabelsIgnored"), timeout=10)
    assert ignored["message"] == (
        "node node-a: labels a node may not set on itself left out: "
        "node-role.kubernetes.io/x (set them through the API)"
    )
    spec = pod("pinned", nodeSelector={"kubernetes.io/hostname": "node-b"})
    assert s.request("POST", "/api/v1/namespaces/default/pods", spec).status == 201

    def unschedulable() -> dict[str, object] | None:
        got = s.get("/api/v1/namespaces/default/pods/pinned")
        conditions = got["status"].get("conditions", [])
        return got if any(c["reason"] == "Unschedulable" for c in conditions) else None

    assert "nodeName" not in wait_for(unschedulable, timeout=10)["spec"]
    await ws.close()
