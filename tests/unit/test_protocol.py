"""The agent link's frames: msgpack round trips and refusal of anything malformed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgpack
import pytest

from common.protocol import (
    AGENT_PROTOCOLS,
    DESIRED_FRAME_BUDGET,
    MAX_FRAME_BYTES,
    OLDEST_AGENT_PROTOCOL,
    PROTOCOL_VERSION,
    Ack,
    ConfigUpdate,
    CredentialAck,
    Desired,
    ErrorFrame,
    Frame,
    Heartbeat,
    HeartbeatV4,
    Hello,
    HelloV4,
    LogsRequest,
    NodeInfo,
    PodReport,
    PodReportV4,
    PodStatusUpdate,
    PodStatusUpdateV4,
    ProtocolError,
    Welcome,
    decode,
    desired_frames,
    encode,
    encode_desired,
    join_welcome,
    pod_for_agent,
    receive_welcome,
    welcome_frames,
)

_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web", "namespace": "default", "uid": "u-1"},
    "spec": {"containers": [{"name": "web", "image": "nginx"}]},
}
_REPORT = PodReport(uid="u-1", namespace="default", name="web", status=b'{"phase":"Running"}')
_REPORT_V4 = PodReportV4(uid="u-1", namespace="default", name="web", status={"phase": "Running"})
_NODE = NodeInfo(
    name="n1",
    labels={"zone": "a"},
    capacity={"cpu": "4", "memory": "8Gi", "pods": "110"},
    allocatable={"cpu": "3800m", "memory": "7Gi", "pods": "110"},
    info={"kernel": "6.1"},
    address="10.0.0.5",
)

FRAMES: list[Frame] = [
    Hello(node=_NODE, pods=[_REPORT], agent_version="0.1.0"),
    Welcome(
        revision=42,
        config={"heartbeat_seconds": 2.5},
        pods=[json.dumps(_POD).encode()],
        stop=["u-0"],
    ),
    Welcome(revision=1, pods=[], credential="corralnode_n1_secret"),
    CredentialAck(),
    Heartbeat(usage=[250, 2**30], pod_uids=["u-1", "u-2"], pod_cpu=[5, 0], pod_memory=[9, 2**40]),
    PodStatusUpdate(pods=[_REPORT]),
    Desired(revision=43, upsert=[json.dumps(_POD).encode()], remove=["u-2"]),
    PodStatusUpdate(stopped=["u-2"], revision=43),
    ConfigUpdate(config={"heartbeat_seconds": 2.5, "node_grace_seconds": 12.5}),
    ErrorFrame(message="join token refused"),
]


def _pack(raw: Any) -> bytes:
    """Raw msgpack bytes of any value, bypassing `encode`'s checks."""
    return msgpack.packb(raw, use_bin_type=True)


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f).__name__)
def test_round_trip(frame: Frame) -> None:
    """Every frame type decodes to an equal frame of the same class."""
    data = encode(frame)
    assert isinstance(data, bytes)
    decoded = decode(data)
    assert type(decoded) is type(frame)
    assert decoded == frame


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f).__name__)
def test_wire_is_map_with_type_and_version(frame: Frame) -> None:
    """On the wire a frame is a msgpack map carrying its type and the protocol version."""
    raw = msgpack.unpackb(encode(frame))
    assert raw["v"] == PROTOCOL_VERSION
    assert raw["type"] == frame.type  # type: ignore[attr-defined]


def test_decode_accepts_minimal_frames() -> None:
    """Optional fields may be left out by the sender."""
    frame = decode(_pack({"v": PROTOCOL_VERSION, "type": "heartbeat"}))
    assert frame == Heartbeat()


@pytest.mark.parametrize(
    "version",
    [0, PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1, None, str(PROTOCOL_VERSION), 4.0, True],
)
def test_wrong_version_refused(version: Any) -> None:
    """A frame with another (or a non-integer) version is refused, naming the version."""
    with pytest.raises(ProtocolError, match="unsupported protocol version"):
        decode(_pack({"v": version, "type": "desired", "revision": 1}))


def test_missing_version_refused() -> None:
    """A frame without a version is refused."""
    with pytest.raises(ProtocolError, match="unsupported protocol version None"):
        decode(_pack({"type": "desired", "revision": 1}))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never used in msgpack
        b"\x92\x01",  # array header promising two items, one given
        b"\x81\x01\x02",  # map with an integer key
        _pack({"v": PROTOCOL_VERSION}) + b"\x00",  # trailing bytes
        b"hello, scheduler",
    ],
)
def test_garbage_refused(data: bytes) -> None:
    """Bytes that are not one msgpack value are refused as ProtocolError."""
    with pytest.raises(ProtocolError, match="not msgpack"):
        decode(data)


