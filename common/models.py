"""The objects corral stores and exchanges: a Kubernetes-shaped subset (Pod, Node, Status).

Field names follow Kubernetes (camelCase on the wire, snake_case in Python).
Every model forbids unknown fields, so a manifest field corral does not support
is refused by its path instead of being silently dropped.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import InitErrorDetails, PydanticCustomError

from common.limits import INT32_MAX, INT64_MAX, check_annotations, check_env_sizes
from common.quantity import QuantityError, cpu_millis, memory_bytes, parse_quantity

API_VERSION = "v1"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")

# The type of a validation error for a value outside a set, which the API answers as
# Kubernetes does, with reason FieldValueNotSupported (common/manifest.py).
NOT_SUPPORTED = "value_not_supported"

MAX_CONTAINERS = 32
MAX_ENV = 512
MAX_LABELS = 64


def now() -> datetime:
    """The current time, UTC, truncated to whole seconds as Kubernetes timestamps are."""
    return datetime.now(UTC).replace(microsecond=0)


def _in_utc(value: datetime) -> datetime:
    offset = value.utcoffset()
    if offset is None:
        return value.replace(tzinfo=UTC)
    if not offset:
        return value  # pydantic's own UTC (`Z`), written back as `Z`
    try:
        return value.astimezone(UTC)
    except OverflowError:  # an ArithmeticError, which pydantic would not catch
        raise ValueError("out of range once in UTC (0001-01-01 to 9999-12-31)") from None


# A time in an object, as Kubernetes keeps one: in UTC. RFC 3339 gives every time an
# offset; one without (which a buggy agent or client could send) is taken as UTC rather
# than kept naive: naive and aware times do not compare, and a Job's backoff and the
# status page failed on one. One with another offset is the same instant in UTC, as
# kube-apiserver writes it back; one that has none (year 1 at +14:00, year 9999 at
# -14:00) is refused, not kept for a later conversion to fail on. About 0.7 us a time
# present, a Python call (pydantic-core has no such option).
Timestamp = Annotated[datetime, AfterValidator(_in_utc)]


# The checks of names and label parts that repeat from pod to pod (`app`, `default`) are
# cached: a hit is a C-level lookup instead of a Python frame and a regex (about a sixth of
# the time). A failing value raises and is not cached; the caches are bounded, so unique
# values (object names, checked by check_dns_subdomain, are not cached) only pass through.
@functools.lru_cache(maxsize=4096)
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


def mask_trailing_dash(prefix: str) -> str:
    """A `generateName` as checked: a trailing '-' is allowed, since 5 characters will
    follow it. kube-apiserver's maskTrailingDash, whose quirk (the character before the
    dash goes too) is kept, so that the same prefixes pass."""
    if len(prefix) > 1 and prefix.endswith("-"):
        return prefix[:-2] + "a"
    return prefix


def check_generate_name(value: str) -> str | None:
    """`metadata.generateName`: a prefix of a name (the name made of it is checked as any
    name is); empty is none, as Kubernetes has it."""
    if not value:
        return None
    try:
        check_dns_subdomain(mask_trailing_dash(value))
    except ValueError:
        raise ValueError(
            f"{value!r} is not a valid name prefix: at most 253 lowercase letters, digits, "
            "'-' and '.', starting with a letter or digit"
        ) from None
    return value


@functools.lru_cache(maxsize=4096)
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


@functools.lru_cache(maxsize=4096)
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
    if type(value) is str:  # the common case, checked once per distinct string
        return _check_quantity_text(value)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"quantities must be strings or numbers, not {type(value).__name__}")
    try:
        parse_quantity(value)
    except QuantityError as exc:
        raise ValueError(str(exc)) from None
    return str(value)


@functools.lru_cache(maxsize=4096)
def _check_quantity_text(value: str) -> str:
    try:
        parse_quantity(value)
    except QuantityError as exc:
        raise ValueError(str(exc)) from None
    return value


def _int_or_string(value: Any) -> int | str:
    # One validator instead of `int | str`: a union would report one error per
    # member, with the member's type name inserted into the field path.
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"must be an integer or a string, not {type(value).__name__}")
    return value


Quantity = Annotated[Any, AfterValidator(_check_quantity)]
IntOrString = Annotated[int | str, PlainValidator(_int_or_string, json_schema_input_type=int | str)]
Labels = Annotated[dict[str, str], AfterValidator(_check_labels)]
# Keys like label keys, at most 256 KiB in all (common/limits.py).
Annotations = Annotated[dict[str, str], AfterValidator(check_annotations)]


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

    def to_json(self) -> bytes:
        """`to_dict()` as JSON, serialized straight to bytes."""
        return self.__pydantic_serializer__.to_json(self, by_alias=True, exclude_none=True)


class DeferredModel(Model):
    """Base of the models the node agent never uses (nodes, events, workloads, ...): their
    validators are built on first use instead of at import, which saves the agent about
    0.5 MiB of memory; the scheduler pays it once, on first use (13 to 16 ms measured for
    the first Deployment or Job, with the models inside them)."""

    model_config = ConfigDict(defer_build=True)


class OwnerReference(Model):
    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    # A Foreground deletion waits only for the dependents that say so (gc.py), as in Kubernetes.
    block_owner_deletion: bool | None = None


# Kubernetes' finalizer of an owner deleted with propagationPolicy Foreground: it goes
# once its dependents have (scheduler/controllers/gc.py).
FOREGROUND_DELETION = "foregroundDeletion"
ORPHAN = "orphan"  # the owner's dependents are kept, freed of it, before it goes
# Kubernetes' own finalizers, the only names it takes without a domain.
STANDARD_FINALIZERS = frozenset({"kubernetes", ORPHAN, FOREGROUND_DELETION})


def check_finalizer_name(name: str) -> str:
    """A finalizer: a qualified name with a domain (`example.com/hold`), or one of
    Kubernetes' own, as Kubernetes wants."""
    check_label_key(name)
    if "/" not in name and name not in STANDARD_FINALIZERS:
        raise ValueError(
            f"finalizer {name!r}: must be fully qualified, as example.com/{name} "
            f"(or one of Kubernetes' own: {', '.join(sorted(STANDARD_FINALIZERS))})"
        )
    return name


