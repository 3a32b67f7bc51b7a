"""The agent's end of the agent link: dial, hello/welcome resync, heartbeats, reports.

The agent dials the scheduler (so agents behind NAT work) and holds one
WebSocket. Each connection starts with a full resync: hello lists every pod
this node runs, the welcome carries the complete desired set, and the
supervisor stops whatever is not in it (fencing). After that, desired-set
changes are applied and status changes are reported, coalesced into one frame
per burst, which also acknowledges the desired changes applied (its `revision`).
A lost link is redialled with jittered exponential backoff, capped at a quarter
of the node grace the scheduler announces, so that a link lost while the
scheduler stays up is back before the node would be marked NotReady; the pods
keep running meanwhile.

The link is opened with the node credential (`agent/credentials.py`) once the
agent has one, else with the join token; the welcome to a join carries the
credential, which is stored before the agent acknowledges it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import ValidationError

from agent import stats
from agent.config import AgentConfig
from agent.credentials import CredentialStore
from agent.logserve import LogServer
from agent.supervisor import Supervisor
from common import protocol
from common.models import Pod, now
from common.tls import client_context

_LOGGER = logging.getLogger(__name__)

BACKOFF_INITIAL, BACKOFF_CAP = 0.2, 5.0
MAX_QUEUED_EVENTS = 1000
WELCOME_TIMEOUT = 15.0
COALESCE_SECONDS = 0.002  # status changes this close together share one frame


def redial_cap(node_grace_seconds: float) -> float:
    """The longest wait between redials once the scheduler has announced its node grace.

    A quarter of it (within [BACKOFF_INITIAL, BACKOFF_CAP]): however far the backoff
    had grown, a link that drops while the scheduler stays up, or comes back after a
    short outage, is redialled several times before the node would be marked NotReady.
    """
    return min(BACKOFF_CAP, max(BACKOFF_INITIAL, node_grace_seconds / 4))


def redial_delay(attempt: int, cap: float) -> float:
    """Seconds before redial `attempt` (1: the first after a loss): doubling from
    BACKOFF_INITIAL up to `cap`, jittered down by up to half so a fleet does not redial
    in step after a scheduler restart."""
    return min(cap, BACKOFF_INITIAL * 2 ** min(attempt, 10)) * random.uniform(0.5, 1.0)


class LinkRefused(Exception):
    """The scheduler refused this agent (wrong token, invalid node); retrying may not help."""


class LinkFailed(Exception):
    """One of the link's own loops (heartbeats, status reports) ended; the link is redialled."""


