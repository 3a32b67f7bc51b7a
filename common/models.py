"""The objects corral stores and exchanges: a Kubernetes-shaped subset (Pod, Node, Status).

Field names follow Kubernetes (camelCase on the wire, snake_case in Python).
Every model forbids unknown fields, so a manifest field corral does not support
is refused by its path instead of being silently dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from common.quantity import QuantityError, cpu_millis, memory_bytes, parse_quantity

API_VERSION = "v1"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")

MAX_CONTAINERS = 32
MAX_ENV = 512
MAX_LABELS = 64


def now() -> datetime:
    """The current time, UTC, truncated to whole seconds as Kubernetes timestamps are."""
    return datetime.now(UTC).replace(microsecond=0)


def check_dns_label(value: str) -> str:
    """A DNS-1123 label: namespace and container names."""
    if len(value) > 63 or not _DNS_LABEL.match(value):
        raise ValueError(
            f"{value!r} is not a valid DNS-1123 label: at most 63 lowercase letters, digits "
            "and '-', starting and ending with a letter or digit"
        )
    return value


def check_dns_subdomain(value: str) -> str:
    """A DNS-1123 subdomain: object names."""
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: at most 253 lowercase letters, digits, '-' "
            "and '.', starting and ending with a letter or digit"
        )
    return value


def check_label_key(key: str) -> str:
    """A label key: an optional DNS-subdomain prefix and '/', then a name of at most 63."""
    prefix, slash, name = key.rpartition("/")
    if slash and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        raise ValueError(f"label key {key!r}: prefix must be a DNS subdomain")
    if len(name) > 63 or not _LABEL_NAME.match(name):
        raise ValueError(
            f"label key {key!r}: name must be at most 63 characters of letters, digits, "
            "'-', '_' and '.', starting and ending with a letter or digit"
        )
    return key


def check_label_value(value: str) -> str:
    """A label value: empty, or at most 63 characters like a label name."""
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        raise ValueError(
            f"label value {value!r} must be empty or at most 63 characters of letters, "
            "digits, '-', '_' and '.', starting and ending with a letter or digit"
        )
    return value


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels are allowed")
    for key, value in labels.items():
        check_label_key(key)
        check_label_value(value)
    return labels


def _check_quantity(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"quantities must be strings or numbers, not {type(value).__name__}")
    try:
        parse_quantity(value)
    except QuantityError as exc:
        raise ValueError(str(exc)) from None
    return str(value)


def _int_or_string(value: Any) -> int | str:
    # One validator instead of `int | str`: a union would report one error per
    # member, with the member's type name inserted into the field path.
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"must be an integer or a string, not {type(value).__name__}")
    return value


Quantity = Annotated[Any, AfterValidator(_check_quantity)]
IntOrString = Annotated[int | str, PlainValidator(_int_or_string, json_schema_input_type=int | str)]
Labels = Annotated[dict[str, str], AfterValidator(_check_labels)]


class Model(BaseModel):
    """Base for every wire model: camelCase aliases, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=False,
        ser_json_timedelta="float",
    )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready wire form: camelCase keys, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class OwnerReference(Model):
    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None


class ObjectMeta(Model):
    name: Annotated[str, AfterValidator(check_dns_subdomain)]
    namespace: Annotated[str, AfterValidator(check_dns_label)] | None = None
    uid: str | None = None
    labels: Labels = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    resource_version: str | None = None
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    generation: int | None = None
    owner_references: list[OwnerReference] | None = None


class EnvVar(Model):
    name: str
    value: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _ENV_NAME.match(value):
            raise ValueError(f"{value!r} is not a valid environment variable name")
        return value


class ContainerPort(Model):
    """Accepted and recorded; corral has no Services yet, so ports are informational."""

    container_port: int = Field(ge=1, le=65535)
    name: str | None = None
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    host_port: int | None = Field(default=None, ge=1, le=65535)


class ResourceRequirements(Model):
    requests: dict[Literal["cpu", "memory"], Quantity] = Field(default_factory=dict)
    limits: dict[Literal["cpu", "memory"], Quantity] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ResourceRequirements:
        # As in Kubernetes: a request above its limit could never be honoured.
        checks: tuple[tuple[Literal["cpu", "memory"], Callable[[Any], int]], ...] = (
            ("cpu", cpu_millis),
            ("memory", memory_bytes),
        )
        for resource, amount in checks:
            request, limit = self.requests.get(resource), self.limits.get(resource)
            if request is not None and limit is not None and amount(request) > amount(limit):
                raise ValueError(
                    f"{resource} request {request} must be less than or equal to "
                    f"{resource} limit {limit}"
                )
        return self


