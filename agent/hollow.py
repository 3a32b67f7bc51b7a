"""Hollow agents: the real agent-link protocol with simulated pods, many nodes per process.

A hollow node dials the scheduler exactly as `corral-agent` does (WebSocket,
join token then its node credential, kept in memory only, so a new process with
the same node names is refused until the nodes are deleted; msgpack frames from
`common.protocol`), but its pods are entries
in a dict: nothing is launched. It exists to load the scheduler (placement,
the hub, node lifecycle) with thousands of nodes on one machine. It proves
nothing about the real agent.

Life of a simulated pod (all containers of a pod share one state):

    start --(start delay)--> Running --(crash after, if chosen)--> exit 1
      |                        |                                   |
      | fail-start chosen      | complete after (Never/OnFailure)   +-- Always/OnFailure:
      v                        v                                   |   restartCount+1, Running
    Never: Failed (Error)    Succeeded (Completed)                 +-- Never: Failed (Error)
    else: Pending (CrashLoopBackOff)

A pod the scheduler removes (desired.remove, or fenced by a welcome) is
forgotten at once and its uid reported in `pod_status.stopped`, which is what
lets the scheduler finish a deletion. Which pods crash or fail to start is
decided by a hash of the uid and `--seed`, so a run is reproducible. Status
changes go out at once after a quiet spell; those made within `--batch-ms` of a
node's last pod_status frame share the next one.

    python -m agent.hollow --server http://127.0.0.1:7070 --token T --nodes 200
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import functools
import hashlib
import json
import logging
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import msgpack
from pydantic_core import to_json

from common import eventloop
from common.heap import GcPacer
from common.logsince import log_start
from common.models import (
    now,
)
from common.protocol import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    ConfigUpdate,
    CredentialAck,
    Desired,
    ErrorFrame,
    Frame,
    Heartbeat,
    Hello,
    LogsChunk,
    LogsRequest,
    NodeInfo,
    PodReport,
    ProtocolError,
    Welcome,
    decode,
    encode,
    receive_welcome,
)
from common.quantity import cpu_millis, memory_bytes
from common.version import git_version, host_arch

_LOGGER = logging.getLogger(__name__)

AGENT_VERSION = "hollow"
DEFAULT_HEARTBEAT_SECONDS = 1.0
WELCOME_TIMEOUT = 30.0
MAX_REPORTS_PER_FRAME = 1000
# A heartbeat may wait for the next slot of its node's timer grid (`sleep_until_slot`):
# at most this fraction of the interval late.
BEAT_SLOTS = 10


# ---- pure pieces: failure decisions, restart policy, desired-set diffing -------------------


class Fate(enum.Enum):
    """What the failure injector chose for one pod incarnation."""

    OK = "ok"
    CRASH = "crash"  # runs, then exits 1 every `crash_after` seconds
    FAIL_START = "fail_start"  # exits 1 at once, never runs


@dataclass(frozen=True)
class HollowOptions:
    """Per-process simulation knobs, shared by every node of a `HollowCluster`."""

    cpu: str = "4"
    memory: str = "8Gi"
    max_pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)
    zones: int = 0  # > 0: label topology.kubernetes.io/zone=zone-<index % zones>
    start_delay: float = 0.0
    crash_rate: float = 0.0
    crash_after: float = 10.0
    fail_start_rate: float = 0.0
    complete_after: float | None = None  # Never/OnFailure pods exit 0 after this long
    utilization: float = 0.5  # reported usage as a fraction of each pod's requests
    batch_seconds: float = 0.005  # at most one pod_status frame a node in this window
    seed: str = ""
    backoff_cap: float = 4.0
    # The first `fail_first` runs of the pods that share a value of the label
    # `fail_first_key` (per namespace, over all nodes of this process) exit 1 after
    # `complete_after` (or at once): "fails twice, then succeeds" for a Job's pods.
    fail_first: int = 0
    fail_first_key: str = ""
    attempts: dict[tuple[str, str], int] = field(default_factory=dict, compare=False, repr=False)

    def fate(self, uid: str) -> Fate:
        """Deterministic for a (seed, uid): the same pod meets the same fate on every run."""
        if self.fail_start_rate <= 0 and self.crash_rate <= 0:
            return Fate.OK  # no draw can fall below a zero rate: skip the hash
        digest = hashlib.blake2b(f"{self.seed}:{uid}".encode(), digest_size=8).digest()
        draw = int.from_bytes(digest, "big") / 2**64
        if draw < self.fail_start_rate:
            return Fate.FAIL_START
        if draw < self.fail_start_rate + self.crash_rate:
            return Fate.CRASH
        return Fate.OK

    def doomed(self, namespace: str, labels: dict[str, str]) -> bool:
        """Count one run of a pod; True if it is among the first `fail_first` of its group."""
        if self.fail_first <= 0 or self.fail_first_key not in labels:
            return False
        group = (namespace, labels[self.fail_first_key])
        runs = self.attempts.get(group, 0)
        self.attempts[group] = runs + 1
        return runs < self.fail_first


def restarts_after_exit(restart_policy: str, exit_code: int) -> bool:
    """The kubelet's rule: Always restarts, OnFailure restarts a non-zero exit, Never does not."""
    if restart_policy == "Always":
        return True
    if restart_policy == "OnFailure":
        return exit_code != 0
    return False


