"""Hollow agents: failure decisions, status construction, desired-set diffing, and the link.

The link tests run a minimal agent-link endpoint in the test (aiohttp on
loopback) that speaks `common.protocol`, so they need neither root nor the
real scheduler.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agent.hollow import (
    Fate,
    HollowCluster,
    HollowNode,
    HollowOptions,
    SimPod,
    SimState,
    backoff_delay,
    diff_desired,
    encode_heartbeat,
    encode_pod_status,
    restarts_after_exit,
)
from common.models import PodStatus, now
from common.protocol import (
    ConfigUpdate,
    Desired,
    Frame,
    Heartbeat,
    Hello,
    PodStatusUpdate,
    Welcome,
    decode,
    encode,
)
from tests.conftest import wait_until

TOKEN = "s3cret"


def wire_pod(uid: str, name: str | None = None, restart_policy: str = "Always") -> dict[str, Any]:
    """A Pod wire dict as the scheduler sends it."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name or f"pod-{uid}", "namespace": "default", "uid": uid},
        "spec": {
            "restartPolicy": restart_policy,
            "containers": [
                {
                    "name": "app",
                    "image": "busybox",
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                },
                {"name": "side", "image": "pause", "resources": {"limits": {"cpu": "0.05"}}},
            ],
        },
    }


def pod_json(uid: str, name: str | None = None, restart_policy: str = "Always") -> bytes:
    """The pod as the scheduler's frames carry it: its stored JSON."""
    return json.dumps(wire_pod(uid, name, restart_policy)).encode()


# ---- pure pieces ---------------------------------------------------------------------------


def test_fate_is_deterministic_and_follows_rates() -> None:
    """The same (seed, uid) always meets the same fate; rates hold over many uids."""
    options = HollowOptions(crash_rate=0.2, fail_start_rate=0.1, seed="x")
    uids = [f"uid-{i}" for i in range(5000)]
    fates = [options.fate(uid) for uid in uids]
    assert fates == [options.fate(uid) for uid in uids]
    assert 0.17 < fates.count(Fate.CRASH) / len(uids) < 0.23
    assert 0.08 < fates.count(Fate.FAIL_START) / len(uids) < 0.12
    assert all(HollowOptions().fate(uid) is Fate.OK for uid in uids[:100])
    assert all(HollowOptions(crash_rate=1.0).fate(uid) is Fate.CRASH for uid in uids[:100])


def test_fate_depends_on_seed() -> None:
    """Another seed picks other pods."""
    a = [HollowOptions(crash_rate=0.5, seed="a").fate(f"u{i}") for i in range(200)]
    b = [HollowOptions(crash_rate=0.5, seed="b").fate(f"u{i}") for i in range(200)]
    assert a != b


@pytest.mark.parametrize(
    ("policy", "code", "restarts"),
    [
        ("Always", 0, True),
        ("Always", 1, True),
        ("OnFailure", 0, False),
        ("OnFailure", 1, True),
        ("Never", 0, False),
        ("Never", 1, False),
    ],
)
def test_restart_policy(policy: str, code: int, restarts: bool) -> None:
    """The kubelet's restart rule."""
    assert restarts_after_exit(policy, code) is restarts


def test_diff_desired() -> None:
    """Start what is desired and missing; stop what is undesired or fenced."""
    start, stop = diff_desired({"a", "b", "c"}, {"b", "c", "d"}, stop=["c", "x"])
    assert start == {"d"}
    assert stop == {"a", "c"}
    assert diff_desired([], [], []) == (set(), set())
    assert diff_desired(["a"], ["a"]) == (set(), set())


def test_backoff_is_capped_and_jittered() -> None:
    """Full jitter below an exponential bound that stops at the cap."""
    assert all(0 <= backoff_delay(0, cap=4.0) <= 0.1 for _ in range(100))
    assert all(0 <= backoff_delay(50, cap=4.0) <= 4.0 for _ in range(100))
    assert len({backoff_delay(10, cap=4.0) for _ in range(20)}) > 1