FinalizerName = Annotated[str, AfterValidator(check_finalizer_name)]


class ObjectMeta(Model):
    name: Annotated[str, AfterValidator(check_dns_subdomain)]
    # What a create named the object after: kube-apiserver's generateName, kept as given
    # (scheduler/api/generic.py `name_to_generate`).
    generate_name: Annotated[str, AfterValidator(check_generate_name)] | None = None
    namespace: Annotated[str, AfterValidator(check_dns_label)] | None = None
    uid: str | None = None
    labels: Labels = Field(default_factory=dict)
    annotations: Annotations = Field(default_factory=dict)
    resource_version: str | None = None
    creation_timestamp: Timestamp | None = None
    deletion_timestamp: Timestamp | None = None
    generation: int | None = Field(default=None, le=INT64_MAX)
    owner_references: list[OwnerReference] | None = None
    # Honoured on pods only (scheduler/podfinal.py); the other kinds refuse them
    # (`UnfinalizedMeta`) rather than keep a promise their deletion would not.
    finalizers: list[FinalizerName] | None = None


def _refuse_finalizers(meta: ObjectMeta) -> ObjectMeta:
    if meta.finalizers:
        raise ValueError("finalizers are honoured on pods only; not supported on this kind")
    return meta


def _owner_finalizers(meta: ObjectMeta) -> ObjectMeta:
    finalizers = set(meta.finalizers or ())
    if not finalizers <= {FOREGROUND_DELETION, ORPHAN}:
        raise ValueError(
            f"finalizers: only {FOREGROUND_DELETION} and {ORPHAN} are supported on this "
            "kind (any finalizer on pods)"
        )
    if len(finalizers) == 2:  # as Kubernetes refuses them: they ask opposite things
        raise ValueError(f"finalizers: {ORPHAN} and {FOREGROUND_DELETION} cannot be both set")
    return meta