def diff_desired(
    running: Iterable[str], desired: Iterable[str], stop: Iterable[str] = ()
) -> tuple[set[str], set[str]]:
    """(uids to start, uids to stop) to turn what runs into the desired set.

    Anything running that is not desired, or that the scheduler fences with `stop`,
    is stopped; anything desired (and not fenced) that does not run is started.
    """
    running_set, fenced = set(running), set(stop)
    wanted = set(desired) - fenced
    return wanted - running_set, (running_set - wanted)


def backoff_delay(attempt: int, cap: float, base: float = 0.1) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(cap, base * 2 ** min(attempt, 30)))


# Every node of a process sets its timers on one grid, so that the nodes due in one slot
# wake the event loop once between them instead of once each: on the benchmarks' 2-vCPU
# VM a wake-up of an idle event loop costs 100-200 us of CPU, several times the heartbeat
# or status frame that it sends. The grid's phase is drawn once per process, so that the
# processes of a benchmark do not all beat at the same instant.
_GRID_PHASE = random.randrange(1000) / 1000  # in whole ms, the unit of uvloop's timers


async def sleep_until_slot(when: float, grain: float) -> None:
    """Sleep until the first slot of this process' grid of `grain` seconds at or after
    `when` (in `loop.time()`); at once if it has passed."""
    loop = asyncio.get_running_loop()
    if grain > 0:
        when = _GRID_PHASE + math.ceil((when - _GRID_PHASE) / grain) * grain
    await asyncio.sleep(when - loop.time())


# ---- one simulated pod ---------------------------------------------------------------------


class SimState(enum.Enum):
    CREATING = "creating"
    RUNNING = "running"
    CRASH_LOOP = "crash_loop"
    FAILED = "failed"
    SUCCEEDED = "succeeded"


_PHASES = {
    SimState.CREATING: "Pending",
    SimState.RUNNING: "Running",
    SimState.CRASH_LOOP: "Pending",
    SimState.FAILED: "Failed",
    SimState.SUCCEEDED: "Succeeded",
}