def test_sim_pod_from_wire_sums_requests() -> None:
    """Requests are summed over containers; a limit stands in for a missing request."""
    pod = SimPod.from_wire(wire_pod("u1", restart_policy="Never"))
    assert (pod.uid, pod.namespace, pod.name) == ("u1", "default", "pod-u1")
    assert pod.restart_policy == "Never"
    assert pod.containers == [("app", "busybox"), ("side", "pause")]
    assert pod.cpu_millis == 150
    assert pod.memory_bytes == 64 * 2**20


@pytest.mark.parametrize("state", list(SimState))
@pytest.mark.parametrize("exited", [False, True])
def test_status_is_in_canonical_wire_form(state: SimState, exited: bool) -> None:
    """The hand-built status dict is exactly what PodStatus itself would send."""
    pod = SimPod.from_wire(wire_pod("u1"))
    pod.state, pod.start_time, pod.started_at = state, now(), now()
    if exited:
        pod.restart_count = 2
        pod.last_exit = (137, "OOMKilled", now(), now())
    wire = pod.status()
    assert PodStatus.model_validate(wire).to_dict() == wire
    # A report carries it as JSON (protocol 5), which the scheduler reads back as it.
    sent = pod.report_wire()["status"]
    assert PodStatus.model_validate_json(sent).to_dict() == wire


def test_status_pending_then_running() -> None:
    """A creating pod is Pending/ContainerCreating; a running one is Running and Ready."""
    pod = SimPod.from_wire(wire_pod("u1"))
    pending = PodStatus.model_validate(pod.status())
    assert pending.phase == "Pending"
    assert pending.container_statuses[0].state.waiting is not None
    assert pending.container_statuses[0].state.waiting.reason == "ContainerCreating"

    pod.state = SimState.RUNNING
    pod.started_at = now()
    wire = pod.status()
    assert wire["phase"] == "Running"
    assert "containerStatuses" in wire  # camelCase on the wire
    status = PodStatus.model_validate(wire)
    assert [c.name for c in status.container_statuses] == ["app", "side"]
    assert all(c.ready and c.state.running is not None for c in status.container_statuses)
    assert status.container_statuses[0].state.running.started_at == pod.started_at  # type: ignore[union-attr]
    ready = {c.type: c.status for c in status.conditions}
    assert ready["Ready"] == "True"


# ---- the node's state machine, without a socket ---------------------------------------------


async def test_crash_with_always_restarts() -> None:
    """A crasher under Always exits 1 with reason Error, restarts, and runs again."""
    node = HollowNode(
        "n", "http://127.0.0.1:1", TOKEN, HollowOptions(crash_rate=1.0, crash_after=0.01)
    )
    node._apply(1, [pod_json("u1")], [], [], full=True)
    assert node.pods["u1"].state is SimState.RUNNING
    await wait_until(lambda: node.pods["u1"].restart_count >= 2, within=5)
    status = PodStatus.model_validate(node.pods["u1"].status())
    assert status.phase == "Running"
    container = status.container_statuses[0]
    assert container.restart_count >= 2
    assert container.last_state.terminated is not None
    assert (container.last_state.terminated.exit_code, container.last_state.terminated.reason) == (
        1,
        "Error",
    )
    node.pods["u1"].cancel_timer()


async def test_crash_with_never_fails() -> None:
    """A crasher under Never ends Failed with its exit code."""
    node = HollowNode(
        "n", "http://127.0.0.1:1", TOKEN, HollowOptions(crash_rate=1.0, crash_after=0.01)
    )
    node._apply(1, [pod_json("u1", restart_policy="Never")], [], [], full=True)
    await wait_until(lambda: not node.pods["u1"].active, within=5)
    status = PodStatus.model_validate(node.pods["u1"].status())
    assert status.phase == "Failed"
    terminated = status.container_statuses[0].state.terminated
    assert terminated is not None and (terminated.exit_code, terminated.reason) == (1, "Error")
    assert status.container_statuses[0].restart_count == 0