class SchedulerLink:
    def __init__(self, config: AgentConfig, supervisor: Supervisor, token: str | None) -> None:
        self._config = config
        self._supervisor = supervisor
        self._token = token  # the join token; None once the node holds a credential
        self._credentials = CredentialStore(Path(config.state_dir))
        self._credential = self._credentials.load()
        if self._credential and not self._credential.startswith(f"corralnode_{config.node_name}_"):
            # Issued to another node name (node_name was changed): useless, and the
            # scheduler would refuse it; join under the new name with the join token.
            _LOGGER.warning("the stored node credential is not %s's; ignoring it", config.node_name)
            self._credential = None
        self._ssl: ssl.SSLContext | bool = True
        if config.server.startswith("https://"):
            self._ssl = client_context(config.ca_file, config.client_cert, config.client_key)
        self._dirty: set[str] = set()
        self._stopped: set[str] = set()
        self._ack: int | None = None  # desired revision applied, not yet acknowledged
        self._wake = asyncio.Event()
        self._applying: asyncio.Future[None] | None = None  # the desired frame being applied
        self.connected = asyncio.Event()
        self.heartbeat_seconds = 1.0
        self.redial_cap = BACKOFF_CAP  # until a welcome says the node grace
        self._cpu_seen: dict[str, tuple[int, float]] = {}
        capacity, allocatable = stats.node_quantities(
            config.cpu_reserved, config.memory_reserved, config.max_pods
        )
        self._node = protocol.NodeInfo(
            name=config.node_name,
            labels=dict(config.labels),
            capacity=capacity,
            allocatable=allocatable,
            info=stats.node_info(config.runtime),
        )
        supervisor.on_stopped = self.report_stopped
        supervisor.on_event = self.report_event
        self._events: list[protocol.EventReport] = []
        self._logs = LogServer(supervisor)

    # -- called by the supervisor -------------------------------------------

    def report(self, uid: str) -> None:
        self._dirty.add(uid)
        self._wake.set()

    def report_event(self, pod: Pod, reason: str, message: str, kind: str) -> None:
        if len(self._events) >= MAX_QUEUED_EVENTS:
            return  # bounded: a flood while the link is down is dropped, not hoarded
        self._events.append(
            protocol.EventReport(
                uid=pod.metadata.uid or "",
                namespace=pod.metadata.namespace or "default",
                name=pod.metadata.name,
                reason=reason,
                message=message,
                type="Warning" if kind == "Warning" else "Normal",
                timestamp=now().isoformat(),
            )
        )
        self._wake.set()

    def report_stopped(self, uid: str) -> None:
        self._stopped.add(uid)
        self._dirty.discard(uid)
        self._wake.set()

    # -- the connection loop ------------------------------------------------

    def _authorization(self) -> str | None:
        secret = self._credential or self._token
        return f"Bearer {secret}" if secret else None

    def _refused(self, status: int, message: str) -> None:
        """The upgrade was refused: with a credential and a 401, fall back to the join token."""
        if status != 401:
            _LOGGER.warning("scheduler refused the link: %s %s", status, message)
            return
        if self._credential is None:
            _LOGGER.error("scheduler refused the join token (401): is it the scheduler's?")
            return
        self._credential = None
        self._credentials.forget()
        if self._token:
            _LOGGER.warning(
                "scheduler refused this node's credential (was the node deleted?); "
                "joining again with the join token"
            )
        else:
            _LOGGER.error(
                "scheduler refused this node's credential (was the node deleted?) and no "
                "join token is configured: set join_token or join_token_file to join again"
            )

    async def run(self) -> None:
        url = self._config.server.rstrip("/") + "/api/v1/agent"
        attempt = 0
        async with aiohttp.ClientSession() as http:
            while True:
                authorization = self._authorization()
                try:
                    if authorization is None:
                        raise LinkRefused("no node credential and no join token: cannot join")
                    async with http.ws_connect(
                        url,
                        headers={"Authorization": authorization},
                        heartbeat=30.0,
                        max_msg_size=protocol.MAX_FRAME_BYTES,
                        ssl=self._ssl,
                    ) as ws:
                        await self._session(ws)
                except aiohttp.WSServerHandshakeError as exc:
                    self._refused(exc.status, exc.message)
                except aiohttp.ClientSSLError as exc:
                    _LOGGER.error("TLS with %s failed: %s", self._config.server, exc)
                except (aiohttp.ClientError, OSError, TimeoutError, protocol.ProtocolError) as exc:
                    _LOGGER.warning(
                        "link to %s lost: %s", self._config.server, exc or type(exc).__name__
                    )
                except (LinkRefused, LinkFailed) as exc:
                    _LOGGER.error("%s", exc)
                except Exception:
                    # Whatever failed, the pods run on: the link is dialled again, as the
                    # kubelet keeps retrying its API server.
                    _LOGGER.exception("link to %s failed", self._config.server)
                finally:
                    # The backoff starts over only after a welcome: a scheduler that
                    # accepts the WebSocket and then refuses the node is redialled
                    # ever more slowly, not several times a second.
                    if self.connected.is_set():
                        attempt = 0
                    self.connected.clear()
                attempt += 1
                await asyncio.sleep(redial_delay(attempt, self.redial_cap))

    async def _session(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        # Cleared before the hello is built, not after the welcome: a change in between
        # (an adopted container's first probe result) must still be reported.
        self._dirty.clear()
        self._ack = None  # acks of the previous link: the welcome resyncs everything
        reports = self._reports(list(self._supervisor.workers))
        await ws.send_bytes(protocol.encode(protocol.Hello(node=self._node, pods=reports)))
        async with asyncio.timeout(WELCOME_TIMEOUT):
            welcome = await protocol.receive_welcome(lambda: self._receive(ws))
        if isinstance(welcome, protocol.ErrorFrame):
            raise LinkRefused(f"scheduler refused the node: {welcome.message}")
        if not isinstance(welcome, protocol.Welcome):
            raise protocol.ProtocolError(f"expected welcome, got {getattr(welcome, 'type', '?')}")
        if welcome.credential is not None:
            # Durable before the ack: once acknowledged, the join token no longer
            # works for this node, so a lost credential would lock it out.
            await asyncio.to_thread(self._credentials.save, welcome.credential)
            self._credential = welcome.credential
            await ws.send_bytes(protocol.encode(protocol.CredentialAck()))
        self.heartbeat_seconds = 1.0
        self._configure(welcome.config)
        await self._supervisor.apply(self._pods(welcome.pods), welcome.stop, full=True)
        self.connected.set()
        _LOGGER.info(
            "joined %s as %s: %d desired pods at revision %d",
            self._config.server,
            self._node.name,
            len(welcome.pods),
            welcome.revision,
        )
        # The link lives only while all three run. A heartbeat loop that died alone left
        # the link open and quiet: the scheduler took the node for lost and ran its pods
        # elsewhere while they still ran here. A dead reporter stopped every status.
        receiver = asyncio.create_task(self._receiver(ws), name="link-receiver")
        tasks = [
            receiver,
            asyncio.create_task(self._heartbeats(ws), name="link-heartbeats"),
            asyncio.create_task(self._reporter(ws), name="link-reporter"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if receiver in done:
                receiver.result()  # returns only by raising: the link is gone
            ended = done.pop()
            error = None if ended.cancelled() else ended.exception()
            _LOGGER.error("link: %s ended", ended.get_name(), exc_info=error)
            raise LinkFailed(f"{ended.get_name()} ended: {error!r}; dialling again")
        finally:
            await self._logs.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            applying, self._applying = self._applying, None
            if applying is not None:
                await asyncio.gather(applying, return_exceptions=True)  # its end, not its error

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> Any:
        msg = await ws.receive()
        if msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.CLOSING,
        ):
            raise ConnectionError(f"scheduler closed the link ({ws.close_code}: {msg.extra or ''})")
        if msg.type == aiohttp.WSMsgType.ERROR:
            raise ConnectionError(f"link error: {ws.exception()}")
        if msg.type != aiohttp.WSMsgType.BINARY:
            raise protocol.ProtocolError(f"unexpected {msg.type.name} message")
        return protocol.decode(msg.data)

    async def _receiver(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            frame = await self._receive(ws)
            if isinstance(frame, protocol.Desired):
                # Applied to its end even if the link goes meanwhile (`_session` waits for
                # it): cancelled while a new pod's sandbox was made, the pod's worker stayed
                # registered without its containers, ContainerCreating for good.
                self._applying = asyncio.ensure_future(
                    self._supervisor.apply(self._pods(frame.upsert), frame.remove)
                )
                await asyncio.shield(self._applying)
                self._ack = frame.revision  # the reporter's next pod_status carries it
                self._wake.set()
            elif isinstance(frame, protocol.LogsRequest):
                self._logs.open(frame, lambda f: ws.send_bytes(protocol.encode(f)))
            elif isinstance(frame, protocol.LogsCancel):
                self._logs.cancel(frame.id)
            elif isinstance(frame, protocol.ConfigUpdate):
                self._configure(frame.config)
            elif isinstance(frame, protocol.ErrorFrame):
                _LOGGER.warning("scheduler says: %s", frame.message)
            else:
                _LOGGER.warning("ignoring unexpected %s frame", getattr(frame, "type", "?"))

    def _configure(self, config: dict[str, Any]) -> None:
        """Settings from the scheduler (welcome or update); the heartbeat loop reads the
        interval before each sleep, so a change holds from the next beat."""
        if "heartbeat_seconds" in config:
            self.heartbeat_seconds = float(config["heartbeat_seconds"])
        if "node_grace_seconds" in config:
            self.redial_cap = redial_cap(float(config["node_grace_seconds"]))

    async def _heartbeats(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            frame = await asyncio.to_thread(self._measure)
            await ws.send_bytes(protocol.encode(frame))
            await asyncio.sleep(self.heartbeat_seconds)

    def _measure(self) -> protocol.Heartbeat:
        """Node usage (psutil) and each pod's, from its cgroup: CPU as millicores used
        since the previous heartbeat. Reads /proc and cgroup files: runs in a thread."""
        now = time.monotonic()
        uids: list[str] = []
        cpu: list[int] = []
        memory: list[int] = []
        previous, self._cpu_seen = self._cpu_seen, {}
        for uid in list(self._supervisor.workers):
            usage = self._supervisor.runtime.usage(uid)
            if usage is None:
                continue
            self._cpu_seen[uid] = (usage.cpu_usage_ns, now)
            millis = 0
            if uid in previous:
                ns, at = previous[uid]
                if now > at:
                    millis = int((usage.cpu_usage_ns - ns) / 1e6 / (now - at))
            uids.append(uid)
            cpu.append(max(0, millis))
            memory.append(usage.memory_bytes)
        node = stats.usage()
        return protocol.Heartbeat(
            usage=[node["cpu"], node["memory"]], pod_uids=uids, pod_cpu=cpu, pod_memory=memory
        )

    async def _reporter(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        sent = 0.0
        while True:
            await self._wake.wait()
            # A change after a quiet spell goes out at once (a pod's Running waits for
            # nothing); one within a burst waits a moment, so the burst shares a frame.
            if time.monotonic() - sent < COALESCE_SECONDS:
                await asyncio.sleep(COALESCE_SECONDS)
            sent = time.monotonic()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            stopped, self._stopped = self._stopped, set()
            events, self._events = self._events, []
            ack, self._ack = self._ack, None
            # The statuses first: a pod's Running waits for its durable write in the
            # scheduler, its "Started" event for nothing (events are flushed in batches).
            frame = protocol.PodStatusUpdate(
                pods=self._reports(dirty), stopped=sorted(stopped), revision=ack
            )
            if frame.pods or frame.stopped or ack is not None:
                try:
                    await ws.send_bytes(protocol.encode(frame))
                except BaseException:
                    self._dirty |= dirty  # resent after reconnect (the hello has them anyway)
                    self._stopped |= stopped
                    self._events = events + self._events
                    raise
            if events:
                try:
                    await ws.send_bytes(protocol.encode(protocol.PodEvents(events=events)))
                except BaseException:
                    self._events = events + self._events
                    raise

    def _reports(self, uids: Any) -> list[protocol.PodReport]:
        reports = []
        for uid in uids:
            worker = self._supervisor.workers.get(uid)
            if worker is None:
                continue
            reports.append(
                protocol.PodReport(
                    uid=uid,
                    namespace=worker.pod.metadata.namespace or "default",
                    name=worker.pod.metadata.name,
                    status=worker.status().to_json(),
                )
            )
        return reports

    @staticmethod
    def _pods(items: list[bytes]) -> list[Pod]:
        pods = []
        for item in items:
            try:
                pods.append(Pod.model_validate_json(item))
            except ValidationError as exc:
                _LOGGER.error("ignoring an invalid pod from the scheduler: %s", exc)
        return pods
