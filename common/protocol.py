"""The agent link: msgpack frames over one WebSocket that the agent dials.

Every frame is a msgpack map `{"v": PROTOCOL_VERSION, "type": ..., ...}`.

    agent                               scheduler
      |-- HTTP upgrade, Authorization: Bearer <credential> ->|  refused with 401 before
      |                                                     |  any frame is read
      |-- hello {node, pods it runs} ---------------------->|  must name the credential's node
      |<-- welcome {config, revision, desired pods, stop, --|  full resync, never a replay
      |             credential (only after a join token)}   |
      |-- credential_ack {} (once it is stored) ----------->|  the join token no longer works
      |                                                     |  for this node
      |-- heartbeat {usage} (every heartbeat_seconds) ----->|
      |-- pod_status {pods, stopped uids, revision} ------->|  on change, and to ack
      |-- events {what happened to pods} ------------------>|
      |<-- desired {revision, upsert, remove} --------------|  increasing revisions
      |<-- logs {id, uid, container, tail, follow} ---------|  `corral logs`
      |-- logs_chunk {id, data, eof, error} --------------->|
      |<-- logs_cancel {id} --------------------------------|
      |<-- config {heartbeat_seconds, ...} -----------------|  the cluster grew

`welcome.pods` and `desired.upsert` carry each Pod as its JSON bytes, exactly as
the scheduler stores it: serialized once when written, never again per agent
(kube-apiserver's watch cache does the same with its serialized objects).

The other way, a pod report (hello, pod_status) carries the pod's status as its
PodStatus JSON bytes, which the scheduler parses and validates in one pass of
pydantic-core, and a heartbeat carries its numbers in arrays rather than maps
(msgpack interns every map key: a map keyed by pod uid made decoding a heartbeat
dearer than everything else the scheduler does with it). Both cut the scheduler's
work per frame; what the frames say is the same as in protocol 4.

A `desired` frame is acknowledged by the next `pod_status`, whose `revision` is
the latest desired revision the agent has applied: the statuses of the pods it
just started usually go out in that same frame, so a placed pod costs the link
two frames in, not three.

Versions: every frame carries its protocol version. An agent speaks and accepts
its own; the scheduler also accepts agents of the version before
(`AGENT_PROTOCOLS`) and answers each link in the version of its hello, so the
scheduler is upgraded first and the agents after it, node by node.

`welcome.pods` is the complete set of incarnations (by uid) the node must run;
the agent stops anything else it runs (fencing after a partition). Any
reconnect repeats hello/welcome, so a lost frame is healed by the next resync.
A welcome or desired change whose pods come to more than half of MAX_FRAME_BYTES
goes out in parts (`welcome_frames`, `desired_frames`): the agent applies a
welcome once it has all its parts.

The credential is the join token on a node's first connection, then the node's
own credential (`scheduler/nodeauth.py`), which the welcome carries once and the
agent keeps in its state directory. A node speaks only for itself: a report about
another node's pod is refused with an `error` frame.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, Literal, TypeAlias

import msgpack
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, TypeAdapter, ValidationError

# 2: welcome.credential and credential_ack (per-node credentials).
# 3: welcome.pods and desired.upsert are Pod JSON bytes, not maps.
# 4: no ack frame; pod_status.revision acknowledges desired frames.
# 5: a report's status is PodStatus JSON bytes; heartbeat usage and pod usage are arrays.
# 6: a welcome too big for one frame comes in parts (welcome.more); pods may carry
#    metadata.finalizers (stripped for older agents: `pod_for_agent`).
# 7: pods may carry spec.dnsPolicy and metadata.generateName (stripped for older
#    agents: `pod_for_agent`); a logs request may carry since_seconds or since_time.
# 8: a desired upsert of a pod the agent already runs may change its containers' images
#    (a pod update): the agent restarts those containers with them. Older agents ignore
#    such an upsert, so the scheduler sends them none (`SPEC_UPDATE_PROTOCOL`).
PROTOCOL_VERSION = 8
# The oldest agent protocol the scheduler still speaks, so that a cluster is upgraded
# scheduler first, then its agents one by one, as Kubernetes' skew policy has it (a
# kubelet may be older than its API server, never newer): a scheduler that refused the
# agents of the release before would see every node go NotReady and evict its pods.
# The scheduler answers each agent in the agent's own version (`encode(frame, version)`).
OLDEST_AGENT_PROTOCOL = 3
AGENT_PROTOCOLS = tuple(range(OLDEST_AGENT_PROTOCOL, PROTOCOL_VERSION + 1))
MAX_FRAME_BYTES = 16 * 1024 * 1024


class ProtocolError(ValueError):
    """A frame that is not valid msgpack, has the wrong version or the wrong shape."""


class Frame(BaseModel):
    model_config = ConfigDict(extra="forbid")
    v: int = PROTOCOL_VERSION


# The collections in the frames an agent sends stop at their first invalid item
# (`fail_fast`, on a dict from pydantic 2.14): pydantic otherwise reports every one, and
# a frame of 16 MiB of wrong one-byte numbers made 16 million errors, some 6 GiB and
# seconds of the event loop to build, then a message of hundreds of MiB for the log and
# the agent.


class NodeInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    labels: dict[str, str] = Field(default_factory=dict, fail_fast=True)
    # Kubernetes quantities as strings: {"cpu": "4", "memory": "8Gi", "pods": "110"}
    capacity: dict[str, str] = Field(fail_fast=True)
    allocatable: dict[str, str] = Field(fail_fast=True)
    info: dict[str, str] = Field(default_factory=dict, fail_fast=True)
    address: str | None = None


class PodReport(BaseModel):
    """One incarnation the agent runs (or ran), with its last observed status."""

    model_config = ConfigDict(extra="forbid")
    uid: str
    namespace: str
    name: str
    # The PodStatus wire form as JSON, parsed and validated by the scheduler only for the
    # incarnations it has (a stale one's is skipped unread).
    status: bytes


class PodReportV4(BaseModel):
    """`PodReport` of protocols 3 and 4: the status as a map."""

    model_config = ConfigDict(extra="forbid")
    uid: str
    namespace: str
    name: str
    status: dict[str, Any]  # PodStatus wire form


class Hello(Frame):
    type: Literal["hello"] = "hello"
    node: NodeInfo
    pods: list[PodReport] = Field(default_factory=list, fail_fast=True)
    agent_version: str = ""


class HelloV4(Frame):
    """`Hello` of protocols 3 and 4."""

    type: Literal["hello"] = "hello"
    node: NodeInfo
    pods: list[PodReportV4] = Field(default_factory=list, fail_fast=True)
    agent_version: str = ""


class Welcome(Frame):
    """The full resync that opens a link. One too big for a frame comes in parts (see
    `welcome_frames`): every part but the last has `more`; the agent joins the parts'
    `pods` and `stop` (`join_welcome`) and applies them only once it has the last."""

    type: Literal["welcome"] = "welcome"
    revision: int
    config: dict[str, Any] = Field(default_factory=dict)
    pods: list[bytes]  # Pod JSON, one per incarnation: the full desired set
    stop: list[str] = Field(default_factory=list)  # uids the agent runs that it must stop
    # The node's own credential, sent only when the link was opened with the join
    # token: the agent stores it (0600) and presents it instead from then on.
    credential: str | None = None
    more: bool = False  # protocol 6: another part of this welcome follows


class CredentialAck(Frame):
    """Agent -> scheduler: the credential of the welcome is stored; lock the node name."""

    type: Literal["credential_ack"] = "credential_ack"


class Heartbeat(Frame):
    """The node's usage and each running pod's: CPU in millicores, memory in bytes.

    `usage` is the node's [cpu, memory]."""

    type: Literal["heartbeat"] = "heartbeat"
    usage: list[NonNegativeInt] = Field(default_factory=lambda: [0, 0], min_length=2, max_length=2)
    # Each pod's usage in three arrays of one length (`decode` checks), position by
    # position: the cheapest shape to unpack and validate, measured (msgpack interns map
    # keys; pydantic-core checks an array of one type without a union, and in strict mode
    # takes a tuple only from a tuple, which msgpack never makes).
    pod_uids: list[str] = Field(default_factory=list, fail_fast=True)
    pod_cpu: list[NonNegativeInt] = Field(default_factory=list, fail_fast=True)
    pod_memory: list[NonNegativeInt] = Field(default_factory=list, fail_fast=True)