@pytest.mark.parametrize(("policy", "phase"), [("Never", "Failed"), ("Always", "Pending")])
async def test_fail_start(policy: str, phase: str) -> None:
    """A pod that fails to start is Failed under Never, stuck in CrashLoopBackOff otherwise."""
    node = HollowNode("n", "http://127.0.0.1:1", TOKEN, HollowOptions(fail_start_rate=1.0))
    node._apply(1, [pod_json("u1", restart_policy=policy)], [], [], full=True)
    status = PodStatus.model_validate(node.pods["u1"].status())
    assert status.phase == phase
    container = status.container_statuses[0]
    exit_state = container.state if policy == "Never" else container.last_state
    assert exit_state.terminated is not None and exit_state.terminated.reason == "Error"


async def test_complete_after() -> None:
    """Never pods complete when asked (Succeeded, Completed); Always pods keep running."""
    node = HollowNode("n", "http://127.0.0.1:1", TOKEN, HollowOptions(complete_after=0.01))
    node._apply(1, [pod_json("job", restart_policy="Never"), pod_json("web")], [], [], full=True)
    await wait_until(lambda: not node.pods["job"].active, within=5)
    status = PodStatus.model_validate(node.pods["job"].status())
    assert status.phase == "Succeeded"
    terminated = status.container_statuses[0].state.terminated
    assert terminated is not None and (terminated.exit_code, terminated.reason) == (0, "Completed")
    assert node.pods["web"].state is SimState.RUNNING
    node.pods["web"].cancel_timer()


async def test_desired_applies_whatever_the_revision_and_reports_stopped() -> None:
    """Desired changes are idempotent: applied even at the welcome's revision; removals are
    queued as stopped uids, including uids the node never ran."""
    node = HollowNode("n", "http://127.0.0.1:1", TOKEN)
    node._apply(5, [pod_json("a")], [], [], full=True)
    node._apply(5, [pod_json("b")], [], [], full=False)
    assert set(node.pods) == {"a", "b"}
    node._apply(6, [], ["a", "ghost"], [], full=False)
    assert set(node.pods) == {"b"}
    assert node._stopped == {"a", "ghost"}
    assert node.revision == 6
    node._apply(7, [pod_json("a")], [], ["b"], full=True)  # a welcome: b is fenced
    assert set(node.pods) == {"a"} and node._stopped == {"b", "ghost"}


async def test_start_delay_reports_creating_then_running() -> None:
    """With a start delay the pod is ContainerCreating first, then Running."""
    node = HollowNode("n", "http://127.0.0.1:1", TOKEN, HollowOptions(start_delay=0.02))
    node._apply(1, [pod_json("u1")], [], [], full=True)
    assert node.pods["u1"].state is SimState.CREATING
    await wait_until(lambda: node.pods["u1"].state is not SimState.CREATING, within=5)
    assert node.pods["u1"].state is SimState.RUNNING


def test_heartbeat_usage() -> None:
    """Usage is requests times utilization, per pod and summed, for running pods."""
    node = HollowNode("n", "http://127.0.0.1:1", TOKEN, HollowOptions(utilization=0.5))
    pod = SimPod.from_wire(wire_pod("u1"))
    pod.state = SimState.RUNNING
    node.pods["u1"] = pod
    node.pods["u2"] = SimPod.from_wire(wire_pod("u2"))  # still creating: no usage
    beat = node.heartbeat()
    assert (beat.pod_uids, beat.pod_cpu, beat.pod_memory) == (["u1"], [75], [32 * 2**20])
    assert beat.usage == [75, 32 * 2**20]