@functools.lru_cache(maxsize=256)
def _stamp(at: datetime) -> str:
    """A whole-second UTC time as the wire models write it (`now()` gives those).

    Cached: the pods of a node start within the same few seconds, and every status
    report writes their times again (strftime is a third of building a status)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class SimPod:
    """One incarnation as the hollow node sees it: identity, requests and simulated state."""

    uid: str
    namespace: str
    name: str
    restart_policy: str
    containers: list[tuple[str, str]]  # (name, image)
    cpu_millis: int
    memory_bytes: int
    labels: dict[str, str] = field(default_factory=dict)
    state: SimState = SimState.CREATING
    restart_count: int = 0
    start_time: datetime | None = None
    started_at: datetime | None = None
    last_exit: tuple[int, str, datetime | None, datetime] | None = None  # code, reason, times
    fate: Fate = Fate.OK  # drawn once when the node starts the pod
    timer: asyncio.TimerHandle | None = None

    @classmethod
    def from_wire(cls, pod: dict[str, Any]) -> SimPod:
        """Take the few fields a hollow node needs from a Pod wire dict."""
        meta, spec = pod["metadata"], pod.get("spec", {})
        cpu = mem = 0
        containers = []
        for c in spec.get("containers", []):
            containers.append((c["name"], c.get("image", "")))
            res = c.get("resources") or {}
            requests, limits = res.get("requests") or {}, res.get("limits") or {}
            if (q := requests.get("cpu", limits.get("cpu"))) is not None:
                cpu += cpu_millis(q)
            if (q := requests.get("memory", limits.get("memory"))) is not None:
                mem += memory_bytes(q)
        return cls(
            uid=meta["uid"],
            namespace=meta.get("namespace") or "default",
            name=meta["name"],
            restart_policy=spec.get("restartPolicy", "Always"),
            containers=containers or [("main", "")],
            cpu_millis=cpu,
            memory_bytes=mem,
            labels=dict(meta.get("labels") or {}),
        )

    @property
    def active(self) -> bool:
        return self.state in (SimState.CREATING, SimState.RUNNING, SimState.CRASH_LOOP)

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def status(self) -> dict[str, Any]:
        """The PodStatus wire dict (camelCase, unset fields left out) for the current
        simulated state. Built as plain dicts: thousands of hollow pods report at once, and
        going through the pydantic models cost more than the rest of a report together
        (tests check that the result is already in PodStatus's canonical wire form)."""
        last: dict[str, Any] = {}
        if self.last_exit is not None:
            code, reason, started, finished = self.last_exit
            terminated: dict[str, Any] = {"exitCode": code, "reason": reason}
            if started is not None:
                terminated["startedAt"] = _stamp(started)
            terminated["finishedAt"] = _stamp(finished)
            last = {"terminated": terminated}
        running = self.state is SimState.RUNNING
        state: dict[str, Any]
        if running:
            started_at = {"startedAt": _stamp(self.started_at)} if self.started_at else {}
            state = {"running": started_at}
        elif self.state is SimState.CREATING:
            state = {"waiting": {"reason": "ContainerCreating"}}
        elif self.state is SimState.CRASH_LOOP:
            state = {"waiting": {"reason": "CrashLoopBackOff"}}
        else:  # terminal: the last exit is the current state
            state, last = last, {}
        ready = "True" if running else "False"
        status: dict[str, Any] = {
            "phase": _PHASES[self.state],
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": ready},
                {"type": "Ready", "status": ready},
            ],
            "containerStatuses": [
                {
                    "name": name,
                    "state": state,
                    "lastState": last,
                    "ready": running,
                    "restartCount": self.restart_count,
                    "image": image,
                    "imageID": "",  # no image, and no runtime's run: no containerID
                    "started": running,
                }
                for name, image in self.containers
            ],
        }
        if self.start_time is not None:
            status["startTime"] = _stamp(self.start_time)
        return status

    def report(self) -> PodReport:
        return PodReport(**self.report_wire())

    def report_wire(self) -> dict[str, Any]:
        """`report()` in its wire form (`PodReport.model_dump()`), without the model."""
        return {
            "uid": self.uid,
            "namespace": self.namespace,
            "name": self.name,
            # pydantic-core's serializer: a quarter of the cost of json.dumps (callgrind),
            # about what packing the status as a msgpack map cost in protocol 4.
            "status": to_json(self.status()),
        }


