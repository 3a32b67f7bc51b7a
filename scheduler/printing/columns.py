"""The columns of each resource's table, as kube-apiserver's printers define them
(pkg/printers/internalversion/printers.go), for the API's Tables and `corral get`.

A `Printer` is a resource's columns and a row function giving a cell for every
column. Priority 0 columns are the default view; priority 1 ones are what
`-o wide` adds. kube-apiserver always sends every column and kubectl drops the
wide ones itself; `corral get` does the same (`scheduler/cli/printers.printed`).
Cells are strings, but for counts that Kubernetes gives as integers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler.printing.cells import (
    age,
    created,
    event_last_seen,
    event_object,
    event_source,
    job_completions,
    job_duration,
    job_selector,
    job_status,
    node_address,
    node_info,
    node_roles,
    node_status,
    pod_ip,
    pod_readiness_gates,
    pod_ready,
    pod_restarts,
    pod_status,
    revision_controller,
    selector_text,
    template_containers,
    template_images,
)

Object = dict[str, Any]
Cell = str | int


@dataclass(frozen=True, slots=True)
class Column:
    """One column: kubectl prints its name upper-cased as the header."""

    name: str
    description: str
    priority: int = 0  # 1: only with `-o wide`
    type: str = "string"  # or "integer"
    format: str = ""  # "name": the column holding the object's name


def _metadata(obj: Object) -> Object:
    return obj.get("metadata") or {}


@dataclass(frozen=True, slots=True)
class Printer:
    """A resource's columns, and its row: one cell per column, the wide ones included."""

    columns: tuple[Column, ...]
    row: Callable[[Object, datetime], list[Cell]]
    # The object's metadata (a Table row's object, and the NAMESPACE kubectl adds with -A).
    metadata: Callable[[Object], Object] = _metadata


NAME = Column("Name", "The object's name, unique within its namespace.", format="name")
AGE = Column("Age", "Time since the object was created (metadata.creationTimestamp).")
_CONTAINERS = Column("Containers", "Names of each container in the template.", 1)
_IMAGES = Column("Images", "Images referenced by each container in the template.", 1)
_SELECTOR = Column("Selector", "The label selector of the pods it manages.", 1)


def _name(obj: Object) -> str:
    return str(_metadata(obj).get("name", ""))


# --- pods and nodes ------------------------------------------------------------------------


def _pod_row(pod: Object, now: datetime) -> list[Cell]:
    status = pod.get("status") or {}
    return [
        _name(pod),
        pod_ready(pod),
        pod_status(pod),
        pod_restarts(pod, now),
        created(pod, now),
        pod_ip(pod),
        (pod.get("spec") or {}).get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        pod_readiness_gates(pod),
    ]


PODS = Printer(
    (
        NAME,
        Column("Ready", "Containers ready for traffic, of all the pod's containers."),
        Column("Status", "The aggregate status of the pod's containers."),
        Column("Restarts", "How often the pod's containers restarted, and when last."),
        AGE,
        Column("IP", "The pod's IP address.", 1),
        Column("Node", "The node the pod is bound to.", 1),
        Column("Nominated Node", "The node a preempting pod is to run on.", 1),
        Column("Readiness Gates", "Readiness gates met, of the pod's gates.", 1),
    ),
    _pod_row,
)


def _node_row(node: Object, now: datetime) -> list[Cell]:
    return [
        _name(node),
        node_status(node),
        node_roles(node),
        created(node, now),
        node_info(node, "kubeletVersion", "agentVersion"),
        node_address(node, "InternalIP"),
        node_address(node, "ExternalIP"),
        node_info(node, "osImage"),
        node_info(node, "kernelVersion"),
        node_info(node, "containerRuntimeVersion", "runtime"),
    ]


NODES = Printer(
    (
        NAME,
        Column("Status", "The status of the node."),
        Column("Roles", "The roles of the node."),
        AGE,
        Column("Version", "The version of the node's agent."),
        Column("Internal-IP", "The node's internal IP address.", 1),
        Column("External-IP", "The node's external IP address.", 1),
        Column("OS-Image", "The node's operating system.", 1),
        Column("Kernel-Version", "The node's kernel version.", 1),
        Column("Container-Runtime", "The node's container runtime.", 1),
    ),
    _node_row,
)

# --- namespaces and events -----------------------------------------------------------------

NAMESPACES = Printer(
    (NAME, Column("Status", "The status of the namespace."), AGE),
    lambda ns, now: [
        _name(ns),
        (ns.get("status") or {}).get("phase") or "Active",
        created(ns, now),
    ],
)


