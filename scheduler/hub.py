"""The agent hub: one WebSocket session per node, speaking `common.protocol`.

A session starts with hello -> welcome (a full resync: the node's desired pod
set and the uids it must stop), then carries heartbeats and pod status reports
in, and desired-set changes out. A link is opened with the join token (a node's
first connection: the welcome then carries the node's own credential) or with a
node credential, which binds the link to that node (`scheduler/nodeauth.py`): it
cannot say it is another node, and its reports about other nodes' pods are refused.
Desired changes are derived from store events (`on_pod_change`), coalesced per
session and sent by the session's sender task, so a burst of binds reaches an
agent in a few frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web
from pydantic import ValidationError

from common import protocol
from common.heap import drop_tracebacks
from common.logsince import log_start, parse_stamp
from common.models import (
    NODE_SYSTEM_INFO,
    Node,
    NodeCondition,
    NodeSpec,
    NodeStatus,
    ObjectMeta,
    Pod,
    PodStatus,
    check_dns_subdomain,
    now,
)
from common.nodelabels import describe, restricted_keys
from common.quantity import QuantityError, cpu_millis, memory_bytes, parse_quantity
from scheduler.auth import secret_bytes
from scheduler.cluster import TERMINAL_PHASES, NodeState
from scheduler.context import Context
from scheduler.events import node_ref, pod_ref
from scheduler.logfilter import LogFilter
from scheduler.nodeauth import AlreadyJoined, Issued, NodeCredentials
from scheduler.objects import (
    decode,
    encode,
    node_key,
    pod_store_key,
    replaced,
    set_fields,
    split_status,
    status_json,
)
from scheduler.podfinal import remove_stopped
from scheduler.stall import woke_from_stall
from scheduler.store import KV, Conflict, NotFound, Op, Store, StoreUnavailable

_LOGGER = logging.getLogger(__name__)

HELLO_TIMEOUT = 10.0
MAX_UNACKED = 1000  # desired frames remembered per link until acknowledged
# A link that brought no frame for this long (times the node's heartbeat stretch) is
# taken for dead and closed; the agents heartbeat every second (times the stretch).
LINK_SILENCE_SECONDS = 30.0
LINK_CHECK_SECONDS = 5.0
# How long closing a link may wait for its peer to take the close; then it is dropped.
LINK_CLOSE_SECONDS = 5.0
STATUS_WRITE_ATTEMPTS = 3
REGISTER_ATTEMPTS = 3  # writes of a joining node's object, against other writes of it
# What a log stream holds for a reader that has not taken it; past this, the stream is
# ended (the reader gets what is queued, then the reason; the agent is told to stop). The
# link has no flow control per stream; with it, these would not be needed.
# A *followed* log: 2,048 chunks (the agent's are 32 KiB: 64 MiB, more than an agent keeps
# of a container's log with its defaults, 4 x 10 MiB, so the backlog fits), else it would be
# kept in memory as fast as the container logs.
MAX_LOG_CHUNKS_QUEUED = 2048
# A log that is not followed ends by itself, so a reader that takes its time (`corral logs
# POD | less`) gets all of it, up to a quarter GiB behind: only an agent that never ends
# one (or a log kept far past the defaults) reaches that.
MAX_UNFOLLOWED_LOG_CHUNKS_QUEUED = 8192
# Either kind, in characters: an agent's chunk may be a whole 16 MiB frame, so a count
# alone bounds nothing.
MAX_LOG_CHARS_QUEUED = {True: 64 << 20, False: 256 << 20}
# An error an agent is sent, and the scheduler logs and keeps (`RecentErrors`), is cut to
# this many characters: it may quote what the agent sent (a node name, a label key, a
# quantity), and a hello of 12 MB of node name made 24 MB of message, logged, kept among
# the recent errors (50 of them) and sent back in a frame the agent refuses as too big.
MAX_ERROR_MESSAGE = 2000
# What a hello may tell of its node: an address (an IP or a host name), and the entries of
# its info (Kubernetes' NodeSystemInfo and corral's own: a dozen, each a version or an id),
# capacity and allocatable (a few resources).
MAX_ADDRESS = 253
MAX_NODE_ENTRIES = 64
MAX_INFO_KEY = 63
MAX_INFO_VALUE = 1024
# The largest pod status an agent may report, as JSON. Kubernetes' own are a few KiB (the
# kubelet cuts termination messages to 12 KiB a pod); a node that reported 10 MB ones
# made its pods bigger than the API takes, and each report another copy in the store's
# history.
MAX_STATUS_BYTES = 256 * 1024
# What ends a link's read loop: what ends aiohttp's `async for` over it, and an error.
_LINK_ENDED = frozenset((WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR))


class LogsUnavailable(Exception):
    """A log stream could not be had from the node (not connected, unknown container...)."""


@dataclass(frozen=True, slots=True)
class LinkAuth:
    """Who opened a link: the join token (node None) or the credential of `node`."""

    node: str | None = None
    credential_id: str | None = None
    confirmed: bool = False


def desired_on(pod: Pod | None) -> str | None:
    """The node that must run (or, finished, keep) this incarnation, if any.

    A pod that finished on its node stays in the node's desired set until it is deleted,
    so its agent keeps its containers and logs (the kubelet's way); the agent's status
    never carries a pod-level `reason`. One the scheduler made terminal without its node
    (`NodeLost`, `Evicted`: always with a reason) is not desired: a returning node is
    told to stop it. A field check, no more: this runs for every pod change.
    """
    if pod is None or pod.spec.node_name is None or pod.metadata.deletion_timestamp is not None:
        return None
    status = pod.status
    if status.reason is not None and status.phase in TERMINAL_PHASES:
        return None
    return pod.spec.node_name


def _images(pod: Pod) -> list[str]:
    return [c.image for c in pod.spec.containers]


def _agent_time(text: str) -> datetime | None:
    """An agent's RFC 3339 time, in UTC; None (taken as received) for one unreadable, one
    without an offset (a naive time cannot be compared with the others, and every event
    list sorts by time) or one with no instant in UTC (year 1 at +14:00)."""
    stamp = parse_stamp(text)
    try:
        return None if stamp is None else stamp.astimezone(UTC)
    except OverflowError:
        return None


class LogStream:
    """A log relayed from an agent to one reader: the chunks it has not taken yet, and the
    characters they hold, bounded (`full`) since the link has no flow control per stream."""

    __slots__ = ("chars", "follow", "queue")

    def __init__(self, follow: bool) -> None:
        self.follow = follow
        self.queue: asyncio.Queue[protocol.LogsChunk | None] = asyncio.Queue()
        self.chars = 0

    def full(self) -> bool:
        chunks = MAX_LOG_CHUNKS_QUEUED if self.follow else MAX_UNFOLLOWED_LOG_CHUNKS_QUEUED
        return self.queue.qsize() >= chunks or self.chars >= MAX_LOG_CHARS_QUEUED[self.follow]

    def put(self, chunk: protocol.LogsChunk | None) -> None:
        """Queue `chunk` (None: the node went away), whatever the bound."""
        if chunk is not None:
            self.chars += len(chunk.data)
        self.queue.put_nowait(chunk)

    async def get(self) -> protocol.LogsChunk | None:
        chunk = await self.queue.get()
        if chunk is not None:
            self.chars -= len(chunk.data)
        return chunk

    def too_slow(self, node: str) -> str:
        """Why the stream ended, once `full`."""
        held = f"{self.queue.qsize()} chunks ({self.chars / (1 << 20):.0f} MiB)"
        return f"the reader is too slow: {held} of the log from node {node} were waiting for it"


class AgentSession:
    def __init__(
        self,
        node: str,
        ws: web.WebSocketResponse,
        version: int = protocol.PROTOCOL_VERSION,
        transport: asyncio.Transport | None = None,
    ) -> None:
        self.node = node
        self.ws = ws
        self.transport = transport  # the link's connection, to drop it if a close hangs
        self.version = version  # the agent's protocol, from its hello: every frame to it
        self.desired: set[str] = set()  # uids the agent has been told to run
        self.upserts: dict[str, bytes] = {}  # uid -> the pod's stored JSON
        self.removes: set[str] = set()
        self.changed = asyncio.Event()
        # Desired frames sent and not yet acknowledged (revision, monotonic time sent),
        # oldest first: an agent that stops acknowledging is stuck applying them.
        self.unacked: deque[tuple[int, float]] = deque()
        self.sender: asyncio.Task[None] | None = None
        self.log_streams: dict[int, LogStream] = {}
        self.credential_id: str | None = None  # issued in this session's welcome
        self.last_frame = time.monotonic()  # when the agent last sent anything
        # Set once the welcome is sent, all its parts: nothing else goes out before (the
        # agent takes any other frame first for its link refused, or its welcome broken).
        self.welcomed = False

    def want(self, uid: str, stored: bytes, *, again: bool = False) -> None:
        """Pod `uid` must run here: sent to the agent if it was not desired yet, or if
        `again` (its spec changed: the agent restarts the containers whose image did)."""
        self.removes.discard(uid)
        if again and uid in self.desired:
            self.upserts[uid] = stored
            self.changed.set()
        elif uid not in self.desired:
            self.desired.add(uid)
            self.upserts[uid] = stored
            self.changed.set()

    def sent(self, revision: int, at: float) -> None:
        """A desired frame of `revision` went out at `at`."""
        if len(self.unacked) >= MAX_UNACKED:
            # Bounded for an agent that never answers: the newest entry takes the new
            # revision and keeps its older time, so a lag is never under-reported.
            self.unacked[-1] = (revision, self.unacked[-1][1])
        else:
            self.unacked.append((revision, at))

    def acked(self, revision: int) -> None:
        """The agent applied every desired change up to `revision`."""
        unacked = self.unacked
        while unacked and unacked[0][0] <= revision:
            unacked.popleft()

    @property
    def unacked_since(self) -> float | None:
        """When the oldest desired frame the agent has not acknowledged was sent."""
        return self.unacked[0][1] if self.unacked else None

    def unwant(self, uid: str) -> None:
        self.upserts.pop(uid, None)
        if uid in self.desired:
            self.desired.discard(uid)
            self.removes.add(uid)
            self.changed.set()


def forget_link_error(ws: web.WebSocketResponse) -> None:
    """Drop the tracebacks of the error that ended a link, which the response keeps
    (`exception()`): aiohttp's `close()` stores what it raised on a link the peer reset,
    and its traceback holds the frame of that `close()`, which holds the response. The
    cycle (the response, its request, protocol, transport, the error's frames: about
    13 KiB) is left for good once it has outlived a young collection (common/heap.py),
    so every agent that went away without a clean close was kept. Without the
    tracebacks, reference counting frees it all when the handler returns."""
    drop_tracebacks(ws.exception())


class Hub:
    def __init__(self, ctx: Context, join_token: str) -> None:
        self._config = ctx.config
        self._store = ctx.store
        self._cluster = ctx.cluster
        self._metrics = ctx.metrics
        self._errors = ctx.errors
        self._events = ctx.events
        self._token = join_token.encode()
        self.credentials = NodeCredentials(ctx.store)
        self.sessions: dict[str, AgentSession] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stretched_at = 0  # the cluster size when heartbeats were last re-stretched
        self._frame_counts = ctx.metrics.agent_frames  # type -> frames received
        self._log_ids = 0
        self._watching = False  # the dead-link watchdog runs
        self._cluster.pod_listeners.append(self.on_pod_change)

    # -- desired-set changes from the store ---------------------------------

    def on_pod_change(self, key: str, old: Pod | None, new: Pod | None) -> None:
        old_node, new_node = desired_on(old), desired_on(new)
        old_uid = old.metadata.uid if old is not None else None
        new_uid = new.metadata.uid if new is not None else None
        if old_node is not None and (old_node != new_node or old_uid != new_uid):
            session = self.sessions.get(old_node)
            if session is not None and old_uid:
                session.unwant(old_uid)
        if new_node is not None and new is not None:
            session = self.sessions.get(new_node)
            kv = self._cluster.pod_kvs.get(key)
            if session is not None and kv is not None and new_uid:
                # The same incarnation with other images (the only spec change an update
                # may make): sent again, to agents that act on it; an older agent keeps
                # what it runs (docs/api.md).
                # A status write shares the old version's spec (`replaced`): no lists built
                # for the most frequent pod write of all.
                again = (
                    old is not None
                    and old.spec is not new.spec
                    and old_uid == new_uid
                    and session.version >= protocol.SPEC_UPDATE_PROTOCOL
                    and _images(old) != _images(new)
                )
                session.want(new_uid, kv.value, again=again)

    # -- the WebSocket endpoint ---------------------------------------------

    async def authenticate(self, request: web.Request) -> LinkAuth | None:
        """The join token or a node credential from the upgrade request; None if neither."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        if hmac.compare_digest(secret_bytes(token), self._token):
            return LinkAuth()
        record = await self.credentials.authenticate(token)
        if record is None:
            return None
        return LinkAuth(record.node, record.id, record.confirmed)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        from scheduler.api.errors import Unauthorized  # the API owns the error shapes

        auth = await self.authenticate(request)
        if auth is None:
            raise Unauthorized("agent link: missing or wrong join token or node credential")
        # No permessage-deflate: the frames are compact msgpack, mostly small, on a
        # cluster network; deflating each one cost both ends more CPU than it saved.
        # No aiohttp heartbeat: it re-arms a timer for every frame received, and the
        # agents' own heartbeats prove a link alive (`_watch_links` closes a silent one).
        ws = web.WebSocketResponse(
            heartbeat=None, max_msg_size=protocol.MAX_FRAME_BYTES, compress=False
        )
        await ws.prepare(request)
        session: AgentSession | None = None
        try:
            hello = await self._read_hello(ws)
            if hello is None:
                return ws
            session = await self._start_session(ws, hello, request, auth)
            if session is None:
                return ws
            await self._read_loop(session)
        finally:
            if session is not None:
                await self._end_session(session)
            await ws.close()
            forget_link_error(ws)
        return ws

    async def _read_hello(
        self, ws: web.WebSocketResponse
    ) -> protocol.Hello | protocol.HelloV4 | None:
        try:
            async with asyncio.timeout(HELLO_TIMEOUT):
                msg = await ws.receive()
        except TimeoutError:
            await self._send_error(ws, f"no hello within {HELLO_TIMEOUT:.0f}s")
            return None
        if msg.type != WSMsgType.BINARY:
            await self._send_error(ws, "expected a binary hello frame")
            return None
        try:
            frame = protocol.decode(msg.data, protocol.AGENT_PROTOCOLS)
        except protocol.ProtocolError as exc:
            await self._send_error(ws, str(exc))
            return None
        if not isinstance(frame, protocol.Hello | protocol.HelloV4):
            kind = getattr(frame, "type", "?")
            await self._send_error(ws, f"expected hello, got {kind}", frame.v)
            return None
        return frame

    async def _send_error(
        self, ws: web.WebSocketResponse, message: str, version: int = protocol.PROTOCOL_VERSION
    ) -> None:
        if len(message) > MAX_ERROR_MESSAGE:
            message = f"{message[: MAX_ERROR_MESSAGE - 3]}..."
        self._errors.add(f"agent link: {message}")
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_bytes(protocol.encode(protocol.ErrorFrame(message=message), version))

    async def _refuse(
        self,
        ws: web.WebSocketResponse,
        node: str | None,
        message: str,
        reason: str,
        version: int = protocol.PROTOCOL_VERSION,
    ) -> None:
        """Refuse what a link asked for: an error frame, the log, and an event on the node."""
        if node is not None:
            self._events.record(node_ref(node), reason, message, type="Warning")
        await self._send_error(ws, message, version)

    async def _admit(
        self, ws: web.WebSocketResponse, info: protocol.NodeInfo, auth: LinkAuth, version: int
    ) -> tuple[bool, Issued | None]:
        """May this link be node `info.name`? (admitted, credential to send in the welcome)."""
        if auth.node is not None:
            if info.name != auth.node:
                await self._refuse(
                    ws,
                    auth.node,
                    f"the credential of node {auth.node} cannot be used as node "
                    f"{info.name!r}; refused",
                    "LinkRefused",
                    version,
                )
                return False, None
            if not auth.confirmed and auth.credential_id:
                await self.credentials.confirm(auth.node, auth.credential_id)  # used: stored
            return True, None
        try:
            issued = await self.credentials.issue(info.name)
        except AlreadyJoined:
            await self._refuse(
                ws,
                info.name,
                f"node {info.name} has already joined and must connect with its node "
                "credential, not the join token; to join it again, delete it first "
                f"(corral delete node {info.name})",
                "JoinRefused",
                version,
            )
            return False, None
        return True, issued

    async def _start_session(
        self,
        ws: web.WebSocketResponse,
        hello: protocol.Hello | protocol.HelloV4,
        request: web.BaseRequest,
        auth: LinkAuth,
    ) -> AgentSession | None:
        info = hello.node
        remote = request.remote
        try:
            check_node_info(info)
        except (ValueError, QuantityError) as exc:
            name = protocol.shown(repr(info.name))  # not checked yet: any length
            await self._send_error(ws, f"node {name} refused: {exc}", hello.v)
            return None
        # Before the Node object is written: a refused link must not change it.
        admitted, issued = await self._admit(ws, info, auth, hello.v)
        if not admitted:
            return None
        # Labels a node may not set on itself (Kubernetes' NodeRestriction) are left out,
        # not the link refused: an agent of before this check, configured with
        # `node-role.kubernetes.io/worker`, would be locked out at the scheduler's
        # upgrade. A current agent refuses them in its configuration.
        ignored = restricted_keys(info.labels)
        if ignored:
            dropped = set(ignored)
            kept = {k: v for k, v in info.labels.items() if k not in dropped}
            info = info.model_copy(update={"labels": kept})
        try:
            node = await self._register(info, remote)
        except ValidationError as exc:  # `str` of it lists every error, whole
            await self._send_error(
                ws, f"node {info.name!r} refused: {protocol.problems(exc)}", hello.v
            )
            return None
        except (ValueError, QuantityError) as exc:
            await self._send_error(ws, f"node {info.name!r} refused: {exc}", hello.v)
            return None
        except Conflict:  # lost to other writes of the node REGISTER_ATTEMPTS times
            await self._send_error(ws, f"node {info.name!r}: busy; try again", hello.v)
            return None
        name = node.metadata.name
        if ignored:
            message = (
                f"node {name}: labels a node may not set on itself left out: "
                f"{describe(ignored)} (set them through the API)"
            )
            self._events.record(node_ref(name), "LabelsIgnored", message, type="Warning")
            self._errors.add(f"agent link: {message}")
        previous = self.sessions.get(name)
        session = AgentSession(name, ws, hello.v, request.transport)
        session.credential_id = issued.record.id if issued else None
        self.sessions[name] = session
        if previous is not None:  # the newest link wins; the old one is stale
            _LOGGER.info("node %s reconnected; closing its previous link", name)
            # Not awaited: an old link that reads nothing (its agent hung) must not hold
            # up the welcome of the new one.
            self._spawn(self._close_link(previous, b"replaced by a newer link"))
        state = self._cluster.nodes.get(name)
        if state is not None:
            self._cluster.set_connected(state, True)
            state.last_heartbeat = time.monotonic()
            state.desired_unacked_since = None  # the welcome resyncs whatever was pending
        # The hello's statuses are durable (or their writes failed) before the welcome.
        writes = self._apply_reports(session, hello.pods)
        if writes:
            await asyncio.wait(writes)
        desired = [p for p in self._cluster.pods_on(name) if desired_on(p) == name]
        wanted = {p.metadata.uid for p in desired}
        desired += self._finished_here(name, hello.pods, wanted)
        kvs = self._cluster.pod_kvs
        stored = [kvs[pod_store_key(p)] for p in desired]
        stop = sorted({r.uid for r in hello.pods} - wanted)
        session.desired = {uid for uid in wanted if uid}
        # The cluster's size, this node included (the watch may not have brought it yet).
        size = len(self._cluster.nodes) + (name not in self._cluster.nodes)
        stretch = self._config.heartbeat_stretch(size)
        self._cluster.heartbeat_stretch[name] = stretch
        welcome = protocol.Welcome(
            revision=self._cluster.revision,
            config=self._link_config(stretch),
            pods=[protocol.pod_for_agent(kv.value, session.version) for kv in stored],
            stop=stop,
            credential=issued.credential if issued else None,
        )
        frames = protocol.welcome_frames(welcome, session.version)
        if len(frames) == 1 and len(frames[0]) > protocol.MAX_FRAME_BYTES:
            _LOGGER.warning(
                "node %s: its welcome (%d MiB) is too big for its agent of protocol %d, "
                "which takes a welcome in one frame only; upgrade the agent",
                name,
                len(frames[0]) >> 20,
                session.version,
            )
        for data in frames:
            await ws.send_bytes(data)
        session.welcomed = True
        self._restretch(size)
        self._events.record(node_ref(name), "NodeReady", f"corral-agent on {name} joined")
        _LOGGER.info(
            "node %s joined from %s: runs %d pods, desired %d, told to stop %d",
            name,
            remote,
            len(hello.pods),
            len(desired),
            len(stop),
        )
        session.sender = asyncio.create_task(self._send_loop(session), name=f"hub-send-{name}")
        if not self._watching:
            self._watching = True
            self._spawn(self._watch_links())
        return session

    def _finished_here(
        self,
        name: str,
        reports: Sequence[protocol.PodReport | protocol.PodReportV4],
        wanted: set[str | None],
    ) -> list[Pod]:
        """The pods that finished on the node and its agent still holds (its hello says
        so), for the welcome. A finished pod no longer counts against its node, so
        `pods_on` leaves it out; looked up by the hello's uids, not by a scan of all pods.
        Adds their uids to `wanted`."""
        found = []
        for report in reports:
            key = self._cluster.by_uid.get(report.uid)
            pod = self._cluster.pods.get(key) if key else None
            if (
                pod is not None
                and report.uid not in wanted
                and pod.metadata.uid == report.uid
                and pod.status.phase in TERMINAL_PHASES
                and desired_on(pod) == name
            ):
                found.append(pod)
                wanted.add(report.uid)
        return found

    async def _register(self, info: protocol.NodeInfo, remote: str | None) -> Node:
        """Create or refresh the Node object, Ready, durably, before the welcome. Made
        again on the newest version if another write of the node (a NotReady or Ready
        mark, a cordon) landed in between."""
        key = node_key(info.name)
        for _attempt in range(REGISTER_ATTEMPTS - 1):
            try:
                return await self._register_once(key, info, remote)
            except Conflict:
                await self._store.settled(key)
        return await self._register_once(key, info, remote)

    async def _register_once(self, key: str, info: protocol.NodeInfo, remote: str | None) -> Node:
        kv = await self._store.get(key)
        stamp = now()
        spec = NodeSpec()
        created = stamp
        uid = None
        labels: dict[str, str] = {}
        annotations: dict[str, str] = {}
        if kv is not None:
            existing = Node.model_validate_json(kv.value)
            spec = existing.spec
            created = existing.metadata.creation_timestamp or stamp
            uid = existing.metadata.uid
            # What was set through the API (`kubectl label node`) is kept, as a kubelet
            # keeps it; the agent's own labels are set over it, but for its hostname.
            labels, annotations = existing.metadata.labels, existing.metadata.annotations
        address = info.address or remote
        node = Node(
            metadata=ObjectMeta(
                name=info.name,
                # The node's name, whatever its agent says: a node labelled with another's
                # name would draw the pods pinned to that one (`nodeSelector`).
                labels={**labels, **info.labels, "kubernetes.io/hostname": info.name},
                annotations=dict(annotations),
                creation_timestamp=created,
                uid=uid or _uid(),
            ),
            spec=spec,
            status=NodeStatus(
                capacity=dict(info.capacity),
                allocatable=dict(info.allocatable),
                conditions=[
                    NodeCondition(
                        type="Ready",
                        status="True",
                        reason="AgentReady",
                        message="corral-agent is posting heartbeats",
                        last_heartbeat_time=stamp,
                        last_transition_time=stamp,
                    )
                ],
                addresses=[{"type": "InternalIP", "address": address}] if address else [],
                last_heartbeat_time=stamp,
                # What an older agent (or a hollow node) does not report is empty.
                node_info={**dict.fromkeys(NODE_SYSTEM_INFO, ""), **info.info},
            ),
        )
        await self._store.put(key, encode(node), obj=node, expect=kv.mod_revision if kv else 0)
        return node

    async def _read_loop(self, session: AgentSession) -> None:
        ws = session.ws
        counts = self._frame_counts
        while True:
            # receive() itself, not `async for`: the iterator is one more coroutine per
            # frame around it, and only ends the loop on the types tested here.
            msg = await ws.receive()
            if msg.type is not WSMsgType.BINARY:
                if msg.type in _LINK_ENDED:
                    break
                await self._send_error(
                    ws, f"node {session.node}: expected binary frames", session.version
                )
                continue
            try:
                frame = protocol.decode(msg.data, (session.version,))
            except protocol.ProtocolError as exc:
                await self._send_error(ws, f"node {session.node}: {exc}", session.version)
                continue
            counts[getattr(frame, "type", "?")] += 1
            session.last_frame = mono = time.monotonic()
            state = self._cluster.nodes.get(session.node)
            if state is not None:
                state.last_heartbeat = mono
            if isinstance(frame, protocol.Heartbeat):
                if state is not None:
                    self._heard(state, frame)
            elif isinstance(frame, protocol.PodStatusUpdate | protocol.PodStatusUpdateV4):
                answers: dict[str, None] = {}
                if frame.pods:
                    self._apply_reports(session, frame.pods, answers)
                if frame.stopped:
                    stopped = self._own_stops(session, frame.stopped, answers)
                    if stopped:
                        self._spawn(self._finish_deletions(session, stopped))
                if frame.revision is not None:
                    session.acked(frame.revision)
                    self._mirror_lag(session)
                if answers:
                    await self._answer(session, answers)
            elif isinstance(frame, protocol.HeartbeatV4):  # an agent of protocol 3 or 4
                if state is not None:
                    self._heard(state, frame.upgraded())
            elif isinstance(frame, protocol.Ack):  # an agent of protocol 3
                session.acked(frame.revision)
                self._mirror_lag(session)
            elif isinstance(frame, protocol.PodEvents):
                answers = {}
                self._record_agent_events(session, frame.events, answers)
                if answers:
                    await self._answer(session, answers)
            elif isinstance(frame, protocol.CredentialAck):
                # Confirmed once per credential issued: a flood of acks started a task (and
                # a store read) each. A confirm that fails is made again when the agent
                # next links with the credential.
                issued, session.credential_id = session.credential_id, None
                if issued is not None:
                    self._spawn(self.credentials.confirm(session.node, issued))
            elif isinstance(frame, protocol.LogsChunk):
                stream = session.log_streams.get(frame.id)
                if stream is not None:
                    if stream.full() and not frame.eof:  # the end is always taken
                        self._end_log_stream(session, frame.id, stream)
                    else:
                        stream.put(frame)
            else:
                kind = getattr(frame, "type", type(frame).__name__)
                await self._send_error(
                    ws, f"node {session.node}: unexpected {kind} frame", session.version
                )

    async def _send_loop(self, session: AgentSession) -> None:
        while not session.ws.closed:
            await session.changed.wait()
            session.changed.clear()
            upserts, session.upserts = session.upserts, {}
            removes, session.removes = session.removes, set()
            if not upserts and not removes:
                continue
            revision = self._cluster.revision
            upsert = list(upserts.values())
            if session.version < protocol.POD_FIELDS_PROTOCOL:
                upsert = [protocol.pod_for_agent(pod, session.version) for pod in upsert]
            frames = protocol.desired_frames(revision, upsert, sorted(removes), session.version)
            for data in frames:
                # Counted as sent before the send, which may wait for the socket to drain:
                # the agent's ack may be read meanwhile, and must find the frame to clear.
                session.sent(revision, time.monotonic())
                self._mirror_lag(session)
                try:
                    await session.ws.send_bytes(data)
                except (ConnectionError, RuntimeError):
                    return  # the read loop sees the close and ends the session (and its lag)

    async def _watch_links(self) -> None:
        """Close the links that went silent: a peer gone without a TCP reset (power cut,
        partition) leaves its socket open, and only its missing frames tell."""
        while True:
            due = time.monotonic() + LINK_CHECK_SECONDS
            await asyncio.sleep(LINK_CHECK_SECONDS)
            self.close_silent_links(due, time.monotonic())

    def close_silent_links(self, due: float, mono: float) -> None:
        """The check due at `due`, run at `mono`. One that wakes half the silence limit
        late or more closes nothing: the scheduler itself stalled (`woke_from_stall`), and
        the frames sent meanwhile are still unread."""
        if woke_from_stall(due, mono, LINK_SILENCE_SECONDS):
            return
        for name, session in list(self.sessions.items()):
            limit = LINK_SILENCE_SECONDS * self._cluster.heartbeat_stretch.get(name, 1.0)
            if mono - session.last_frame > limit and not session.ws.closed:
                _LOGGER.warning("node %s: no frame for over %.0fs; closing its link", name, limit)
                self._spawn(self._close_link(session, b"link silent; presumed dead"))

    def _mirror_lag(self, session: AgentSession) -> None:
        """The node's view of its agent's lag, read by the status page and metrics."""
        state = self._cluster.nodes.get(session.node)
        if state is not None and self.sessions.get(session.node) is session:
            state.desired_unacked_since = session.unacked_since

    async def _end_session(self, session: AgentSession) -> None:
        for stream in session.log_streams.values():
            stream.put(None)  # readers see the node go away
        if session.sender is not None:
            session.sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await session.sender
        if self.sessions.get(session.node) is session:
            del self.sessions[session.node]
            state = self._cluster.nodes.get(session.node)
            if state is not None:
                self._cluster.set_connected(state, False)
                state.desired_unacked_since = None  # the next link's welcome resyncs all
            _LOGGER.info("node %s disconnected", session.node)

    # -- reports from agents -------------------------------------------------

    def _heard(self, state: NodeState, beat: protocol.Heartbeat) -> None:
        """A node's heartbeat, in protocol 5's shape whatever the agent's protocol."""
        cpu, mem = beat.usage  # ints: validated strictly
        self._cluster.set_usage(state, cpu, mem)
        state.pod_uids, state.pod_cpu, state.pod_memory = (
            beat.pod_uids,
            beat.pod_cpu,
            beat.pod_memory,
        )
        if not state.ready:
            self._spawn(self.mark_ready(state.name))

    def _apply_reports(
        self,
        session: AgentSession,
        reports: Sequence[protocol.PodReport | protocol.PodReportV4],
        answers: dict[str, None] | None = None,
    ) -> list[asyncio.Future[list[KV]]]:
        """Validate an agent's statuses and queue their writes, in the order reported.

        Synchronous up to the queueing (the store fixes the order of writes at the call),
        so a pod_status frame needs no task of its own; returns the writes' futures. A
        report refused or with an invalid status is skipped, and why is added to `answers`
        for the agent (`_answer`); without `answers` (a hello's: the agent takes any frame
        before the welcome for its link refused) it is logged only, and the welcome's
        `stop` fences a pod of another node.
        """
        validator = PodStatus.__pydantic_validator__
        writes = []
        problems = {} if answers is None else answers
        for report in reports:
            key = self._cluster.by_uid.get(report.uid)
            pod = self._cluster.pods.get(key) if key else None
            if key is None or pod is None or pod.metadata.uid != report.uid:
                continue  # a stale incarnation: the welcome/desired set stops it
            if pod.spec.node_name != session.node:
                self._refuse_report(session, pod, "status", problems)
                continue
            raw = report.status
            if isinstance(raw, bytes) and len(raw) > MAX_STATUS_BYTES:
                problems[_too_big(session.node, pod.key, len(raw))] = None
                continue
            try:
                # Protocol 5's JSON bytes parsed and validated in one pass of pydantic-core.
                status: PodStatus = (
                    validator.validate_json(raw)
                    if isinstance(raw, bytes)
                    else validator.validate_python(raw)
                )
            except ValidationError as exc:
                problem = f"node {session.node}: invalid status for {pod.key}: "
                problems[problem + protocol.problems(exc, "status")] = None
                continue
            if not isinstance(raw, bytes) and (size := len(status_json(status))) > MAX_STATUS_BYTES:
                problems[_too_big(session.node, pod.key, size)] = None  # protocol 3 and 4's map
                continue
            write = self._write_status(key, report.uid, status)
            if write is not None:
                writes.append(write)
        if answers is None and problems:
            self._errors.add(f"agent link: {_summary(problems)}")
        return writes

    def _write_status(
        self, key: str, uid: str, status: PodStatus, attempt: int = 1
    ) -> asyncio.Future[list[KV]] | None:
        """Queue the status write. One that lost to another write (or to a failed commit)
        is merged again and queued 50 ms later, up to STATUS_WRITE_ATTEMPTS in all."""
        write = self._status_write(key, uid, status)
        if write is None:
            return None
        future = asyncio.ensure_future(write)
        future.add_done_callback(functools.partial(self._status_written, key, uid, status, attempt))
        return future

    async def _retry_status(self, key: str, uid: str, status: PodStatus, attempt: int) -> None:
        # A task, not a timer: `close` cancels it with the hub's other tasks.
        await asyncio.sleep(0.05)
        self._write_status(key, uid, status, attempt)

    def _status_written(
        self, key: str, uid: str, status: PodStatus, attempt: int, future: asyncio.Future[list[KV]]
    ) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is None or isinstance(exc, NotFound):
            return
        if isinstance(exc, Conflict | StoreUnavailable):
            if attempt < STATUS_WRITE_ATTEMPTS:  # changed meanwhile: merge again
                self._spawn(self._retry_status(key, uid, status, attempt + 1))
            return
        self._errors.add(f"status of {key}: {exc}")

    def _status_write(self, key: str, uid: str, status: PodStatus) -> Awaitable[list[KV]] | None:
        """Queue the write of an agent's status for the pod, if the pod and status changed.

        Built on the store's latest value, queued writes included: two reports for
        one pod within one commit (Pending, then Running) must both land, in order.
        """
        kv = self._store.latest(key)
        if kv is None:
            return None
        pod = decode(kv, Pod)
        if pod.metadata.uid != uid:
            return None
        if pod.status.phase in TERMINAL_PHASES:
            # Finished for good, as in Kubernetes: a Never pod failed as NodeLost is not
            # brought back Running by its node's report when the node returns.
            return None
        # The scheduler owns PodScheduled; the agent owns the rest of the status.
        kept = [c for c in pod.status.conditions if c.type == "PodScheduled"]
        conditions = kept + [c for c in status.conditions if c.type != "PodScheduled"]
        set_fields(status, {"conditions": conditions})
        # Only the new status is serialized: unchanged is the same JSON, and the stored
        # JSON of the pod ends with its status (cut from it), which is all that changes.
        new = status_json(status)
        cut = split_status(kv.value)
        old = cut[1] if cut is not None else status_json(pod.status)
        if old == new:
            return None
        updated = replaced(pod, {"status": status})
        value = b"%s%s}" % (cut[0], new) if cut is not None else encode(updated)
        return self._store.txn([Op("put", key, value, updated, kv.mod_revision)])

    def _record_agent_events(
        self, session: AgentSession, events: list[protocol.EventReport], answers: dict[str, None]
    ) -> None:
        for ev in events:
            key = self._cluster.by_uid.get(ev.uid)
            pod = self._cluster.pods.get(key) if key else None
            if pod is None:
                continue
            if pod.spec.node_name != session.node:  # only a pod's own node speaks for it
                self._refuse_report(session, pod, "events", answers)
                continue
            self._events.record(
                pod_ref(pod),
                ev.reason,
                ev.message,
                type=ev.type,
                component="corral-agent",
                host=session.node,
                timestamp=_agent_time(ev.timestamp),
            )

    def _own_stops(
        self, session: AgentSession, uids: list[str], answers: dict[str, None]
    ) -> list[str]:
        """The uids of a `stopped` list that are the node's own pods; a pod bound elsewhere
        is refused (in `answers`), an unknown uid left out."""
        own = []
        for uid in uids:
            key = self._cluster.by_uid.get(uid)
            pod = self._cluster.pods.get(key) if key else None
            if pod is None or pod.metadata.uid != uid:
                continue
            if pod.spec.node_name != session.node:
                self._refuse_report(session, pod, "a stop", answers)
                continue
            own.append(uid)
        return own

    async def _finish_deletions(self, session: AgentSession, uids: list[str]) -> None:
        """A pod marked for deletion is removed once its node says it stopped (or set
        Failed and kept, while finalizers hold it: scheduler/podfinal.py). `uids` are the
        node's own (`_own_stops`)."""
        for uid in uids:
            key = self._cluster.by_uid.get(uid)
            pod = self._cluster.pods.get(key) if key else None
            if pod is None or key is None or pod.metadata.uid != uid:
                continue
            if pod.spec.node_name != session.node:
                continue
            await self._remove_stopped(key, uid)

    async def _remove_stopped(self, key: str, uid: str) -> None:
        """Remove (or mark stopped, while finalizers hold it) the deleted pod whose agent
        says it stopped: on its newest version, again if another write lands first (a
        finalizer removed meanwhile). The agent says so once: a lost write left the pod
        Terminating until the node lifecycle's FORCE_MARGIN."""
        for _attempt in range(STATUS_WRITE_ATTEMPTS):
            kv = self._store.latest(key)
            pod = decode(kv, Pod) if kv is not None else None
            if kv is None or pod is None or pod.metadata.uid != uid:
                return
            if pod.metadata.deletion_timestamp is None:
                return
            try:
                await remove_stopped(self._store, key, kv, pod)
                return
            except NotFound:
                return
            except Conflict:
                await self._store.settled(key)

    @staticmethod
    def _report_refusal(session: AgentSession, pod: Pod, what: str) -> str:
        return (
            f"node {session.node} reported {what} for pod {pod.key}, which is bound to "
            f"{pod.spec.node_name or 'no node'}; refused"
        )

    def _refuse_report(
        self, session: AgentSession, pod: Pod, what: str, answers: dict[str, None]
    ) -> None:
        """A node spoke for a pod bound elsewhere: refuse and record it, once per frame
        however often the frame names the pod; why goes in `answers`, for the agent and
        the log (`_answer`)."""
        message = self._report_refusal(session, pod, what)
        if message not in answers:
            answers[message] = None
            self._events.record(node_ref(session.node), "ReportRefused", message, type="Warning")

    async def _answer(self, session: AgentSession, answers: dict[str, None]) -> None:
        """What was refused of one frame, in one error frame and one log line (the first
        refusal, and how many more). Awaited by the read loop, so an agent that sends
        faster than it reads waits for its answers: sent from a task each, one per
        refused report, they piled up without bound behind a peer that read nothing, and
        a frame naming a pod 50,000 times made 50,000 of them and as many log lines."""
        await self._send_error(session.ws, _summary(answers), session.version)

    def _end_log_stream(self, session: AgentSession, stream_id: int, stream: LogStream) -> None:
        """The reader fell too far behind (`LogStream.full`): it gets what is queued, then
        the reason; the agent is told to stop sending."""
        del session.log_streams[stream_id]
        message = stream.too_slow(session.node)
        stream.put(protocol.LogsChunk(id=stream_id, eof=True, error=message))
        self._spawn(self._send_quietly(session, protocol.LogsCancel(id=stream_id)))

    async def forget_node(self, name: str) -> None:
        """The node was deleted: revoke its credential and drop its link."""
        await self.credentials.revoke(name)
        session = self.sessions.get(name)
        if session is not None:
            await self._close_link(session, b"node deleted; its credential is revoked")

    async def stream_logs(
        self,
        node: str,
        uid: str,
        container: str,
        *,
        tail_lines: int | None = None,
        follow: bool = False,
        timestamps: bool = False,
        previous: bool = False,
        since_seconds: int | None = None,
        since_time: str | None = None,
    ) -> AsyncGenerator[str, None]:
        """A container's log, read by its node's agent and relayed over the link. The
        records before `since_seconds` ago or `since_time` are left out by the agent (its
        clock, its stamps, as the kubelet), or, by an agent before protocol 7, here."""
        session = self.sessions.get(node)
        if session is None:
            raise LogsUnavailable(f"node {node} is not connected")
        if not session.welcomed:
            raise LogsUnavailable(f"node {node} is joining; try again in a moment")
        if session.version < protocol.LOG_SINCE_PROTOCOL and (
            since_seconds is not None or since_time is not None
        ):
            start = log_start(since_seconds, since_time, datetime.now(UTC))
            older = LogFilter(start, timestamps, None)  # read off the stamps it asks for
            stamped = self.stream_logs(
                node,
                uid,
                container,
                tail_lines=tail_lines,
                follow=follow,
                timestamps=True,
                previous=previous,
            )
            # Closed with this one (limitBytes reached, the client gone): its LogsCancel
            # goes at once, not whenever the garbage collector finalizes it.
            failure: LogsUnavailable | None = None
            async with contextlib.aclosing(stamped):
                try:
                    async for data in stamped:
                        if kept := older.feed(data).decode():
                            yield kept
                except LogsUnavailable as exc:
                    failure = exc
            # Before a failure too, as without `since`: a last line with no newline yet.
            if rest := older.flush().decode():
                yield rest
            if failure is not None:
                raise failure
            return
        self._log_ids += 1
        stream_id = self._log_ids
        stream = session.log_streams[stream_id] = LogStream(follow)
        finished = False
        try:
            await session.ws.send_bytes(
                protocol.encode(
                    protocol.LogsRequest(
                        id=stream_id,
                        uid=uid,
                        container=container,
                        tail_lines=tail_lines,
                        follow=follow,
                        timestamps=timestamps,
                        previous=previous,
                        since_seconds=since_seconds,
                        since_time=since_time,
                    ),
                    session.version,
                )
            )
            # A followed log may rightly stay silent until the container writes; one that
            # is not is read and sent at once, so a silence (before any chunk or between
            # two) means a stuck agent.
            answer_within = None if follow else self._config.agent_answer_seconds
            while True:
                if answer_within is None:
                    chunk = await stream.get()
                else:
                    try:
                        async with asyncio.timeout(answer_within):
                            chunk = await stream.get()
                    except TimeoutError:
                        raise LogsUnavailable(
                            f"node {node} did not answer within {answer_within:g} s"
                        ) from None
                if chunk is None:
                    finished = True
                    raise LogsUnavailable(f"node {node} disconnected")
                if chunk.error:
                    finished = True
                    raise LogsUnavailable(chunk.error)
                if chunk.data:
                    yield chunk.data
                if chunk.eof:
                    finished = True
                    return
        finally:
            session.log_streams.pop(stream_id, None)
            if not finished and not session.ws.closed:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await session.ws.send_bytes(
                        protocol.encode(protocol.LogsCancel(id=stream_id), session.version)
                    )

    async def mark_ready(self, name: str) -> None:
        """A NotReady node that heartbeats again is Ready."""
        await set_node_ready(
            self._store, name, True, "AgentReady", "corral-agent is posting heartbeats"
        )

    def _restretch(self, size: int) -> None:
        """Once the cluster has grown by a tenth since the last look, stretch the heartbeat
        interval of nodes welcomed when it was smaller (config.heartbeat_stretch), so that
        all heartbeats together keep under max_heartbeats_per_second, and not only those
        of the nodes that joined last. Only ever longer while a link lasts: the timeouts
        widen first, then the agent is told, so no node can be late in between; a node
        gets a shorter interval again at its next welcome."""
        if size < self._stretched_at * 1.1:
            return
        self._stretched_at = size
        stretch = self._config.heartbeat_stretch(size)
        for name, session in self.sessions.items():
            # A node still being welcomed is left to the next growth: its welcome has
            # its own stretch, and no other frame may go before it.
            if not session.welcomed or stretch <= self._cluster.heartbeat_stretch.get(name, 1.0):
                continue
            self._cluster.heartbeat_stretch[name] = stretch
            update = protocol.ConfigUpdate(config=self._link_config(stretch))
            self._spawn(self._send_quietly(session, update))

    def _link_config(self, stretch: float) -> dict[str, Any]:
        """What an agent is told of its timing (welcome and config frames)."""
        return {
            "heartbeat_seconds": self._config.heartbeat_seconds * stretch,
            "node_grace_seconds": self._config.node_grace_seconds * stretch,
        }

    @staticmethod
    async def _send_quietly(session: AgentSession, frame: protocol.Frame) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):  # the read loop sees a close
            await session.ws.send_bytes(protocol.encode(frame, session.version))

    @staticmethod
    async def _close_link(session: AgentSession, message: bytes) -> None:
        """Close a link; drop its connection if the close is not through within
        LINK_CLOSE_SECONDS. aiohttp's close waits for the socket to drain, and one whose
        peer reads nothing (an agent hung or stopped, a half-open connection) stays full:
        the close waited for good, and with it a reconnect, a node deletion or shutdown.
        Cancelled (on shutdown), it drops the connection too."""
        closed = False
        try:
            async with asyncio.timeout(LINK_CLOSE_SECONDS):
                await session.ws.close(message=message)
            closed = True
        except TimeoutError:
            _LOGGER.warning(
                "node %s: its link took no close within %.0fs; dropped",
                session.node,
                LINK_CLOSE_SECONDS,
            )
        finally:
            if not closed and session.transport is not None:
                session.transport.abort()  # the read loop ends, and the session with it

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Close every agent link (on shutdown, before the server stops)."""
        sessions = list(self.sessions.values())
        await asyncio.gather(*(self._close_link(s, b"scheduler shutting down") for s in sessions))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _too_big(node: str, pod: str, size: int) -> str:
    return (
        f"node {node}: the status of {pod} is {size} bytes, more than {MAX_STATUS_BYTES}; refused"
    )


def _summary(messages: dict[str, None]) -> str:
    """The first of `messages` (in order, cut to MAX_ERROR_MESSAGE), and how many more."""
    first = next(iter(messages))
    if len(first) > MAX_ERROR_MESSAGE:
        first = f"{first[: MAX_ERROR_MESSAGE - 3]}..."
    more = len(messages) - 1
    return f"{first} (and {more} more)" if more else first


def check_node_info(info: protocol.NodeInfo) -> None:
    """A hello's node: a valid name and the quantities placement needs; ValueError if not.
    Every quantity is checked here, the first bad one refused, rather than by the Node
    model, which reports every one (a hello of 500,000 made a message of 200 MB)."""
    if len(info.name) > 253:  # before the check that quotes it whole
        raise ValueError(f"a node name is at most 253 characters, not {len(info.name)}")
    check_dns_subdomain(info.name)
    # The Node object goes into every list of nodes: what an agent tells of itself is
    # bounded (a hello of a 10 MB address, or 300,000 info entries, made it that big).
    if info.address is not None and len(info.address) > MAX_ADDRESS:
        raise ValueError(f"address is at most {MAX_ADDRESS} characters, not {len(info.address)}")
    for field, entries in (
        ("labels", info.labels),
        ("info", info.info),
        ("capacity", info.capacity),
        ("allocatable", info.allocatable),
    ):
        if len(entries) > MAX_NODE_ENTRIES:
            raise ValueError(f"{field} has {len(entries)} entries, more than {MAX_NODE_ENTRIES}")
    for key, value in info.info.items():
        if len(key) > MAX_INFO_KEY:
            raise ValueError(
                f"info.{protocol.shown(key)}: a key is at most {MAX_INFO_KEY} characters,"
                f" not {len(key)}"
            )
        if len(value) > MAX_INFO_VALUE:
            raise ValueError(
                f"info.{protocol.shown(key)}: a value is at most {MAX_INFO_VALUE} characters,"
                f" not {len(value)}"
            )
    for key in ("cpu", "memory"):
        if key not in info.allocatable:
            raise ValueError(f"allocatable.{key} is required")
    cpu_millis(info.allocatable["cpu"])
    memory_bytes(info.allocatable["memory"])
    for field, quantities in (("capacity", info.capacity), ("allocatable", info.allocatable)):
        for key, value in quantities.items():
            try:
                parse_quantity(value)
            except QuantityError as exc:
                raise ValueError(f"{field}.{protocol.shown(key)}: {exc}") from None


_marking: set[str] = set()


async def set_node_ready(store: Store, name: str, ready: bool, reason: str, message: str) -> None:
    """Write the node's Ready condition if it differs (idempotent, one write in flight)."""
    if name in _marking:
        return
    _marking.add(name)
    try:
        kv = await store.get(node_key(name))
        if kv is None:
            return
        node = Node.model_validate_json(kv.value)
        status = "True" if ready else "Unknown"
        cond = node.condition("Ready")
        if cond is not None and cond.status == status:
            return
        stamp = now()
        others = [c for c in node.status.conditions if c.type != "Ready"]
        node.status.conditions = [
            *others,
            NodeCondition(
                type="Ready",
                status=status,
                reason=reason,
                message=message,
                last_heartbeat_time=cond.last_heartbeat_time if cond and not ready else stamp,
                last_transition_time=stamp,
            ),
        ]
        with contextlib.suppress(Conflict, NotFound):
            await store.put(node_key(name), encode(node), obj=node, expect=kv.mod_revision)
    finally:
        _marking.discard(name)


def _uid() -> str:
    return str(uuid.uuid4())