def simulated_log(pod: SimPod | None, request: LogsRequest) -> LogsChunk:
    """The answer to a `logs` request: a hollow container writes one line a start, and a
    followed log ends with what there is (nothing more will come). A pod or container the
    node does not run, or a `previous` run that never was, is the real agent's error."""
    container = request.container
    if pod is None or container not in (name for name, _ in pod.containers):
        problem = f"pod {request.uid} has no container {container} on this node"
        return LogsChunk(id=request.id, eof=True, error=problem)
    if request.previous:
        if pod.last_exit is None:
            problem = f"previous terminated container {container!r} not found"
            return LogsChunk(id=request.id, eof=True, error=problem)
        started = pod.last_exit[2]
    else:
        started = pod.started_at
    lines = [] if started is None else [(started, f"hollow pod {pod.name}: {container} started")]
    if request.tail_lines is not None:
        lines = lines[-request.tail_lines :] if request.tail_lines else []
    start = log_start(request.since_seconds, request.since_time, datetime.now(UTC))
    if start is not None:
        lines = [(at, line) for at, line in lines if at >= start]
    stamp = request.timestamps
    data = "".join(f"{_stamp(at)} {line}\n" if stamp else f"{line}\n" for at, line in lines)
    return LogsChunk(id=request.id, data=data, eof=True)


# ---- frames packed by hand -------------------------------------------------------------------
# A hollow process sends a heartbeat per node every few seconds and a pod_status for every
# pod it places; building the pydantic models for them cost about as much as the rest of
# that work. These give exactly the bytes of `encode(Heartbeat(...))` and
# `encode(PodStatusUpdate(...))` (tests compare them): the keys in the models' field order.


def encode_heartbeat(usage: list[int], uids: list[str], cpu: list[int], memory: list[int]) -> bytes:
    frame = {"v": PROTOCOL_VERSION, "type": "heartbeat", "usage": usage}
    frame["pod_uids"], frame["pod_cpu"], frame["pod_memory"] = uids, cpu, memory
    return msgpack.packb(frame, use_bin_type=True)


def encode_pod_status(
    reports: list[dict[str, Any]], stopped: list[str], revision: int | None
) -> bytes:
    """`reports` are `PodReport` wire dicts (`SimPod.report_wire()`)."""
    frame = {"v": PROTOCOL_VERSION, "type": "pod_status", "pods": reports}
    frame["stopped"], frame["revision"] = stopped, revision
    return msgpack.packb(frame, use_bin_type=True)