@pytest.mark.parametrize("raw", [[1, "ack"], "ack", 1, None])
def test_non_map_refused(raw: Any) -> None:
    """A msgpack value that is not a map is refused."""
    with pytest.raises(ProtocolError, match="frame is not a map"):
        decode(_pack(raw))


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"v": PROTOCOL_VERSION}, "type"),
        ({"v": PROTOCOL_VERSION, "type": "teleport"}, "teleport"),
        ({"v": PROTOCOL_VERSION, "type": "desired"}, "revision: Field required"),
        ({"v": PROTOCOL_VERSION, "type": "desired", "revision": "5"}, "revision"),
        ({"v": PROTOCOL_VERSION, "type": "desired", "revision": 1, "extra": True}, "extra"),
        ({"v": PROTOCOL_VERSION, "type": "pod_status", "revision": "5"}, "revision"),
        ({"v": PROTOCOL_VERSION, "type": "ack", "revision": 1}, "'ack'"),  # gone in 4
        ({"v": PROTOCOL_VERSION, "type": "hello", "node": {"name": "n1"}}, "capacity"),
        ({"v": PROTOCOL_VERSION, "type": "heartbeat", "usage": [1, "lots"]}, "usage.1"),
        ({"v": PROTOCOL_VERSION, "type": "heartbeat", "usage": [1]}, "usage: List should have"),
        ({"v": PROTOCOL_VERSION, "type": "heartbeat", "usage": [1, 2, 3]}, "usage: List should"),
        ({"v": PROTOCOL_VERSION, "type": "heartbeat", "usage": {"cpu": 1}}, "usage: Input should"),
        ({"v": PROTOCOL_VERSION, "type": "heartbeat", "usage": [1.0, 2]}, "usage.0"),
        ({"v": PROTOCOL_VERSION, "type": "heartbeat", "pod_uids": [5]}, "pod_uids.0"),
        ({"v": PROTOCOL_VERSION, "type": "heartbeat", "pod_cpu": [True]}, "pod_cpu.0"),
        (
            {"v": PROTOCOL_VERSION, "type": "heartbeat", "pod_uids": ["a"], "pod_cpu": [1]},
            "pod_uids, pod_cpu and pod_memory differ in length (1, 1, 0)",
        ),
        (
            {"v": PROTOCOL_VERSION, "type": "heartbeat", "pod_usage": {"u": {"cpu": 1}}},
            "pod_usage: Extra inputs are not permitted",
        ),
        (
            {
                "v": PROTOCOL_VERSION,
                "type": "pod_status",
                "pods": [{"uid": "u", "namespace": "d", "name": "p", "status": {"phase": "x"}}],
            },
            "pods.0.status: Input should be a valid bytes",
        ),
        (
            {
                "v": PROTOCOL_VERSION,
                "type": "pod_status",
                "pods": [{"uid": "u", "namespace": "d", "name": "p", "status": "{}"}],
            },
            "pods.0.status: Input should be a valid bytes",
        ),
        ({"v": PROTOCOL_VERSION, "type": "pod_status", "pods": [{"uid": "u"}]}, "pods.0.namespace"),
        ({"v": PROTOCOL_VERSION, "type": "welcome", "revision": 1, "pods": {}}, "pods"),
    ],
)
def test_wrong_shape_refused(raw: dict[str, Any], fragment: str) -> None:
    """A map of the wrong shape is refused, naming the offending field."""
    with pytest.raises(ProtocolError) as info:
        decode(_pack(raw))
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "usage",
    [
        {"usage": [-1, 0]},
        {"pod_uids": ["u"], "pod_cpu": [5], "pod_memory": [-5]},
    ],
)
def test_negative_usage_refused(usage: dict[str, Any]) -> None:
    """A node cannot report using less than nothing (it showed on the status page)."""
    with pytest.raises(ProtocolError, match="greater than or equal to 0"):
        decode(_pack({"v": PROTOCOL_VERSION, "type": "heartbeat", **usage}))


