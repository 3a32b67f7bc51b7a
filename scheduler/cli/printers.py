"""Tables and machine-readable output for `corral get`, in kubectl's shapes.

Everything here is a pure function of API objects (plain dicts, as decoded from
JSON) and the current time, so it is unit-tested without a server.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from common.quantity import QuantityError, cpu_millis, humanize_bytes, memory_bytes

Object = dict[str, Any]

FINISHED_PHASES = ("Succeeded", "Failed")


# --- small helpers -------------------------------------------------------------------------


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 timestamp from the API as an aware datetime; None when absent or garbled."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def human_duration(seconds: float) -> str:
    """A duration the way kubectl prints ages: `5s`, `3m20s`, `45m`, `3h5m`, `20h`, `2d5h`, `9d`."""
    secs = int(seconds)
    if secs < -1:
        return "<invalid>"
    if secs < 0:
        return "0s"
    if secs < 120:
        return f"{secs}s"
    minutes = secs // 60
    if minutes < 10:
        rest = secs % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        rest = hours % 24
        return f"{days}d{rest}h" if rest else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    years = days // 365
    if years < 8:
        rest = days % 365
        return f"{years}y{rest}d" if rest else f"{years}y"
    return f"{years}y"


def age(timestamp: object, now: datetime) -> str:
    """The AGE column: time since `timestamp`, or `<unknown>`."""
    when = parse_time(timestamp)
    if when is None:
        return "<unknown>"
    return human_duration((now - when).total_seconds())


def format_cpu(millis: int) -> str:
    """Millicores as a quantity: 2000 -> `2`, 250 -> `250m`."""
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def cpu_of(value: object) -> int | None:
    """A CPU quantity in millicores; None when absent or unparseable."""
    if value is None or isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        return cpu_millis(value)
    except QuantityError:
        return None


def memory_of(value: object) -> int | None:
    """A memory quantity in bytes; None when absent or unparseable."""
    if value is None or isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        return memory_bytes(value)
    except QuantityError:
        return None


def percent(part: int, whole: int | None) -> str:
    """` (12%)`, or nothing when there is no whole to compare with."""
    if not whole:
        return ""
    return f" ({part * 100 // whole}%)"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Left-aligned columns separated by three spaces, as kubectl prints them."""
    lines = [list(headers), *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    out = []
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=True)]
        out.append("   ".join(cells).rstrip())
    return "\n".join(out)


def dump(obj: Any, fmt: str) -> str:
    """`-o json` / `-o yaml`."""
    if fmt == "json":
        return json.dumps(obj, indent=2)
    import yaml  # only when asked for: it is not free to import

    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False).rstrip("\n")


# --- pods ----------------------------------------------------------------------------------


def _meta(obj: Object) -> Object:
    return obj.get("metadata") or {}


def _status(obj: Object) -> Object:
    return obj.get("status") or {}


def container_statuses(pod: Object) -> list[Object]:
    return list(_status(pod).get("containerStatuses") or [])


def pod_ready(pod: Object) -> str:
    """The READY column: `ready/total` containers."""
    total = len((pod.get("spec") or {}).get("containers") or [])
    ready = sum(1 for cs in container_statuses(pod) if cs.get("ready"))
    return f"{ready}/{total}"


def pod_restarts(pod: Object, now: datetime) -> str:
    """The RESTARTS column: the sum over containers, with the last restart's age (`3 (2m ago)`)."""
    count = 0
    last: datetime | None = None
    for cs in container_statuses(pod):
        count += int(cs.get("restartCount") or 0)
        terminated = (cs.get("lastState") or {}).get("terminated") or {}
        finished = parse_time(terminated.get("finishedAt"))
        if finished is not None and (last is None or finished > last):
            last = finished
    if count and last is not None:
        return f"{count} ({human_duration((now - last).total_seconds())} ago)"
    return str(count)


def pod_status(pod: Object) -> str:
    """The STATUS column, following kubectl's rules.

    `Terminating` while a deletion is pending; otherwise the reason a container is
    waiting or terminated (`CrashLoopBackOff`, `OOMKilled`, `Completed`, ...); otherwise
    the pod's own reason (`NodeLost`, `Evicted`); otherwise its phase.
    """
    if _meta(pod).get("deletionTimestamp"):
        return "Terminating"
    status = _status(pod)
    reason = str(status.get("reason") or status.get("phase") or "Unknown")
    running_and_ready = False
    # The first container with something to say wins, as in kubectl (which walks backwards).
    for cs in reversed(container_statuses(pod)):
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        terminated = state.get("terminated")
        if waiting.get("reason"):
            reason = waiting["reason"]
        elif terminated is not None:
            if terminated.get("reason"):
                reason = terminated["reason"]
            elif terminated.get("signal"):
                reason = f"Signal:{terminated['signal']}"
            else:
                reason = f"ExitCode:{terminated.get('exitCode', '?')}"
        elif state.get("running") is not None and cs.get("ready"):
            running_and_ready = True
    if reason == "Completed" and running_and_ready:
        # Some containers finished and others still serve: the pod as a whole is running.
        reason = "Running" if _pod_condition(pod, "Ready") == "True" else "NotReady"
    return reason


def _pod_condition(pod: Object, kind: str) -> str | None:
    for cond in _status(pod).get("conditions") or []:
        if cond.get("type") == kind:
            return str(cond.get("status"))
    return None


def pod_nominated(pod: Object) -> str:
    """Why a pod waits for a node (`Unschedulable: 0/3 nodes ...`); empty when it does not."""
    if (pod.get("spec") or {}).get("nodeName"):
        return ""
    for cond in _status(pod).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") != "True":
            return _reason_message(cond.get("reason"), cond.get("message"))
    status = _status(pod)
    if status.get("phase", "Pending") == "Pending":
        return _reason_message(status.get("reason"), status.get("message"))
    return ""