def new_session() -> aiohttp.ClientSession:
    """A session for many long-lived sockets: no pool limit, a bounded connect time."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=None, connect=10.0),
    )


# ---- one hollow node -----------------------------------------------------------------------


class HollowNode:
    """One simulated node: one WebSocket to the scheduler, reconnecting with backoff forever.

    `run()` is the node's only task (its per-connection helpers are children of it);
    `start()`/`stop()` wrap it for callers that want one node on its own.
    """

    def __init__(
        self,
        name: str,
        server: str,
        token: str,
        options: HollowOptions | None = None,
        *,
        labels: dict[str, str] | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.name = name
        self.url = server.rstrip("/") + "/api/v1/agent"
        self.token = token
        self.credential: str | None = None  # the node credential, kept in memory only
        self.options = options or HollowOptions()
        self.labels = {"kubernetes.io/hostname": name, **self.options.labels, **(labels or {})}
        self.pods: dict[str, SimPod] = {}
        self.revision = 0
        self.connected = asyncio.Event()  # set between a welcome and the next disconnect
        self.connects = 0
        self.frames_sent = 0
        self.heartbeat_seconds = DEFAULT_HEARTBEAT_SECONDS  # the welcome's, then updates
        self.session = session  # shared by a HollowCluster's nodes; else the node opens its own
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._pending: dict[str, SimPod] = {}
        self._stopped: set[str] = set()  # uids forgotten but not yet reported stopped
        self._ack: int | None = None  # desired revision applied, not yet acknowledged
        self._beat: bytes | None = None  # the encoded heartbeat, until a pod changes
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle

    async def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"hollow:{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        """Connect, serve, reconnect with jittered exponential backoff; until cancelled."""
        own_session = self.session is None
        session = self.session or new_session()
        attempt = 0
        try:
            while True:
                welcomed = self.connects
                try:
                    await self._serve(session)
                except* (aiohttp.ClientError, OSError, ProtocolError, TimeoutError) as group:
                    _LOGGER.debug("%s: link failed: %r", self.name, group.exceptions)
                except* Exception:
                    _LOGGER.exception("%s: unexpected error on the link", self.name)
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError  # a stop raced a link error inside a TaskGroup
                self.connected.clear()
                self._ws = None
                attempt = 0 if self.connects > welcomed else attempt + 1
                await asyncio.sleep(backoff_delay(attempt, self.options.backoff_cap))
        finally:
            for pod in self.pods.values():
                pod.cancel_timer()
            if own_session:
                await session.close()

    async def _serve(self, session: aiohttp.ClientSession) -> None:
        """One connection: hello, welcome, then heartbeats, statuses and desired changes."""
        headers = {"Authorization": f"Bearer {self.credential or self.token}"}
        try:
            ws = await session.ws_connect(
                self.url, headers=headers, max_msg_size=MAX_FRAME_BYTES, autoping=True
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 401 and self.credential is not None:
                self.credential = None  # revoked (node deleted): join again with the join token
            raise
        async with ws:
            self._ws = ws
            self._pending.clear()  # hello carries every status; `_stopped` is kept
            self._ack = None  # the welcome resyncs: nothing of the old link to acknowledge
            await self._send(Hello(node=self.node_info(), pods=self._reports(self.pods.values())))
            async with asyncio.timeout(WELCOME_TIMEOUT):
                welcome = await receive_welcome(lambda: self._receive(ws))
            if not isinstance(welcome, Welcome):
                raise ProtocolError(f"expected a welcome frame, got {type(welcome).__name__}")
            self.connects += 1
            if welcome.credential is not None:
                self.credential = welcome.credential
                await self._send(CredentialAck())
            self._apply(welcome.revision, welcome.pods, [], welcome.stop, full=True)
            self.heartbeat_seconds = float(
                welcome.config.get("heartbeat_seconds", DEFAULT_HEARTBEAT_SECONDS)
            )
            self.connected.set()
            if self._stopped:
                self._dirty.set()
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._heartbeats())
                    tg.create_task(self._flusher())
                    await self._receive_loop(ws)
                    raise _Disconnected  # the socket closed: end the helpers, then reconnect
            except* _Disconnected:
                pass

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> Frame:
        msg = await ws.receive()
        if msg.type is not aiohttp.WSMsgType.BINARY:
            raise ConnectionError(f"link closed ({msg.type.name}, {msg.data!r})")
        return decode(msg.data)

    async def _receive_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            try:
                frame = await self._receive(ws)
            except ConnectionError as exc:
                _LOGGER.debug("%s: %s", self.name, exc)
                return
            if isinstance(frame, Desired):
                self._apply(frame.revision, frame.upsert, frame.remove, [], full=False)
                self._ack = frame.revision  # acknowledged by the next pod_status
                self._dirty.set()
            elif isinstance(frame, LogsRequest):
                await self._send(simulated_log(self.pods.get(frame.uid), frame))
            elif isinstance(frame, ConfigUpdate):
                if "heartbeat_seconds" in frame.config:
                    self.heartbeat_seconds = float(frame.config["heartbeat_seconds"])
            elif isinstance(frame, ErrorFrame):
                _LOGGER.warning("%s: scheduler says: %s", self.name, frame.message)
            else:
                _LOGGER.warning("%s: ignoring unexpected %r frame", self.name, frame)

    async def _send(self, frame: Frame) -> None:
        await self._send_bytes(encode(frame))

    async def _send_bytes(self, data: bytes) -> None:
        if self._ws is None or self._ws.closed:
            raise ConnectionError("not connected")
        await self._ws.send_bytes(data)
        self.frames_sent += 1

    async def _heartbeats(self) -> None:
        # Spread many nodes over the period; the interval is read after each beat, so a
        # config update from the scheduler holds from the next one.
        loop = asyncio.get_running_loop()
        due = loop.time() + random.uniform(0, self.heartbeat_seconds)
        while True:
            await sleep_until_slot(due, self.heartbeat_seconds / BEAT_SLOTS)
            if self._beat is None:  # simulated usage changes only with the pods' states
                self._beat = encode_heartbeat(*self._usage())
            await self._send_bytes(self._beat)
            # On the node's own schedule, but no catching up with beats missed in a stall.
            due = max(due + self.heartbeat_seconds, loop.time())

    async def _flusher(self) -> None:
        """Send status changes, and the acknowledgement of the desired frames applied, as
        pod_status frames: at most one per `batch_seconds`. A change after a quiet window
        goes out at once, in the wake-up that made it (a desired frame's, mostly: waiting
        cost a wake-up of its own per placed pod), and the changes made until the window
        of the last frame ends share the next one."""
        loop = asyncio.get_running_loop()
        quiet_at = -math.inf  # when the window of the last frame ends
        while True:
            await self._dirty.wait()
            if loop.time() < quiet_at:
                await sleep_until_slot(quiet_at, self.options.batch_seconds)
            self._dirty.clear()
            pods, self._pending = list(self._pending.values()), {}
            stopped, self._stopped = sorted(self._stopped), set()
            ack, self._ack = self._ack, None
            step = MAX_REPORTS_PER_FRAME
            for i in range(0, max(len(pods), len(stopped), ack is not None), step):
                data = encode_pod_status(
                    [pod.report_wire() for pod in pods[i : i + step]],
                    stopped[i : i + step],
                    ack if i == 0 else None,
                )
                try:
                    await self._send_bytes(data)
                except BaseException:
                    self._stopped.update(stopped[i:])  # unsent: report them after the resync
                    raise
            quiet_at = loop.time() + self.options.batch_seconds

    # -- frames

    def node_info(self) -> NodeInfo:
        capacity = {"cpu": self.options.cpu, "memory": self.options.memory}
        capacity["pods"] = str(self.options.max_pods)
        return NodeInfo(
            name=self.name,
            labels=self.labels,
            capacity=capacity,
            allocatable=dict(capacity),
            info={
                "kubeletVersion": git_version(),
                "containerRuntimeVersion": "hollow://",
                "operatingSystem": "linux",
                "architecture": host_arch(),
                "agentVersion": AGENT_VERSION,
                "runtime": "hollow",
            },
            address="127.0.0.1",
        )

    def heartbeat(self) -> Heartbeat:
        usage, uids, cpu, memory = self._usage()
        return Heartbeat(usage=usage, pod_uids=uids, pod_cpu=cpu, pod_memory=memory)

    def _usage(self) -> tuple[list[int], list[str], list[int], list[int]]:
        """The heartbeat's (usage, pod_uids, pod_cpu, pod_memory): requests times
        utilization, running pods only."""
        util = self.options.utilization
        running = [(uid, p) for uid, p in self.pods.items() if p.state is SimState.RUNNING]
        cpu = [int(p.cpu_millis * util) for _, p in running]
        memory = [int(p.memory_bytes * util) for _, p in running]
        return [sum(cpu), sum(memory)], [uid for uid, _ in running], cpu, memory

    @staticmethod
    def _reports(pods: Iterable[SimPod]) -> list[PodReport]:
        return [pod.report() for pod in pods]

    # -- desired state

    def _apply(
        self,
        revision: int,
        upsert: list[bytes],
        remove: list[str],
        stop: list[str],
        *,
        full: bool,
    ) -> None:
        """Reconcile simulated pods with a welcome (`full`) or a desired-set change."""
        # Both kinds are idempotent, so a frame is applied whatever its revision: a
        # desired change may carry the welcome's own revision if it raced the welcome.
        self.revision = revision if full else max(self.revision, revision)
        pods = [json.loads(p) for p in upsert]
        by_uid = {p["metadata"]["uid"]: p for p in pods}
        if full:
            to_start, to_stop = diff_desired(self.pods, by_uid, stop)
            to_stop |= set(stop)  # say "stopped" even for what already stopped here
        else:
            to_stop = set(remove)
            to_start = set(by_uid) - set(self.pods) - to_stop
        for uid in to_stop:
            self._forget(uid)
        for uid in to_start:
            self._start(SimPod.from_wire(by_uid[uid]))
        for uid in by_uid.keys() & self.pods.keys():
            self._update(self.pods[uid], SimPod.from_wire(by_uid[uid]).containers)

    def _update(self, pod: SimPod, containers: list[tuple[str, str]]) -> None:
        """A pod it runs, its images changed (a pod update): the real agent restarts the
        containers whose image changed; here a running pod ends (143, as a SIGTERM) and
        runs again with the new images, restartCount + 1. A pod that no longer runs keeps
        the images it ran with, as the real agent reports them."""
        if containers == pod.containers or not pod.active:
            return
        pod.containers = containers
        if pod.state is SimState.RUNNING:
            pod.cancel_timer()
            pod.last_exit = (143, "Error", pod.started_at, now())
            pod.restart_count += 1
            self._run(pod)
        else:
            self._changed(pod)

    def _forget(self, uid: str) -> None:
        """Stop = forget; the uid is reported stopped, on this link or after a resync."""
        pod = self.pods.pop(uid, None)
        if pod is not None:
            pod.cancel_timer()
            self._beat = None
        self._pending.pop(uid, None)
        self._stopped.add(uid)
        self._dirty.set()

    def _changed(self, pod: SimPod) -> None:
        self._beat = None
        if pod.uid in self.pods:
            self._pending[pod.uid] = pod
            self._dirty.set()

    def _later(self, pod: SimPod, delay: float, action: Callable[[SimPod], None]) -> None:
        pod.cancel_timer()
        pod.timer = asyncio.get_running_loop().call_later(delay, action, pod)

    def _start(self, pod: SimPod) -> None:
        self.pods[pod.uid] = pod
        self._stopped.discard(pod.uid)
        pod.start_time = now()
        pod.fate = self.options.fate(pod.uid)
        if pod.fate is Fate.FAIL_START:
            self._exit(pod, 1, "Error", started=False)
        elif self.options.start_delay > 0:
            self._changed(pod)  # report ContainerCreating first
            self._later(pod, self.options.start_delay, self._run)
        else:
            self._run(pod)

    def _run(self, pod: SimPod) -> None:
        pod.timer = None
        pod.state, pod.started_at = SimState.RUNNING, now()
        self._changed(pod)
        if self.options.doomed(pod.namespace, pod.labels):
            delay = self.options.complete_after or 0.0
            self._later(pod, delay, lambda p: self._exit(p, 1, "Error"))
        elif pod.fate is Fate.CRASH:
            self._later(pod, self.options.crash_after, lambda p: self._exit(p, 1, "Error"))
        elif self.options.complete_after is not None and pod.restart_policy != "Always":
            self._later(pod, self.options.complete_after, lambda p: self._exit(p, 0, "Completed"))

    def _exit(self, pod: SimPod, code: int, reason: str, *, started: bool = True) -> None:
        pod.timer = None
        pod.last_exit = (code, reason, pod.started_at, now())
        if not restarts_after_exit(pod.restart_policy, code):
            pod.state = SimState.SUCCEEDED if code == 0 else SimState.FAILED
        elif started:
            pod.restart_count += 1
            self._run(pod)
            return
        else:
            pod.state = SimState.CRASH_LOOP  # fails every start: stays waiting
        self._changed(pod)


class _Disconnected(Exception):
    """The scheduler closed the link; raised inside a session's TaskGroup to end its helpers."""