# The metadata of every kind but Pod and the owners: finalizers refused (see
# ObjectMeta.finalizers).
UnfinalizedMeta = Annotated[ObjectMeta, AfterValidator(_refuse_finalizers)]
# The metadata of an owner (Deployment, Job): Kubernetes' foregroundDeletion and orphan
# only, which say how its dependents go when it is deleted.
OwnerMeta = Annotated[ObjectMeta, AfterValidator(_owner_finalizers)]


def _check_env(env: list[EnvVar]) -> list[EnvVar]:
    check_env_sizes([(e.name, e.value) for e in env])  # execve's limits (common/limits.py)
    return env


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


_AMOUNTS: tuple[tuple[Literal["cpu", "memory"], Callable[[Any], int]], ...] = (
    ("cpu", cpu_millis),
    ("memory", memory_bytes),
)


class ResourceRequirements(Model):
    requests: dict[Literal["cpu", "memory"], Quantity] = Field(default_factory=dict)
    limits: dict[Literal["cpu", "memory"], Quantity] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ResourceRequirements:
        # As in Kubernetes: a request above its limit could never be honoured.
        if not self.limits or not self.requests:  # most containers: nothing to compare
            return self
        for resource, amount in _AMOUNTS:
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
    initial_delay_seconds: int = Field(default=0, ge=0, le=INT32_MAX)
    period_seconds: int = Field(default=10, ge=1, le=INT32_MAX)
    timeout_seconds: int = Field(default=1, ge=1, le=INT32_MAX)
    success_threshold: int = Field(default=1, ge=1, le=INT32_MAX)
    failure_threshold: int = Field(default=3, ge=1, le=INT32_MAX)

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
        if all(part in ("", ".") for part in value.split("/")):
            # As Docker refuses destination "/": a volume cannot be the container's root.
            raise ValueError(f"mountPath {value!r} is the root '/', which cannot be a volume")
        return value


class Container(Model):
    name: Annotated[str, AfterValidator(check_dns_label)]
    image: str = Field(min_length=1)
    command: list[str] | None = None
    args: list[str] | None = None
    env: Annotated[list[EnvVar], AfterValidator(_check_env)] = Field(
        default_factory=list, max_length=MAX_ENV
    )
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
# Kubernetes' DNS policies but `None` (which takes the resolver from `dnsConfig`, a field
# corral does not have). corral has no cluster DNS: each gives the pod the node's
# resolver, as ClusterFirst does in a Kubernetes cluster without one (docs/api.md).
DNS_POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default")
DEFAULT_DNS_POLICY = "ClusterFirst"  # what kube-apiserver sets on a pod created without one


def _check_dns_policy(value: str) -> str:
    if value in DNS_POLICIES:
        return value
    supported = f"supported values: {', '.join(map(json.dumps, DNS_POLICIES))}"
    if value == "None":
        supported = f"corral has no spec.dnsConfig to take the resolver from; {supported}"
    raise PydanticCustomError(
        NOT_SUPPORTED,
        "Unsupported value: {value}: {supported}",
        {"value": json.dumps(value), "supported": supported},
    )