class ExecAction(Model):
    command: list[str] = Field(min_length=1)


class HTTPHeader(Model):
    name: str
    value: str


class HTTPGetAction(Model):
    path: str = "/"
    port: IntOrString
    host: str | None = None
    scheme: Literal["HTTP", "HTTPS"] = "HTTP"
    http_headers: list[HTTPHeader] | None = None


class TCPSocketAction(Model):
    port: IntOrString
    host: str | None = None


class Probe(Model):
    exec: ExecAction | None = None
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    initial_delay_seconds: int = Field(default=0, ge=0)
    period_seconds: int = Field(default=10, ge=1)
    timeout_seconds: int = Field(default=1, ge=1)
    success_threshold: int = Field(default=1, ge=1)
    failure_threshold: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _one_handler(self) -> Probe:
        handlers = [h for h in (self.exec, self.http_get, self.tcp_socket) if h is not None]
        if len(handlers) != 1:
            raise ValueError("a probe needs exactly one of exec, httpGet or tcpSocket")
        return self


class VolumeMount(Model):
    name: str
    mount_path: str
    read_only: bool = False

    @field_validator("mount_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or ".." in value.split("/"):
            raise ValueError(f"mountPath {value!r} must be an absolute path without '..'")
        return value


class Container(Model):
    name: Annotated[str, AfterValidator(check_dns_label)]
    image: str = Field(min_length=1)
    command: list[str] | None = None
    args: list[str] | None = None
    env: list[EnvVar] = Field(default_factory=list, max_length=MAX_ENV)
    working_dir: str | None = None
    ports: list[ContainerPort] = Field(default_factory=list)
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    liveness_probe: Probe | None = None
    readiness_probe: Probe | None = None
    startup_probe: Probe | None = None
    volume_mounts: list[VolumeMount] = Field(default_factory=list)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None


class EmptyDirVolumeSource(Model):
    medium: Literal["", "Memory"] = ""
    size_limit: Quantity | None = None


class HostPathVolumeSource(Model):
    path: str
    type: str | None = None


class Volume(Model):
    name: Annotated[str, AfterValidator(check_dns_label)]
    empty_dir: EmptyDirVolumeSource | None = None
    host_path: HostPathVolumeSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Volume:
        if (self.empty_dir is None) == (self.host_path is None):
            raise ValueError("a volume needs exactly one of emptyDir or hostPath")
        return self


RestartPolicy = Literal["Always", "OnFailure", "Never"]


class PodSpec(Model):
    containers: list[Container] = Field(min_length=1, max_length=MAX_CONTAINERS)
    restart_policy: RestartPolicy = "Always"
    node_selector: dict[str, str] = Field(default_factory=dict)
    node_name: str | None = None
    termination_grace_period_seconds: int = Field(default=30, ge=0)
    host_network: bool = False
    volumes: list[Volume] = Field(default_factory=list)
    # Cached by requests(); private attributes are not fields and never serialized.
    _requests: tuple[int, int] | None = PrivateAttr(default=None)

    @field_validator("containers", "volumes")
    @classmethod
    def _unique_names(cls, items: list[Container] | list[Volume]) -> Any:
        seen: set[str] = set()
        for item in items:
            if item.name in seen:
                raise ValueError(f"duplicate name {item.name!r}: names must be unique within a pod")
            seen.add(item.name)
        return items

    @model_validator(mode="after")
    def _known_volumes(self) -> PodSpec:
        volumes = {v.name for v in self.volumes}
        for container in self.containers:
            for mount in container.volume_mounts:
                if mount.name not in volumes:
                    raise ValueError(
                        f"container {container.name!r} mounts unknown volume {mount.name!r}"
                    )
        return self

    def requests(self) -> tuple[int, int]:
        """What placement reserves: (millicores, bytes), summed over containers.

        As in Kubernetes, a container with a limit and no request requests its limit.
        Computed once: a pod's spec does not change after it is created.
        """
        # The private dict directly: pydantic's attribute path for private
        # attributes is several times slower, and placement asks this often.
        private = self.__pydantic_private__
        cached = private.get("_requests") if private is not None else None
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        cpu = mem = 0
        for container in self.containers:
            res = container.resources
            c = res.requests.get("cpu", res.limits.get("cpu"))
            m = res.requests.get("memory", res.limits.get("memory"))
            cpu += cpu_millis(c) if c is not None else 0
            mem += memory_bytes(m) if m is not None else 0
        self._requests = (cpu, mem)
        return cpu, mem


class ContainerStateWaiting(Model):
    reason: str | None = None
    message: str | None = None


class ContainerStateRunning(Model):
    started_at: datetime | None = None


class ContainerStateTerminated(Model):
    exit_code: int
    signal: int | None = None
    reason: str | None = None
    message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class ContainerState(Model):
    waiting: ContainerStateWaiting | None = None
    running: ContainerStateRunning | None = None
    terminated: ContainerStateTerminated | None = None


class ContainerStatus(Model):
    name: str
    state: ContainerState = Field(default_factory=ContainerState)
    last_state: ContainerState = Field(default_factory=ContainerState)
    ready: bool = False
    restart_count: int = 0
    image: str | None = None
    started: bool | None = None


class PodCondition(Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_transition_time: datetime | None = None


PodPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"]


class PodStatus(Model):
    phase: PodPhase = "Pending"
    reason: str | None = None
    message: str | None = None
    conditions: list[PodCondition] = Field(default_factory=list)
    container_statuses: list[ContainerStatus] = Field(default_factory=list)
    host_ip: str | None = None
    start_time: datetime | None = None


class Pod(Model):
    api_version: Literal["v1"] = "v1"
    kind: Literal["Pod"] = "Pod"
    metadata: ObjectMeta
    spec: PodSpec
    status: PodStatus = Field(default_factory=PodStatus)

    @property
    def key(self) -> str:
        return f"{self.metadata.namespace}/{self.metadata.name}"


class NodeCondition(Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_heartbeat_time: datetime | None = None
    last_transition_time: datetime | None = None


class NodeSpec(Model):
    unschedulable: bool = False


class NodeStatus(Model):
    capacity: dict[str, Quantity] = Field(default_factory=dict)
    allocatable: dict[str, Quantity] = Field(default_factory=dict)
    usage: dict[str, Quantity] = Field(default_factory=dict)
    conditions: list[NodeCondition] = Field(default_factory=list)
    addresses: list[dict[str, str]] = Field(default_factory=list)
    last_heartbeat_time: datetime | None = None
    node_info: dict[str, str] = Field(default_factory=dict)


class Node(Model):
    api_version: Literal["v1"] = "v1"
    kind: Literal["Node"] = "Node"
    metadata: ObjectMeta
    spec: NodeSpec = Field(default_factory=NodeSpec)
    status: NodeStatus = Field(default_factory=NodeStatus)

    def condition(self, kind: str) -> NodeCondition | None:
        return next((c for c in self.status.conditions if c.type == kind), None)

    @property
    def ready(self) -> bool:
        cond = self.condition("Ready")
        return cond is not None and cond.status == "True"


class ObjectReference(Model):
    kind: str
    name: str
    namespace: str | None = None
    uid: str | None = None


class EventSource(Model):
    component: str
    host: str | None = None


class Event(Model):
    """Something that happened to an object: `Scheduled`, `BackOff`, `NodeNotReady`...

    Repeats of the same (object, reason, message) are folded into one event with a
    count and first/last timestamps, as Kubernetes does.
    """

    api_version: Literal["v1"] = "v1"
    kind: Literal["Event"] = "Event"
    metadata: ObjectMeta
    involved_object: ObjectReference
    reason: str
    message: str = ""
    type: Literal["Normal", "Warning"] = "Normal"
    count: int = 1
    first_timestamp: datetime | None = None
    last_timestamp: datetime | None = None
    source: EventSource | None = None


class StatusCause(Model):
    reason: str | None = None
    message: str
    field: str | None = None


class StatusDetails(Model):
    name: str | None = None
    kind: str | None = None
    causes: list[StatusCause] = Field(default_factory=list)


class ListMeta(Model):
    resource_version: str | None = None


class Status(Model):
    """The Kubernetes `Status` object: every error the API returns has this shape."""

    api_version: Literal["v1"] = "v1"
    kind: Literal["Status"] = "Status"
    metadata: dict[str, Any] = Field(default_factory=dict)
    status: Literal["Success", "Failure"] = "Failure"
    message: str = ""
    reason: str = ""
    details: StatusDetails | None = None
    code: int = 500