class HeartbeatV4(Frame):
    """`Heartbeat` of protocols 3 and 4: maps."""

    type: Literal["heartbeat"] = "heartbeat"
    # {"cpu": millicores used, "memory": bytes used}
    usage: dict[str, NonNegativeInt] = Field(default_factory=dict, fail_fast=True)
    pod_usage: dict[str, Annotated[dict[str, NonNegativeInt], Field(fail_fast=True)]] = Field(
        default_factory=dict, fail_fast=True
    )

    def upgraded(self) -> Heartbeat:
        """The same heartbeat in protocol 5's shape (a number left out is 0)."""
        pods = self.pod_usage
        return Heartbeat(
            usage=[self.usage.get("cpu", 0), self.usage.get("memory", 0)],
            pod_uids=list(pods),
            pod_cpu=[used.get("cpu", 0) for used in pods.values()],
            pod_memory=[used.get("memory", 0) for used in pods.values()],
        )


class PodStatusUpdate(Frame):
    type: Literal["pod_status"] = "pod_status"
    pods: list[PodReport] = Field(default_factory=list, fail_fast=True)
    # Incarnations that no longer run on the node after the scheduler removed them
    # from its desired set; a pod being deleted is removed from the store on this.
    stopped: list[str] = Field(default_factory=list, fail_fast=True)
    # The ack: the latest desired revision the agent has applied since its last
    # pod_status (None: nothing new to acknowledge).
    revision: int | None = None