@pytest.mark.parametrize(
    "raw",
    [
        {"v": PROTOCOL_VERSION, "type": "x" * 100_000},
        {"v": "x" * 100_000, "type": "heartbeat"},
        {"v": 4, "type": "heartbeat", "usage": {"x" * 100_000: "a"}},
    ],
)
def test_what_a_peer_chose_is_cut_short_in_errors(raw: dict[str, Any]) -> None:
    """The type, version or key a peer sent is shown cut short in the error (which goes
    back to it and into the log), not whole."""
    with pytest.raises(ProtocolError) as info:
        decode(_pack(raw), (4, PROTOCOL_VERSION))
    assert "xxx..." in str(info.value) and len(str(info.value)) < 600


def test_oversized_frame_refused() -> None:
    """A frame larger than MAX_FRAME_BYTES is refused before it is parsed."""
    with pytest.raises(ProtocolError, match="exceeds"):
        decode(b"\x00" * (MAX_FRAME_BYTES + 1))


def test_protocol_error_is_value_error() -> None:
    """ProtocolError is a ValueError, so callers can treat it as bad input."""
    assert issubclass(ProtocolError, ValueError)


@pytest.mark.parametrize(
    ("upsert", "remove"), [([], []), ([json.dumps(_POD).encode(), b"{}"], ["u-2", "u-3"])]
)
def test_encode_desired_is_encode_of_the_model(upsert: list[bytes], remove: list[str]) -> None:
    """The hub's shortcut sends the very bytes the Desired model would."""
    frame = Desired(revision=7, upsert=upsert, remove=remove)
    assert encode_desired(7, upsert, remove) == encode(frame)
    assert decode(encode_desired(7, upsert, remove)) == frame
    old = OLDEST_AGENT_PROTOCOL
    assert encode_desired(7, upsert, remove, old) == encode(frame, old)


def test_a_big_desired_change_goes_in_frames_the_agent_takes() -> None:
    """A burst of big pods for one node is split: every frame under MAX_FRAME_BYTES, the
    pods in order, the removals once. One frame over it made the agent drop the link."""
    small = [b"x" * 100, b"y" * 100]
    assert desired_frames(3, small, ["gone"]) == [encode_desired(3, small, ["gone"])]
    big = [bytes([65 + i]) * (3 * 1024 * 1024) for i in range(12)]  # 36 MiB in all
    frames = desired_frames(3, big, ["gone"])
    assert len(frames) >= 3 and all(len(f) <= MAX_FRAME_BYTES for f in frames)
    decoded = [decode(f) for f in frames]
    # Only the last part says revision 3: an ack of an earlier one must not clear it.
    assert [d.revision for d in decoded] == [2] * (len(frames) - 1) + [3]  # type: ignore[attr-defined]
    assert [p for d in decoded for p in d.upsert] == big  # type: ignore[attr-defined]
    assert [d.remove for d in decoded] == [["gone"]] + [[]] * (len(frames) - 1)  # type: ignore[attr-defined]
    huge = [b"z" * (DESIRED_FRAME_BUDGET + 1)]  # one pod over the budget: a frame of its own
    assert [len(decode(f).upsert) for f in desired_frames(3, huge + small, [])] == [1, 2]  # type: ignore[attr-defined]


def test_a_big_welcome_goes_in_parts_the_agent_joins() -> None:
    """A welcome whose pods come to more than the budget goes in parts (protocol 6), each
    under MAX_FRAME_BYTES, every one but the last `more`; config, stop and credential in
    the first; joined, they are the welcome. A small one is the one frame it always was."""
    small = Welcome(revision=9, config={"heartbeat_seconds": 5.0}, pods=[b"x" * 100], stop=["u"])
    assert welcome_frames(small) == [encode(small)]
    big = [bytes([65 + i]) * (3 * 1024 * 1024) for i in range(12)]  # 36 MiB in all
    welcome = small.model_copy(update={"pods": big, "credential": "corralnode_n1_secret"})
    frames = welcome_frames(welcome)
    assert len(frames) >= 3 and all(len(f) <= MAX_FRAME_BYTES for f in frames)
    parts = [decode(f) for f in frames]
    assert all(isinstance(p, Welcome) for p in parts)
    assert [p.more for p in parts] == [True] * (len(parts) - 1) + [False]  # type: ignore[attr-defined]
    assert [p.credential for p in parts[1:]] == [None] * (len(parts) - 1)  # type: ignore[attr-defined]
    assert join_welcome(parts) == welcome  # type: ignore[arg-type]