class PodSpec(Model):
    containers: list[Container] = Field(min_length=1, max_length=MAX_CONTAINERS)
    restart_policy: RestartPolicy = "Always"
    node_selector: dict[str, str] = Field(default_factory=dict)
    node_name: str | None = None
    termination_grace_period_seconds: int = Field(default=30, ge=0, le=INT64_MAX)
    host_network: bool = False
    # A pod is created with DEFAULT_DNS_POLICY if it has none, as in Kubernetes (the API
    # and the controllers set it: scheduler/api/pods.py, scheduler/controllers/podcontrol.py);
    # unset in a template, and in a pod stored before corral set it, where it means the
    # same. Agents before protocol 7 get pods without it (`pod_for_agent`).
    dns_policy: Annotated[str, AfterValidator(_check_dns_policy)] | None = Field(
        default=None, json_schema_extra={"enum": list(DNS_POLICIES)}
    )
    volumes: list[Volume] = Field(default_factory=list)
    # The node runtime to run the pod with ("native", "docker"); unset: the node's default.
    runtime_class_name: Annotated[str, AfterValidator(check_dns_subdomain)] | None = None

    @field_validator("containers", "volumes")
    @classmethod
    def _unique_names(cls, items: list[Container] | list[Volume]) -> Any:
        if len(items) < 2:  # most pods: one container
            return items
        seen: set[str] = set()
        for item in items:
            if item.name in seen:
                raise ValueError(f"duplicate name {item.name!r}: names must be unique within a pod")
            seen.add(item.name)
        return items

    @model_validator(mode="after")
    def _known_volumes(self) -> PodSpec:
        volumes: set[str] | None = None  # made at the first mount: most pods mount nothing
        for container in self.containers:
            for mount in container.volume_mounts:
                if volumes is None:
                    volumes = {v.name for v in self.volumes}
                if mount.name not in volumes:
                    raise ValueError(
                        f"container {container.name!r} mounts unknown volume {mount.name!r}"
                    )
        return self

    def requests(self) -> tuple[int, int]:
        """What placement reserves: (millicores, bytes), summed over containers.

        As in Kubernetes, a container with a limit and no request requests its limit.
        Not cached on the spec: the quantities' integers are (common/quantity.py), so
        this is a few dict lookups, while a private attribute would cost every Pod
        validation and copy about a fifth more, and could go stale in a copy.
        """
        cpu = mem = 0
        for container in self.containers:
            res = container.resources
            c = res.requests.get("cpu", res.limits.get("cpu"))
            m = res.requests.get("memory", res.limits.get("memory"))
            cpu += cpu_millis(c) if c is not None else 0
            mem += memory_bytes(m) if m is not None else 0
        return cpu, mem


class ContainerStateWaiting(Model):
    reason: str | None = None
    message: str | None = None


class ContainerStateRunning(Model):
    started_at: Timestamp | None = None


# Kubernetes' exitCode and signal are int32, as restartCount: an agent's report past them
# would be stored and listed, and no Kubernetes client could read the pod list again.
Int32 = Annotated[int, Field(ge=-INT32_MAX - 1, le=INT32_MAX)]


class ContainerStateTerminated(Model):
    exit_code: Int32
    signal: Int32 | None = None
    reason: str | None = None
    message: str | None = None
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    container_id: str | None = Field(None, alias="containerID")  # the run that ended


class ContainerState(Model):
    waiting: ContainerStateWaiting | None = None
    running: ContainerStateRunning | None = None
    terminated: ContainerStateTerminated | None = None


class ContainerStatus(Model):
    name: str
    state: ContainerState = Field(default_factory=ContainerState)
    last_state: ContainerState = Field(default_factory=ContainerState)
    ready: bool = False
    restart_count: int = Field(default=0, ge=0, le=INT32_MAX)
    image: str | None = None
    # Always present, as Kubernetes' clients require it (the Python client refuses a status
    # without): what the runtime resolved the image to, of the last run; empty until the
    # container first starts, as the kubelet leaves it for a container waiting to start.
    image_id: str = Field("", alias="imageID")
    # `<runtime>://<id>` of the last run (`docker://...`, `corral://...`); unset until then.
    container_id: str | None = Field(None, alias="containerID")
    started: bool | None = None