class PodStatusUpdateV4(Frame):
    """`PodStatusUpdate` of protocols 3 and 4 (3 had no `revision`: it is left out)."""

    type: Literal["pod_status"] = "pod_status"
    pods: list[PodReportV4] = Field(default_factory=list, fail_fast=True)
    stopped: list[str] = Field(default_factory=list, fail_fast=True)
    revision: int | None = None


class EventReport(BaseModel):
    """Something that happened to a pod on the node (`Started`, `BackOff`, `Killing`...)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    uid: str
    namespace: str
    name: str
    reason: str
    message: str = ""
    type: Literal["Normal", "Warning"] = "Normal"
    timestamp: str  # RFC 3339


class PodEvents(Frame):
    type: Literal["events"] = "events"
    events: list[EventReport] = Field(fail_fast=True)


class Desired(Frame):
    type: Literal["desired"] = "desired"
    revision: int
    upsert: list[bytes] = Field(default_factory=list)  # Pod JSON
    remove: list[str] = Field(default_factory=list)


class Ack(Frame):
    """Agent -> scheduler, protocol 3 only: the desired revision applied (from protocol
    4, `pod_status.revision` carries it). Accepted from agents of protocol 3."""

    type: Literal["ack"] = "ack"
    revision: int


class LogsRequest(Frame):
    """Scheduler -> agent: stream a container's log (for `corral logs`)."""

    type: Literal["logs"] = "logs"
    id: int
    uid: str
    container: str
    tail_lines: int | None = None
    follow: bool = False
    timestamps: bool = False
    previous: bool = False
    # Protocol 7: records older than this are left out, by the node's own clock and
    # stamps, as the kubelet does (common/logsince.py).
    since_seconds: int | None = None
    since_time: str | None = None  # RFC 3339