def test_an_agent_before_protocol_6_gets_its_welcome_in_one_frame() -> None:
    """Without `more`, which its frames would refuse as an unknown field."""
    welcome = Welcome(revision=9, pods=[b"x" * 100, b"y" * 100])
    for version in (3, 4, 5):
        (frame,) = welcome_frames(welcome, version, budget=150)
        assert "more" not in msgpack.unpackb(frame)
        assert decode(frame, (version,)) == welcome.model_copy(update={"v": version})
    assert len(welcome_frames(welcome, 6, budget=150)) == 2


async def test_receive_welcome_joins_the_parts_and_refuses_anything_between() -> None:
    parts = [
        Welcome(revision=3, pods=[b"a"], stop=["u1"], more=True),
        Welcome(revision=3, pods=[b"b"], more=True),
        Welcome(revision=3, pods=[b"c"]),
    ]

    def receiver(frames: Sequence[Frame]) -> Any:
        queue = list(frames)

        async def receive() -> Frame:
            return queue.pop(0)

        return receive

    joined = await receive_welcome(receiver(parts))
    assert joined == Welcome(revision=3, pods=[b"a", b"b", b"c"], stop=["u1"])
    refused = ErrorFrame(message="node refused")
    assert await receive_welcome(receiver([refused])) == refused  # for the caller to say
    with pytest.raises(ProtocolError, match="expected the next part of the welcome, got desired"):
        await receive_welcome(receiver([parts[0], Desired(revision=4)]))
    with pytest.raises(ProtocolError, match="parts differ in revision"):
        join_welcome([parts[0], Welcome(revision=4, pods=[])])


def _with(**fields: Any) -> dict[str, Any]:
    """_POD with `metadata` and `spec` fields added: `metadata__finalizers=[...]`."""
    pod: dict[str, Any] = json.loads(json.dumps(_POD))
    for name, value in fields.items():
        section, field = name.split("__")
        pod[section][field] = value
    return pod


def test_pods_go_to_agents_before_protocol_6_without_finalizers() -> None:
    """Their models refuse the field: such an agent dropped the pod."""
    raw = json.dumps(_with(metadata__finalizers=["example.com/hold"])).encode()
    assert pod_for_agent(raw, PROTOCOL_VERSION) is raw
    assert pod_for_agent(raw, 6) is raw
    assert json.loads(pod_for_agent(raw, 5)) == _POD
    plain = json.dumps(_POD).encode()
    assert pod_for_agent(plain, 5) is plain
    named = json.dumps(_with(metadata__annotations={"note": '"finalizers"'})).encode()
    assert pod_for_agent(named, 5) is named  # the word elsewhere: left as it is


def test_pods_go_to_agents_before_protocol_7_without_dns_policy_and_generate_name() -> None:
    """Protocol 7 brought `spec.dnsPolicy` and `metadata.generateName` (what `kubectl run`
    and `kubectl create -f` of a generateName send): an agent before it gets the pod
    without them, and an agent before 6 without finalizers too; an agent of 7 or later
    gets the stored bytes, and a pod without them is not parsed (the same bytes) for any."""
    full = _with(
        metadata__generateName="web-",
        metadata__finalizers=["example.com/hold"],
        spec__dnsPolicy="ClusterFirst",
    )
    raw = json.dumps(full).encode()
    assert PROTOCOL_VERSION == 8
    assert pod_for_agent(raw, 8) is raw
    assert pod_for_agent(raw, 7) is raw
    assert json.loads(pod_for_agent(raw, 6)) == _with(metadata__finalizers=["example.com/hold"])
    assert json.loads(pod_for_agent(raw, 5)) == _POD
    plain = json.dumps(_POD).encode()
    for version in (5, 6, 7, 8):
        assert pod_for_agent(plain, version) is plain
    for field in ("spec__dnsPolicy", "metadata__generateName"):
        one = json.dumps(_with(**{field: "x"})).encode()
        assert json.loads(pod_for_agent(one, 6)) == _POD, field
    # The words elsewhere only (a label value, an env variable): left as they are.
    labelled = _with(
        metadata__labels={"k": "dnsPolicy"}, metadata__annotations={"generateName": ""}
    )
    named = json.dumps(labelled).encode()
    assert pod_for_agent(named, 6) is named
    # Text that is not ASCII comes through the strip as it went in.
    accented = _with(metadata__labels={"app": "web"}, spec__dnsPolicy="Default")
    accented["metadata"]["annotations"] = {"note": "café ☕"}
    out = pod_for_agent(json.dumps(accented, ensure_ascii=False).encode(), 6)
    assert "café ☕" in out.decode() and "dnsPolicy" not in out.decode()