# ---- many nodes ----------------------------------------------------------------------------


class HollowCluster:
    """`count` hollow nodes named `{prefix}-{index:04d}`, one task each, in one TaskGroup."""

    def __init__(
        self,
        server: str,
        token: str,
        count: int,
        options: HollowOptions | None = None,
        *,
        prefix: str = "hollow",
        first_index: int = 0,
        ramp_seconds: float = 0.0,
    ) -> None:
        self.server, self.token, self.options = server, token, options or HollowOptions()
        self.ramp_seconds = ramp_seconds
        self.nodes: list[HollowNode] = []
        for index in range(first_index, first_index + count):
            labels = {}
            if self.options.zones > 0:
                labels["topology.kubernetes.io/zone"] = f"zone-{index % self.options.zones}"
            self.nodes.append(
                HollowNode(f"{prefix}-{index:04d}", server, token, self.options, labels=labels)
            )
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Run every node until cancelled; their sockets share one connection pool."""
        async with new_session() as session:
            async with asyncio.TaskGroup() as tg:
                step = self.ramp_seconds / max(1, len(self.nodes))
                for node in self.nodes:
                    node.session = session
                    tg.create_task(node.run(), name=f"hollow:{node.name}")
                    if step:
                        await asyncio.sleep(step)

    async def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="hollow-cluster")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait_connected(self, seconds: float = 30.0) -> None:
        """Until every node has been welcomed; TimeoutError after `seconds`."""
        async with asyncio.timeout(seconds):
            await asyncio.gather(*(node.connected.wait() for node in self.nodes))

    async def __aenter__(self) -> HollowCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# ---- command line --------------------------------------------------------------------------


def _parse_labels(text: str) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in text.split(",") if item)
    return {key: value for key, value in pairs}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m agent.hollow",
        description="Simulated nodes speaking the real agent link, for scale tests.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--server", default="http://127.0.0.1:7070", help="scheduler base URL")
    p.add_argument("--token", default=os.environ.get("CORRAL_JOIN_TOKEN", ""), help="join token")
    p.add_argument("--nodes", type=int, default=1, help="simulated nodes in this process")
    p.add_argument("--name-prefix", default="hollow", help="nodes are PREFIX-0000, PREFIX-0001…")
    p.add_argument("--first-index", type=int, default=0, help="index of this process' 1st node")
    p.add_argument("--cpu", default="4", help="cpu capacity of each node")
    p.add_argument("--memory", default="8Gi", help="memory capacity of each node")
    p.add_argument("--max-pods", type=int, default=110, help="pods capacity of each node")
    p.add_argument("--labels", type=_parse_labels, default={}, help="k=v,k2=v2 on every node")
    p.add_argument("--zones", type=int, default=0, help="spread nodes over N zone labels")
    p.add_argument("--start-delay", type=float, default=0.0, help="seconds until Running")
    p.add_argument("--crash-rate", type=float, default=0.0, help="fraction of pods that crash")
    p.add_argument("--crash-after", type=float, default=10.0, help="seconds a crasher runs")
    p.add_argument("--fail-start-rate", type=float, default=0.0, help="fraction failing to start")
    p.add_argument(
        "--complete-after", type=float, default=None, help="Never/OnFailure pods exit 0 after"
    )
    p.add_argument("--utilization", type=float, default=0.5, help="usage / requests")
    p.add_argument("--batch-ms", type=float, default=5.0, help="status coalescing window")
    p.add_argument("--ramp-seconds", type=float, default=0.0, help="spread node connects")
    p.add_argument("--seed", default="", help="seed of the failure injection")
    p.add_argument(
        "--fail-first", type=int, default=0, help="the first N runs of each --fail-first-key group"
    )
    p.add_argument(
        "--fail-first-key", default="", help="label grouping pods for --fail-first (job-name)"
    )
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return p.parse_args(argv)


async def _main(args: argparse.Namespace) -> None:
    with GcPacer():
        await _run(args)


async def _run(args: argparse.Namespace) -> None:
    options = HollowOptions(
        cpu=args.cpu,
        memory=args.memory,
        max_pods=args.max_pods,
        labels=args.labels,
        zones=args.zones,
        start_delay=args.start_delay,
        crash_rate=args.crash_rate,
        crash_after=args.crash_after,
        fail_start_rate=args.fail_start_rate,
        complete_after=args.complete_after,
        utilization=args.utilization,
        batch_seconds=args.batch_ms / 1000,
        seed=args.seed,
        fail_first=args.fail_first,
        fail_first_key=args.fail_first_key,
    )
    cluster = HollowCluster(
        args.server,
        args.token,
        args.nodes,
        options,
        prefix=args.name_prefix,
        first_index=args.first_index,
        ramp_seconds=args.ramp_seconds,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    await cluster.start()
    await stop.wait()
    _LOGGER.info("stopping %d hollow nodes after %.1fs", args.nodes, time.monotonic() - started)
    await cluster.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    eventloop.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