def _event_row(event: Object, now: datetime) -> list[Cell]:
    return [
        event_last_seen(event, now),
        event.get("type", ""),
        event.get("reason", ""),
        event_object(event),
        (event.get("involvedObject") or {}).get("fieldPath", ""),
        event_source(event),
        event.get("message", ""),
        age(event.get("firstTimestamp"), now),
        int(event.get("count") or 1),
        _name(event),
    ]


EVENTS = Printer(
    (
        Column("Last Seen", "Time since the event last occurred."),
        Column("Type", "Normal or Warning."),
        Column("Reason", "Why the event happened, in one word."),
        Column("Object", "The object the event is about."),
        Column("Subobject", "The part of the object it is about.", 1),
        Column("Source", "The component that reported it.", 1),
        Column("Message", "What happened."),
        Column("First Seen", "Time since the event first occurred.", 1),
        Column("Count", "How often it occurred.", 1, "integer"),
        Column("Name", "The event's name.", 1, format="name"),
    ),
    _event_row,
)

# --- workloads -----------------------------------------------------------------------------


def _deployment_row(d: Object, now: datetime) -> list[Cell]:
    spec, status = d.get("spec") or {}, d.get("status") or {}
    return [
        _name(d),
        f"{status.get('readyReplicas') or 0}/{spec.get('replicas', 1)}",
        int(status.get("updatedReplicas") or 0),
        int(status.get("availableReplicas") or 0),
        created(d, now),
        template_containers(d),
        template_images(d),
        selector_text(spec.get("selector")),
    ]


DEPLOYMENTS = Printer(
    (
        NAME,
        Column("Ready", "Pods ready, of the replicas wanted."),
        Column("Up-to-date", "Pods of the latest template.", type="integer"),
        Column("Available", "Pods available to serve.", type="integer"),
        AGE,
        _CONTAINERS,
        _IMAGES,
        _SELECTOR,
    ),
    _deployment_row,
)

JOBS = Printer(
    (
        NAME,
        Column("Status", "Complete, Failed, Suspended or Running."),
        Column("Completions", "Pods that succeeded, of the completions wanted."),
        Column("Duration", "Time the job took to complete (or has run so far)."),
        AGE,
        _CONTAINERS,
        _IMAGES,
        _SELECTOR,
    ),
    lambda job, now: [
        _name(job),
        job_status(job),
        job_completions(job),
        job_duration(job, now),
        created(job, now),
        template_containers(job),
        template_images(job),
        job_selector(job),
    ],
)


def _revision(rev: Object) -> Cell:
    number = rev.get("revision", "")
    return number if isinstance(number, int) else str(number)


REVISIONS = Printer(
    (
        NAME,
        Column("Controller", "The object whose revision it is."),
        Column("Revision", "The revision's number.", type="integer"),
        AGE,
    ),
    lambda rev, now: [_name(rev), revision_controller(rev), _revision(rev), created(rev, now)],
)

# --- the rest ------------------------------------------------------------------------------

# Tokens have no metadata: an id (their name in the URL) and a creation time.
TOKENS = Printer(
    (
        NAME,
        Column("Role", "admin or viewer."),
        Column("Description", "What the token is for."),
        AGE,
    ),
    lambda t, now: [
        str(t.get("id", "")),
        str(t.get("role", "")),
        str(t.get("description", "")),
        age(t.get("created"), now),
    ],
    lambda t: {"name": t.get("id", ""), "creationTimestamp": t.get("created")},
)

# Kubernetes' default for a resource without a printer of its own.
DEFAULT = Printer((NAME, AGE), lambda obj, now: [_name(obj), created(obj, now)])

# (groupVersion, resource) -> its printer.
PRINTERS = {
    ("v1", "pods"): PODS,
    ("v1", "nodes"): NODES,
    ("v1", "namespaces"): NAMESPACES,
    ("v1", "events"): EVENTS,
    ("v1", "tokens"): TOKENS,
    ("apps/v1", "deployments"): DEPLOYMENTS,
    ("apps/v1", "controllerrevisions"): REVISIONS,
    ("batch/v1", "jobs"): JOBS,
}


def printer_for(group_version: str, resource: str) -> Printer | None:
    """The printer of a resource: its own, or the default (Name, Age). None for a
    subresource (`pods/log`, `deployments/scale`), which has no table."""
    if "/" in resource:
        return None
    return PRINTERS.get((group_version, resource), DEFAULT)