class PodCondition(Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_transition_time: Timestamp | None = None


PodPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"]
POD_PHASES: tuple[PodPhase, ...] = get_args(PodPhase)


class PodStatus(Model):
    phase: PodPhase = "Pending"
    reason: str | None = None
    message: str | None = None
    conditions: list[PodCondition] = Field(default_factory=list)
    container_statuses: list[ContainerStatus] = Field(default_factory=list)
    host_ip: str | None = None
    start_time: Timestamp | None = None


class Pod(Model):
    api_version: Literal["v1"] = "v1"
    kind: Literal["Pod"] = "Pod"
    metadata: ObjectMeta
    spec: PodSpec
    status: PodStatus = Field(default_factory=PodStatus)

    @property
    def key(self) -> str:
        return f"{self.metadata.namespace}/{self.metadata.name}"


class NodeCondition(DeferredModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_heartbeat_time: Timestamp | None = None
    last_transition_time: Timestamp | None = None


class NodeSpec(DeferredModel):
    unschedulable: bool = False


# Kubernetes' NodeSystemInfo: the keys a node's `status.nodeInfo` always has, as
# Kubernetes' clients require them all (agents report them; corral's own keys beside).
NODE_SYSTEM_INFO = (
    "machineID",
    "systemUUID",
    "bootID",
    "kernelVersion",
    "osImage",
    "containerRuntimeVersion",
    "kubeletVersion",
    "kubeProxyVersion",
    "operatingSystem",
    "architecture",
)


class NodeStatus(DeferredModel):
    capacity: dict[str, Quantity] = Field(default_factory=dict)
    allocatable: dict[str, Quantity] = Field(default_factory=dict)
    usage: dict[str, Quantity] = Field(default_factory=dict)
    conditions: list[NodeCondition] = Field(default_factory=list)
    addresses: list[dict[str, str]] = Field(default_factory=list)
    last_heartbeat_time: Timestamp | None = None
    node_info: dict[str, str] = Field(default_factory=dict)  # NODE_SYSTEM_INFO, and corral's


class Node(DeferredModel):
    api_version: Literal["v1"] = "v1"
    kind: Literal["Node"] = "Node"
    metadata: UnfinalizedMeta
    spec: NodeSpec = Field(default_factory=NodeSpec)
    status: NodeStatus = Field(default_factory=NodeStatus)

    def condition(self, kind: str) -> NodeCondition | None:
        return next((c for c in self.status.conditions if c.type == kind), None)

    @property
    def ready(self) -> bool:
        cond = self.condition("Ready")
        return cond is not None and cond.status == "True"


class ObjectReference(DeferredModel):
    kind: str
    name: str
    namespace: str | None = None
    uid: str | None = None


class EventSource(DeferredModel):
    component: str
    host: str | None = None


class Event(DeferredModel):
    """Something that happened to an object: `Scheduled`, `BackOff`, `NodeNotReady`...

    Repeats of the same (object, reason, message) are folded into one event with a
    count and first/last timestamps, as Kubernetes does.
    """

    api_version: Literal["v1"] = "v1"
    kind: Literal["Event"] = "Event"
    metadata: UnfinalizedMeta
    involved_object: ObjectReference
    reason: str
    message: str = ""
    type: Literal["Normal", "Warning"] = "Normal"
    count: int = 1
    first_timestamp: Timestamp | None = None
    last_timestamp: Timestamp | None = None
    source: EventSource | None = None


class StatusCause(DeferredModel):
    reason: str | None = None
    message: str
    field: str | None = None


class StatusDetails(DeferredModel):
    name: str | None = None
    kind: str | None = None
    causes: list[StatusCause] = Field(default_factory=list)
    retry_after_seconds: int | None = None


class ListMeta(DeferredModel):
    resource_version: str | None = None


class Status(DeferredModel):
    """The Kubernetes `Status` object: every error the API returns has this shape."""

    api_version: Literal["v1"] = "v1"
    kind: Literal["Status"] = "Status"
    metadata: dict[str, Any] = Field(default_factory=dict)
    status: Literal["Success", "Failure"] = "Failure"
    message: str = ""
    reason: str = ""
    details: StatusDetails | None = None
    code: int = 500


# --- Workloads: Namespace, Deployment (apps/v1), Job (batch/v1), ControllerRevision --------


class LabelSelectorRequirement(DeferredModel):
    key: Annotated[str, AfterValidator(check_label_key)]
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _values(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"values: must be non-empty when operator is {self.operator}")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"values: must be empty when operator is {self.operator}")
        for value in self.values:
            check_label_value(value)
        return self


class LabelSelector(DeferredModel):
    """`matchLabels` and `matchExpressions`, ANDed; an empty selector matches everything."""

    match_labels: Labels = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: dict[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for req in self.match_expressions:
            present = req.key in labels
            if req.operator == "In" and labels.get(req.key) not in req.values:
                return False
            if req.operator == "NotIn" and present and labels[req.key] in req.values:
                return False
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
        return True

    def to_query(self) -> str:
        """The selector as a `labelSelector` string: `app=web,tier in (a,b),!legacy`."""
        parts = [f"{k}={v}" for k, v in sorted(self.match_labels.items())]
        for req in self.match_expressions:
            values = ",".join(sorted(req.values))
            parts.append(
                {
                    "In": f"{req.key} in ({values})",
                    "NotIn": f"{req.key} notin ({values})",
                    "Exists": req.key,
                    "DoesNotExist": f"!{req.key}",
                }[req.operator]
            )
        return ",".join(parts)


class TemplateMeta(DeferredModel):
    """A pod template's metadata. Generated manifests carry `creationTimestamp: null`."""

    name: str | None = None
    labels: Labels = Field(default_factory=dict)
    annotations: Annotations = Field(default_factory=dict)
    creation_timestamp: Timestamp | None = None
    finalizers: list[FinalizerName] | None = None  # copied to each pod, as in Kubernetes


class PodTemplateSpec(DeferredModel):
    metadata: TemplateMeta = Field(default_factory=TemplateMeta)
    spec: PodSpec


def _check_percent_or_count(value: int | str) -> int | str:
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must be greater than or equal to 0")
        if value > INT32_MAX:  # Kubernetes' IntOrString holds an int32
            raise ValueError(f"must be less than or equal to {INT32_MAX}")
    elif not re.fullmatch(r"(100|[1-9]?[0-9])%", value):
        raise ValueError(f"{value!r} must be an integer or a percentage from 0% to 100%")
    return value


PercentOrCount = Annotated[IntOrString, AfterValidator(_check_percent_or_count)]


def _is_zero(value: int | str) -> bool:
    return value in (0, "0%")


class RollingUpdateDeployment(DeferredModel):
    max_surge: PercentOrCount = "25%"
    max_unavailable: PercentOrCount = "25%"

    @model_validator(mode="after")
    def _not_both_zero(self) -> RollingUpdateDeployment:
        if _is_zero(self.max_surge) and _is_zero(self.max_unavailable):
            raise ValueError("maxUnavailable may not be 0 when maxSurge is 0")
        return self


class DeploymentStrategy(DeferredModel):
    type: Literal["RollingUpdate", "Recreate"] = "RollingUpdate"
    rolling_update: RollingUpdateDeployment | None = None

    @model_validator(mode="after")
    def _recreate_alone(self) -> DeploymentStrategy:
        if self.type == "Recreate" and self.rolling_update is not None:
            raise ValueError("rollingUpdate may not be specified when strategy type is Recreate")
        return self


def _error(loc: tuple[str | int, ...], message: str, value: Any = None) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError("value_error", message), loc=loc, input=value)


def _invalid(loc: tuple[str | int, ...], message: str, value: Any = None) -> ValidationError:
    """An error at `loc` below the model being validated (a model validator's own location
    would name the whole spec; this names the field, as Kubernetes does)."""
    return ValidationError.from_exception_data("invalid", [_error(loc, message, value)])


def _check_workload_template(selector: LabelSelector | None, template: PodTemplateSpec) -> None:
    if selector is not None and not selector.matches(template.metadata.labels):
        raise _invalid(
            ("template", "metadata", "labels"),
            "selector does not match template labels",
            template.metadata.labels,
        )


class DeploymentSpec(DeferredModel):
    replicas: int = Field(default=1, ge=0, le=INT32_MAX)
    selector: LabelSelector
    template: PodTemplateSpec
    strategy: DeploymentStrategy = Field(default_factory=DeploymentStrategy)
    min_ready_seconds: int = Field(default=0, ge=0, le=INT32_MAX)
    revision_history_limit: int = Field(default=10, ge=0, le=INT32_MAX)
    progress_deadline_seconds: int = Field(default=600, ge=1, le=INT32_MAX)
    paused: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> DeploymentSpec:
        if self.selector.empty:
            raise _invalid(("selector",), "empty selector is invalid for deployment")
        _check_workload_template(self.selector, self.template)
        policy = self.template.spec.restart_policy
        if policy != "Always":
            raise _invalid(
                ("template", "spec", "restartPolicy"),
                f'Unsupported value: "{policy}": supported values: "Always"',
                policy,
            )
        if self.progress_deadline_seconds <= self.min_ready_seconds:
            raise _invalid(
                ("progressDeadlineSeconds",),
                "must be greater than minReadySeconds",
                self.progress_deadline_seconds,
            )
        return self


class WorkloadCondition(DeferredModel):
    """A condition of a Deployment or a Job (`Available`, `Progressing`, `Complete`, `Failed`)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_update_time: Timestamp | None = None
    last_probe_time: Timestamp | None = None
    last_transition_time: Timestamp | None = None


class DeploymentStatus(DeferredModel):
    observed_generation: int | None = None
    replicas: int = 0
    updated_replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    unavailable_replicas: int = 0
    conditions: list[WorkloadCondition] = Field(default_factory=list)
    collision_count: int | None = None


class Deployment(DeferredModel):
    api_version: Literal["apps/v1"] = "apps/v1"
    kind: Literal["Deployment"] = "Deployment"
    metadata: OwnerMeta
    spec: DeploymentSpec
    status: DeploymentStatus = Field(default_factory=DeploymentStatus)


class JobSpec(DeferredModel):
    template: PodTemplateSpec
    completions: int | None = Field(default=None, ge=0, le=INT32_MAX)
    parallelism: int | None = Field(default=None, ge=0, le=INT32_MAX)
    backoff_limit: int = Field(default=6, ge=0, le=INT32_MAX)
    active_deadline_seconds: int | None = Field(default=None, ge=1, le=INT64_MAX)
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0, le=INT32_MAX)
    completion_mode: Literal["NonIndexed"] = "NonIndexed"
    suspend: bool = False
    # Accepted for manifests that carry them; corral finds a Job's pods by ownership.
    selector: LabelSelector | None = None
    manual_selector: bool | None = None

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        policy = self.template.spec.restart_policy
        if policy not in ("OnFailure", "Never"):
            raise _invalid(
                ("template", "spec", "restartPolicy"),
                f'Unsupported value: "{policy}": supported values: "OnFailure", "Never"',
                policy,
            )
        _check_workload_template(self.selector, self.template)
        return self


class UncountedTerminatedPods(DeferredModel):
    """Pods that finished and are not in the Job's counts yet (Kubernetes' field): the
    Job controller records them here before it removes their finalizer, and counts them
    after, so that a crash in between neither loses nor doubles one."""

    succeeded: list[str] = Field(default_factory=list)  # uids
    failed: list[str] = Field(default_factory=list)


class JobStatus(DeferredModel):
    start_time: Timestamp | None = None
    completion_time: Timestamp | None = None
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    ready: int | None = None
    conditions: list[WorkloadCondition] = Field(default_factory=list)
    uncounted_terminated_pods: UncountedTerminatedPods | None = None


class Job(DeferredModel):
    api_version: Literal["batch/v1"] = "batch/v1"
    kind: Literal["Job"] = "Job"
    metadata: OwnerMeta
    spec: JobSpec
    status: JobStatus = Field(default_factory=JobStatus)


# What kube-apiserver puts in every new namespace's `spec.finalizers`: the namespace
# controller's own, which it removes once the namespace is empty. corral's controller
# deletes the emptied namespace without reading it (scheduler/controllers/namespace.py).
NAMESPACE_FINALIZER = "kubernetes"


class NamespaceSpec(DeferredModel):
    finalizers: list[str] = Field(default_factory=list)

    def with_namespace_finalizer(self) -> None:
        """Add NAMESPACE_FINALIZER, last, as kube-apiserver does on create."""
        if NAMESPACE_FINALIZER not in self.finalizers:
            self.finalizers.append(NAMESPACE_FINALIZER)


class NamespaceStatus(DeferredModel):
    phase: Literal["Active", "Terminating"] = "Active"


class Namespace(DeferredModel):
    api_version: Literal["v1"] = "v1"
    kind: Literal["Namespace"] = "Namespace"
    metadata: UnfinalizedMeta
    spec: NamespaceSpec = Field(default_factory=NamespaceSpec)
    status: NamespaceStatus = Field(default_factory=NamespaceStatus)

    @model_validator(mode="after")
    def _label_name(self) -> Namespace:
        errors: list[InitErrorDetails] = []
        try:
            check_dns_label(self.metadata.name)
        except ValueError as exc:
            errors.append(_error(("metadata", "name"), str(exc), self.metadata.name))
        prefix = self.metadata.generate_name
        masked = mask_trailing_dash(prefix) if prefix is not None else "a"
        if len(masked) > 63 or not _DNS_LABEL.match(masked):
            message = (
                f"{prefix!r} is not a valid namespace name prefix: at most 63 lowercase "
                "letters, digits and '-', starting with a letter or digit"
            )
            errors.append(_error(("metadata", "generateName"), message, prefix))
        if errors:  # both, as kube-apiserver names both
            raise ValidationError.from_exception_data("invalid", errors)
        if self.metadata.namespace:
            raise _invalid(("metadata", "namespace"), "not allowed: namespaces are not namespaced")
        return self


class ControllerRevision(DeferredModel):
    """One pod template a Deployment has rolled out: `data.spec.template`, numbered."""

    api_version: Literal["apps/v1"] = "apps/v1"
    kind: Literal["ControllerRevision"] = "ControllerRevision"
    metadata: UnfinalizedMeta
    data: dict[str, Any] = Field(default_factory=dict)
    revision: int = Field(ge=0)


class ScaleSpec(DeferredModel):
    replicas: int = Field(default=0, ge=0, le=INT32_MAX)


class ScaleStatus(DeferredModel):
    replicas: int = 0
    selector: str = ""


class Scale(DeferredModel):
    """The `/scale` subresource of a Deployment."""

    api_version: Literal["autoscaling/v1"] = "autoscaling/v1"
    kind: Literal["Scale"] = "Scale"
    metadata: UnfinalizedMeta
    spec: ScaleSpec = Field(default_factory=ScaleSpec)
    status: ScaleStatus = Field(default_factory=ScaleStatus)


class Preconditions(DeferredModel):
    uid: str | None = None
    resource_version: str | None = None


class DeleteOptions(DeferredModel):
    """metav1.DeleteOptions, as an Eviction carries it (scheduler/api/deleting.py reads
    the same fields from a DELETE's body or query)."""

    api_version: str | None = None
    kind: str | None = None
    grace_period_seconds: int | None = Field(default=None, ge=0, le=INT64_MAX)
    preconditions: Preconditions | None = None
    orphan_dependents: bool | None = None
    propagation_policy: Literal["Background", "Foreground", "Orphan"] | None = None
    dry_run: list[Literal["All"]] | None = None
    ignore_store_read_error_with_cluster_breaking_potential: bool | None = None


class Eviction(DeferredModel):
    """policy/v1 Eviction, the body of a pod's eviction subresource (policy/v1beta1's is
    the same object: scheduler/api/evictions.py)."""

    api_version: Literal["policy/v1"] = "policy/v1"
    kind: Literal["Eviction"] = "Eviction"
    metadata: ObjectMeta
    delete_options: DeleteOptions | None = None