def test_hand_packed_frames_are_the_models_bytes() -> None:
    """Heartbeats and pod_status frames packed without the models are byte for byte theirs."""
    node = HollowNode("n", "http://127.0.0.1:1", TOKEN)
    node._apply(1, [pod_json("u1"), pod_json("u2", restart_policy="Never")], [], [], full=True)
    assert encode_heartbeat(*node._usage()) == encode(node.heartbeat())
    assert encode_heartbeat([0, 0], [], [], []) == encode(Heartbeat())
    pods = list(node.pods.values())
    for revision in (None, 7):
        for stopped in ([], ["a", "b"]):
            frame = PodStatusUpdate(
                pods=[pod.report() for pod in pods], stopped=stopped, revision=revision
            )
            wire = [pod.report_wire() for pod in pods]
            assert encode_pod_status(wire, stopped, revision) == encode(frame)


# ---- over a real socket, against a minimal link endpoint -------------------------------------


@dataclass
class FakeHub:
    """Just enough of the scheduler's agent hub to drive hollow nodes from a test."""

    desired: dict[str, list[bytes]] = field(default_factory=dict)
    stop: list[str] = field(default_factory=list)
    hellos: list[Hello] = field(default_factory=list)
    frames: list[tuple[str, Frame]] = field(default_factory=list)
    sockets: dict[str, web.WebSocketResponse] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            raise web.HTTPUnauthorized()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        hello = decode((await ws.receive()).data)
        assert isinstance(hello, Hello)
        self.hellos.append(hello)
        name = hello.node.name
        self.sockets[name] = ws
        welcome = Welcome(
            revision=1,
            config={"heartbeat_seconds": 0.05},
            pods=self.desired.get(name, []),
            stop=self.stop,
        )
        await ws.send_bytes(encode(welcome))
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.BINARY:
                self.frames.append((name, decode(msg.data)))
                self.changed.set()
        return ws

    async def wait_for(self, predicate: Callable[[], bool], seconds: float = 5.0) -> None:
        async with asyncio.timeout(seconds):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    def stopped(self, node: str) -> set[str]:
        """Every uid a node reported stopped."""
        return {
            uid
            for name, frame in self.frames
            if name == node and isinstance(frame, PodStatusUpdate)
            for uid in frame.stopped
        }

    def statuses(self, node: str) -> dict[str, dict[str, Any]]:
        """The last status each pod of a node reported."""
        out: dict[str, dict[str, Any]] = {}
        for name, frame in self.frames:
            if name == node and isinstance(frame, PodStatusUpdate):
                out.update({report.uid: json.loads(report.status) for report in frame.pods})
        return out