LOG_SINCE_PROTOCOL = 7  # the first whose logs requests carry since_seconds and since_time


class LogsChunk(Frame):
    """Agent -> scheduler: part of a log stream; `eof` ends it, `error` says why it failed."""

    type: Literal["logs_chunk"] = "logs_chunk"
    id: int
    data: str = ""
    eof: bool = False
    error: str | None = None


class LogsCancel(Frame):
    """Scheduler -> agent: the reader went away; stop streaming `id`."""

    type: Literal["logs_cancel"] = "logs_cancel"
    id: int


class ConfigUpdate(Frame):
    """Scheduler -> agent: settings of the welcome's `config` that changed (the heartbeat
    interval, stretched as the cluster grows); the agent adopts them from its next beat."""

    type: Literal["config"] = "config"
    config: dict[str, Any]


class ErrorFrame(Frame):
    type: Literal["error"] = "error"
    message: str


# The frames every protocol version shares; the agent's hello, heartbeat and pod_status
# differ between protocol 5 and protocols 3 and 4.
_SharedFrame: TypeAlias = (
    Welcome
    | CredentialAck
    | PodEvents
    | Desired
    | Ack
    | LogsRequest
    | LogsChunk
    | LogsCancel
    | ConfigUpdate
    | ErrorFrame
)
AnyFrame = Annotated[
    Hello | Heartbeat | PodStatusUpdate | _SharedFrame, Field(discriminator="type")
]
AnyFrameV4 = Annotated[
    HelloV4 | HeartbeatV4 | PodStatusUpdateV4 | _SharedFrame, Field(discriminator="type")
]
_FRAME: TypeAdapter[Frame] = TypeAdapter(AnyFrame)
_FRAME_V4: TypeAdapter[Frame] = TypeAdapter(AnyFrameV4)


def encode(frame: Frame, version: int = PROTOCOL_VERSION) -> bytes:
    """One frame as msgpack bytes, ready to send as a binary WebSocket message, stamped
    with `version` (the scheduler answers an older agent in the agent's version)."""
    # Python mode: every field is a msgpack type already (bytes travel as bin).
    raw = frame.model_dump()
    raw["v"] = version
    if version < 6 and isinstance(frame, Welcome):
        del raw["more"]  # unknown before 6: the agent's frames forbid extra fields
    if version < LOG_SINCE_PROTOCOL and isinstance(frame, LogsRequest):
        del raw["since_seconds"], raw["since_time"]  # unknown before: forbidden extras
    return msgpack.packb(raw, use_bin_type=True)


def encode_desired(
    revision: int, upsert: list[bytes], remove: list[str], version: int = PROTOCOL_VERSION
) -> bytes:
    """`encode(Desired(revision=..., upsert=..., remove=...), version)` without building
    the model: the scheduler sends one per node for every scheduling batch that touches
    it, from values it made itself (tests check that the bytes are the same)."""
    frame = {"v": version, "type": "desired", "revision": revision}
    frame["upsert"], frame["remove"] = upsert, remove
    return msgpack.packb(frame, use_bin_type=True)


# Pod JSON a desired frame carries at most (unless one pod is bigger): half a frame, for
# the rest of the frame and a wide margin. A request body is at most 8 MiB by default.
DESIRED_FRAME_BUDGET = MAX_FRAME_BYTES // 2