def test_the_scheduler_speaks_the_protocol_before() -> None:
    """A frame is stamped with the version asked for and decodes only where that version
    is accepted; protocol 3's ack frame decodes in 3 and is refused from 4 on."""
    old = OLDEST_AGENT_PROTOCOL
    assert AGENT_PROTOCOLS == tuple(range(old, PROTOCOL_VERSION + 1))
    data = encode(HeartbeatV4(usage={"cpu": 1}), old)
    assert msgpack.unpackb(data)["v"] == old
    frame = decode(data, AGENT_PROTOCOLS)
    assert isinstance(frame, HeartbeatV4) and frame.v == old and frame.usage == {"cpu": 1}
    with pytest.raises(
        ProtocolError, match=f"unsupported protocol version {old}, want {PROTOCOL_VERSION}"
    ):
        decode(data)  # an agent reads only its own version
    ack = decode(encode(Ack(revision=5), old), AGENT_PROTOCOLS)
    assert isinstance(ack, Ack) and ack.revision == 5
    with pytest.raises(ProtocolError, match=r"acknowledges in pod_status\.revision"):
        decode(encode(Ack(revision=5)), AGENT_PROTOCOLS)


FRAMES_V4: list[Frame] = [
    HelloV4(node=_NODE, pods=[_REPORT_V4], agent_version="0.1.0"),
    HeartbeatV4(usage={"cpu": 250, "memory": 2**30}, pod_usage={"u-1": {"cpu": 5}}),
    PodStatusUpdateV4(pods=[_REPORT_V4], revision=43),
    PodStatusUpdateV4(stopped=["u-2"]),
]


@pytest.mark.parametrize("version", [3, 4])
@pytest.mark.parametrize("frame", FRAMES_V4, ids=lambda f: type(f).__name__)
def test_agents_of_protocols_3_and_4_still_decode(frame: Frame, version: int) -> None:
    """The hello, heartbeat and pod_status of protocols 3 and 4 (maps, a status as a map)
    decode from those versions, and are refused in protocol 5, naming the field."""
    decoded = decode(encode(frame, version), AGENT_PROTOCOLS)
    assert type(decoded) is type(frame) and decoded.v == version
    assert decoded.model_dump(exclude={"v"}) == frame.model_dump(exclude={"v"})
    if isinstance(frame, PodStatusUpdateV4) and not frame.pods:
        return  # stops and acks alone: the same frame in protocol 5
    kind = frame.model_dump()["type"]
    with pytest.raises(ProtocolError, match=f"invalid {kind!r} frame"):
        decode(encode(frame), AGENT_PROTOCOLS)


_CHANGED_IN_5 = [
    f
    for f in FRAMES
    if isinstance(f, Hello | Heartbeat) or (isinstance(f, PodStatusUpdate) and f.pods)
]


@pytest.mark.parametrize("frame", _CHANGED_IN_5, ids=lambda f: type(f).__name__)
def test_protocol_5_shapes_are_refused_from_older_agents(frame: Frame) -> None:
    """A protocol 4 agent cannot send protocol 5's arrays or status bytes."""
    kind = frame.model_dump()["type"]
    with pytest.raises(ProtocolError, match=f"invalid {kind!r} frame"):
        decode(encode(frame, 4), AGENT_PROTOCOLS)


def test_a_logs_request_carries_since_from_protocol_7_only() -> None:
    """An agent of 7 is sent `since_seconds` and `since_time` and applies them itself; an
    older one, whose frames forbid unknown fields, is sent neither (the scheduler filters
    what it relays instead)."""
    request = LogsRequest(id=1, uid="u", container="c", since_time="2024-05-01T10:00:00Z")
    new = msgpack.unpackb(encode(request, 7))
    assert new["since_time"] == "2024-05-01T10:00:00Z" and new["since_seconds"] is None
    for version in range(OLDEST_AGENT_PROTOCOL, 7):
        old = msgpack.unpackb(encode(request, version))
        assert "since_time" not in old and "since_seconds" not in old
        assert decode(encode(request, version), (version,)) == request.model_copy(
            update={"since_time": None, "v": version}
        )