def _reason_message(reason: object, message: object) -> str:
    parts = [str(p) for p in (reason, message) if p]
    return ": ".join(parts)


def pods_table(
    pods: Sequence[Object], now: datetime, *, wide: bool = False, namespaces: bool = False
) -> str:
    """`corral get pods`: NAME READY STATUS RESTARTS AGE, `-o wide` adds NODE (and NOMINATED)."""
    headers = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    nominated = [pod_nominated(p) for p in pods] if wide else []
    show_nominated = any(nominated)
    if namespaces:
        headers.insert(0, "NAMESPACE")
    if wide:
        headers.append("NODE")
        if show_nominated:
            headers.append("NOMINATED")
    rows = []
    for i, pod in enumerate(pods):
        meta = _meta(pod)
        row = [
            meta.get("name", ""),
            pod_ready(pod),
            pod_status(pod),
            pod_restarts(pod, now),
            age(meta.get("creationTimestamp"), now),
        ]
        if namespaces:
            row.insert(0, meta.get("namespace", ""))
        if wide:
            row.append((pod.get("spec") or {}).get("nodeName") or "<none>")
            if show_nominated:
                row.append(nominated[i] or "<none>")
        rows.append(row)
    return table(headers, rows)


# --- nodes ---------------------------------------------------------------------------------


def node_condition(node: Object, kind: str) -> Object | None:
    for cond in _status(node).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def node_status(node: Object) -> str:
    """The STATUS column: `Ready`, `NotReady` or `Unknown`, plus `,SchedulingDisabled`."""
    ready = node_condition(node, "Ready")
    if ready is None:
        text = "Unknown"
    else:
        text = "Ready" if ready.get("status") == "True" else "NotReady"
    if (node.get("spec") or {}).get("unschedulable"):
        text += ",SchedulingDisabled"
    return text


def node_cpu(node: Object) -> tuple[int | None, int | None]:
    """(allocatable, used) CPU in millicores."""
    status = _status(node)
    alloc = cpu_of((status.get("allocatable") or {}).get("cpu"))
    if alloc is None:
        alloc = cpu_of((status.get("capacity") or {}).get("cpu"))
    return alloc, cpu_of((status.get("usage") or {}).get("cpu"))


def node_memory(node: Object) -> tuple[int | None, int | None]:
    """(allocatable, used) memory in bytes."""
    status = _status(node)
    alloc = memory_of((status.get("allocatable") or {}).get("memory"))
    if alloc is None:
        alloc = memory_of((status.get("capacity") or {}).get("memory"))
    return alloc, memory_of((status.get("usage") or {}).get("memory"))


def _usage_cell(used: int | None, alloc: int | None, fmt: Any) -> str:
    if used is None:
        return "<unknown>"
    return f"{fmt(used)}{percent(used, alloc)}"


def nodes_table(nodes: Sequence[Object], now: datetime, *, wide: bool = False) -> str:
    """`corral get nodes`: NAME STATUS AGE; `-o wide` adds allocatable CPU/MEMORY and usage."""
    headers = ["NAME", "STATUS", "AGE"]
    if wide:
        headers += ["CPU", "MEMORY", "CPU USED", "MEMORY USED"]
    rows = []
    for node in nodes:
        meta = _meta(node)
        row = [meta.get("name", ""), node_status(node), age(meta.get("creationTimestamp"), now)]
        if wide:
            cpu, cpu_used = node_cpu(node)
            mem, mem_used = node_memory(node)
            row += [
                format_cpu(cpu) if cpu is not None else "<unknown>",
                humanize_bytes(mem) if mem is not None else "<unknown>",
                _usage_cell(cpu_used, cpu, format_cpu),
                _usage_cell(mem_used, mem, humanize_bytes),
            ]
        rows.append(row)
    return table(headers, rows)


def names(objects: Iterable[Object], kind: str) -> str:
    """`-o name`: one `kind/name` a line."""
    return "\n".join(f"{kind}/{_meta(o).get('name', '')}" for o in objects)


# --- events --------------------------------------------------------------------------------


def event_age(event: Object, now: datetime) -> str:
    """`3m (x5 over 10m)` when repeated, as kubectl describe prints it."""
    last = age(event.get("lastTimestamp"), now)
    count = event.get("count") or 1
    if count > 1:
        return f"{last} (x{count} over {age(event.get('firstTimestamp'), now)})"
    return last


def events_table(events: Sequence[Object], now: datetime, *, namespaces: bool = False) -> str:
    """`corral get events`: LAST SEEN, TYPE, REASON, OBJECT, MESSAGE."""
    headers = ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    if namespaces:
        headers.insert(0, "NAMESPACE")
    rows = []
    for event in events:
        ref = event.get("involvedObject") or {}
        row = [
            age(event.get("lastTimestamp"), now),
            event.get("type", ""),
            event.get("reason", ""),
            f"{str(ref.get('kind', '')).lower()}/{ref.get('name', '')}",
            event.get("message", ""),
        ]
        if namespaces:
            row.insert(0, _meta(event).get("namespace", ""))
        rows.append(row)
    return table(headers, rows)


def events_section(events: Sequence[Object], now: datetime) -> str:
    """The `Events:` block at the end of `corral describe`."""
    if not events:
        return "Events:  <none>"
    rows = [
        (
            e.get("type", ""),
            e.get("reason", ""),
            event_age(e, now),
            (e.get("source") or {}).get("component", ""),
            e.get("message", ""),
        )
        for e in events
    ]
    body = table(["Type", "Reason", "Age", "From", "Message"], rows)
    return "Events:\n" + "\n".join("  " + line for line in body.splitlines())