def desired_frames(
    revision: int,
    upsert: list[bytes],
    remove: list[str],
    version: int = PROTOCOL_VERSION,
    budget: int = DESIRED_FRAME_BUDGET,
) -> list[bytes]:
    """The desired change as frames the agent can take: one, unless the pods' JSON comes
    to more than `budget` bytes (a burst of big pods for one node), then as many as it
    takes, in order, the removals in the first. One frame over MAX_FRAME_BYTES made the
    agent drop the link.

    Only the last part carries `revision`; the others carry `revision - 1`, which is
    what the agent has wholly applied once it has applied them (frames are applied in
    order), so that its ack of a first part does not clear the later ones."""
    parts = _parts(upsert, budget)
    return [
        encode_desired(
            revision if i == len(parts) - 1 else revision - 1,
            part,
            remove if i == 0 else [],
            version,
        )
        for i, part in enumerate(parts)
    ]


# The first protocol whose agents take every field a stored pod may carry; an agent
# before it gets its pods through `pod_for_agent`.
POD_FIELDS_PROTOCOL = 7
SPEC_UPDATE_PROTOCOL = 8  # the first whose agents act on a running pod's new images
# The pod fields that came after protocol 5: (the protocol that brought it, its section,
# its name, the name as JSON, looked for before the pod is parsed).
_NEWER_POD_FIELDS = tuple(
    (since, section, field, json.dumps(field).encode())
    for since, section, field in (
        (6, "metadata", "finalizers"),
        (7, "metadata", "generateName"),
        (7, "spec", "dnsPolicy"),
    )
)


def pod_for_agent(pod: bytes, version: int) -> bytes:
    """A pod's JSON as an agent of `version` takes it: without the fields that came after
    its protocol (`_NEWER_POD_FIELDS`: `metadata.finalizers` before 6, `spec.dnsPolicy`
    and `metadata.generateName` before 7), which its models refuse as unknown (it dropped
    the pod, and stopped it at the next resync); the agent has no use for them. A pod
    without them, most pods, is returned as it is, unparsed."""
    if version >= POD_FIELDS_PROTOCOL:
        return pod
    newer = [
        (section, field)
        for since, section, field, needle in _NEWER_POD_FIELDS
        if version < since and needle in pod
    ]
    if not newer:
        return pod
    doc = json.loads(pod)
    removed = False
    for section, field in newer:
        part = doc.get(section)
        if isinstance(part, dict) and part.pop(field, None) is not None:
            removed = True
    if not removed:  # the word elsewhere (in an annotation, say)
        return pod
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def welcome_frames(
    welcome: Welcome, version: int = PROTOCOL_VERSION, budget: int = DESIRED_FRAME_BUDGET
) -> list[bytes]:
    """The welcome as frames the agent can take: one, unless its pods' JSON comes to
    more than `budget` bytes; then parts (protocol 6), the first with everything but the
    pods that do not fit, the others with pods alone, every one but the last `more`.

    An agent of protocol 5 or older takes a welcome in one frame only, whatever its size
    (one over MAX_FRAME_BYTES is refused, and the agent dials again)."""
    parts = _parts(welcome.pods, budget)
    if len(parts) == 1 or version < 6:
        return [encode(welcome, version)]
    first = welcome.model_copy(update={"pods": parts[0], "more": True})
    rest = [
        Welcome(revision=welcome.revision, pods=part, more=i < len(parts) - 2)
        for i, part in enumerate(parts[1:])
    ]
    return [encode(frame, version) for frame in (first, *rest)]


def join_welcome(parts: Sequence[Welcome]) -> Welcome:
    """One welcome of its parts (`welcome_frames`), in the order received."""
    first = parts[0]
    if len(parts) == 1:
        return first
    revisions = {p.revision for p in parts}
    if len(revisions) > 1 or any(p.config or p.credential for p in parts[1:]):
        raise ProtocolError(
            "invalid welcome: its parts differ in revision or carry config or credential"
        )
    return first.model_copy(
        update={
            "pods": [pod for part in parts for pod in part.pods],
            "stop": [uid for part in parts for uid in part.stop],
            "more": False,
        }
    )