@pytest.fixture
async def hub() -> AsyncIterator[tuple[FakeHub, str]]:
    """A fake hub on a loopback port, and its base URL."""
    fake = FakeHub()
    app = web.Application()
    app.router.add_get("/api/v1/agent", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield fake, f"http://127.0.0.1:{port}"
    for ws in list(fake.sockets.values()):
        await ws.close()
    await runner.cleanup()


async def test_link_hello_welcome_status_desired_ack(hub: tuple[FakeHub, str]) -> None:
    """Hello names the node; welcomed pods run; desired changes are applied and acked by
    the pod_status frame that reports what they changed."""
    fake, url = hub
    fake.desired["hollow-0000"] = [pod_json("a"), pod_json("b")]
    async with HollowCluster(url, TOKEN, 2, HollowOptions(cpu="2", memory="4Gi")) as cluster:
        await cluster.wait_connected(5)
        names = sorted(h.node.name for h in fake.hellos)
        assert names == ["hollow-0000", "hollow-0001"]
        assert fake.hellos[0].node.capacity == {"cpu": "2", "memory": "4Gi", "pods": "110"}

        await fake.wait_for(lambda: len(fake.statuses("hollow-0000")) == 2)
        assert {s["phase"] for s in fake.statuses("hollow-0000").values()} == {"Running"}
        # both pods started in one tick: one coalesced frame
        updates = [f for n, f in fake.frames if isinstance(f, PodStatusUpdate)]
        assert len(updates) == 1 and len(updates[0].pods) == 2

        await fake.wait_for(
            lambda: any(isinstance(f, Heartbeat) and f.pod_uids for _, f in fake.frames)
        )

        ws = fake.sockets["hollow-0000"]
        await ws.send_bytes(encode(Desired(revision=2, upsert=[pod_json("c")], remove=["a"])))
        acked = lambda: [  # noqa: E731
            f for _, f in fake.frames if isinstance(f, PodStatusUpdate) and f.revision == 2
        ]
        await fake.wait_for(lambda: bool(acked()))
        node = cluster.nodes[0]
        assert set(node.pods) == {"b", "c"}
        [ack] = acked()  # one frame: the ack, c's status and a's stop
        assert [r.uid for r in ack.pods] == ["c"] and ack.stopped == ["a"]
        assert fake.statuses("hollow-0000")["c"]["phase"] == "Running"
        assert fake.stopped("hollow-0000") == {"a"}
        # The heartbeat (encoded once while nothing changes) follows the pods.
        await fake.wait_for(
            lambda: any(
                n == "hollow-0000" and isinstance(f, Heartbeat) and set(f.pod_uids) == {"b", "c"}
                for n, f in fake.frames
            )
        )
        assert all(f.revision is None for f in updates)  # the welcome is not acked


async def test_link_heartbeat_interval_follows_config_updates(hub: tuple[FakeHub, str]) -> None:
    """The welcome sets the heartbeat interval; a config frame changes it for the next beat."""
    fake, url = hub
    async with HollowCluster(url, TOKEN, 1) as cluster:
        await cluster.wait_connected(5)
        node = cluster.nodes[0]
        assert node.heartbeat_seconds == 0.05  # the fake hub's welcome
        beats = sum(isinstance(f, Heartbeat) for _, f in fake.frames)
        await fake.sockets["hollow-0000"].send_bytes(
            encode(ConfigUpdate(config={"heartbeat_seconds": 30.0}))
        )
        await fake.wait_for(lambda: node.heartbeat_seconds == 30.0)
        # At most the beat already scheduled on the old interval, then none for 30 s.
        await asyncio.sleep(0.3)
        assert sum(isinstance(f, Heartbeat) for _, f in fake.frames) <= beats + 2


async def test_link_reconnects_and_resyncs_with_fencing(hub: tuple[FakeHub, str]) -> None:
    """After a dropped link the node says hello with all it runs and obeys the new welcome."""
    fake, url = hub
    fake.desired["hollow-0000"] = [pod_json("a"), pod_json("b"), pod_json("c")]
    async with HollowCluster(url, TOKEN, 1) as cluster:
        node = cluster.nodes[0]
        await cluster.wait_connected(5)
        assert set(node.pods) == {"a", "b", "c"}
        fake.desired["hollow-0000"] = [pod_json("a"), pod_json("b"), pod_json("d")]
        fake.stop = ["b"]
        await fake.sockets["hollow-0000"].close()
        await fake.wait_for(lambda: len(fake.hellos) == 2)
        resync = fake.hellos[1]
        assert {p.uid for p in resync.pods} == {"a", "b", "c"}
        assert all(json.loads(p.status)["phase"] == "Running" for p in resync.pods)
        await asyncio.wait_for(node.connected.wait(), 5)
        assert set(node.pods) == {"a", "d"}  # c not desired, b fenced
        assert node.connects == 2
        await fake.wait_for(lambda: fake.stopped("hollow-0000") == {"b", "c"})


async def test_wrong_token_keeps_retrying(hub: tuple[FakeHub, str]) -> None:
    """A refused upgrade is retried with backoff and never welcomed."""
    fake, url = hub
    node = HollowNode("lonely", url, "wrong", HollowOptions(backoff_cap=0.05))
    await node.start()
    await asyncio.sleep(0.3)
    assert not node.connected.is_set() and fake.hellos == []
    await node.stop()