async def receive_welcome(receive: Callable[[], Awaitable[Frame]]) -> Frame:
    """The first frame of a link from `receive`, a welcome joined from all its parts; any
    other first frame (an error, say) as it came. A part followed by anything but the
    next part is a ProtocolError."""
    first = await receive()
    if not isinstance(first, Welcome):
        return first
    parts = [first]
    while parts[-1].more:
        frame = await receive()
        if not isinstance(frame, Welcome):
            kind = getattr(frame, "type", type(frame).__name__)
            raise ProtocolError(f"expected the next part of the welcome, got {kind}")
        parts.append(frame)
    return join_welcome(parts)


def _parts(pods: list[bytes], budget: int) -> list[list[bytes]]:
    """`pods` in order, in as few runs as keep each run's bytes within `budget` (a pod
    bigger than that alone in its run); one run, empty or not, if they all fit."""
    if sum(map(len, pods)) <= budget:
        return [pods]
    parts: list[list[bytes]] = []
    part: list[bytes] = []
    size = 0
    for pod in pods:
        if part and size + len(pod) > budget:
            parts.append(part)
            part, size = [], 0
        part.append(pod)
        size += len(pod)
    parts.append(part)
    return parts


# The problems of a validation error that `problems` lists; the rest are counted.
MAX_PROBLEMS_SHOWN = 10


def problems(exc: ValidationError, within: str = "") -> str:
    """What a validation error found, each with where (in the field `within`, if given):
    `revision: Field required; ...`; the first MAX_PROBLEMS_SHOWN, then how many more
    (a message for the log and an error frame, whatever the peer sent)."""
    top = (within,) if within else ()
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    listed = "; ".join(
        f"{'.'.join(shown(p) for p in (*top, *e['loc'])) or 'frame'}: {shown(e['msg'], 400)}"
        for e in errors[:MAX_PROBLEMS_SHOWN]
    )
    more = len(errors) - MAX_PROBLEMS_SHOWN
    return f"{listed}; and {more} more" if more > 0 else listed


def shown(value: object, limit: int = 64) -> str:
    """A value from a frame (or a message quoting one), cut short for an error frame and
    the log: a peer chooses it."""
    text = str(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def decode(data: bytes, versions: tuple[int, ...] = (PROTOCOL_VERSION,)) -> Frame:
    """Decode and validate one frame of one of `versions` (`frame.v` says which); anything
    malformed raises `ProtocolError`."""
    if len(data) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(data)} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"frame is not msgpack: {exc}") from None
    if not isinstance(raw, dict):
        raise ProtocolError("frame is not a map")
    version = raw.get("v")
    if type(version) is not int or version not in versions:  # not True, not 1.0
        want = " or ".join(str(v) for v in versions)
        raise ProtocolError(f"unsupported protocol version {shown(repr(version))}, want {want}")
    try:
        # Strict: msgpack carries types, so a string where a number belongs is a bug
        # in the peer, not something to coerce.
        # The core validator itself: TypeAdapter.validate_python is a Python call around
        # it that checks its options, for every frame of every agent.
        validator = (_FRAME if version >= 5 else _FRAME_V4).validator
        frame = validator.validate_python(raw, strict=True)
    except ValidationError as exc:
        kind = shown(repr(raw.get("type")))
        raise ProtocolError(f"invalid {kind} frame: {problems(exc)}") from None
    # Checked here rather than by a model validator, which cost 5% of a heartbeat's decode.
    if isinstance(frame, Heartbeat) and not (
        len(frame.pod_uids) == len(frame.pod_cpu) == len(frame.pod_memory)
    ):
        raise ProtocolError(
            "invalid 'heartbeat' frame: pod_uids, pod_cpu and pod_memory differ in length "
            f"({len(frame.pod_uids)}, {len(frame.pod_cpu)}, {len(frame.pod_memory)})"
        )
    if isinstance(frame, Ack) and version >= 4:
        raise ProtocolError(
            f"invalid 'ack' frame: protocol {version} acknowledges in pod_status.revision"
        )
    return frame
